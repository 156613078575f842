//! pipe-io (docs being written)
#![deny(missing_docs)]

mod buffers;
mod builder;
mod callbacks;
mod error;
pub mod external;
pub mod iface;
mod pipe;
pub mod route;
pub mod runtime;
mod shared;
pub mod socket;
mod tasks;

pub use builder::{ExistingSocket, IntoDest, PipeBuilder};
pub use callbacks::CallbackId;
pub use error::{KeptSocket, OpenError};
pub use external::{external_address, ExternalCache, ExternalConf, ExternalError};
pub use iface::{default_route, interfaces, refresh_interfaces, IfAddress, Interface};
pub use pipe::Pipe;
pub use route::Route;
pub use runtime::{BoxFuture, ListenerIo, Readiness, Runtime, TcpIo, UdpIo};

pub use pipe_core;
pub use pipe_core::{
    Conf, DedupKey, Dest, EndReason, Family, Filter, Framing, Kind, LinkError, LinkId, Message,
    Outcome, PipeId, Proto, RecvError, SendError, Stats, SubId, SubscribeError,
};
