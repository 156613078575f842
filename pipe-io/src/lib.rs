//! pipe-io (docs being written)
#![deny(missing_docs)]

mod builder;
mod callbacks;
mod error;
mod pipe;
pub mod runtime;
mod shared;
pub mod socket;
mod tasks;

pub use builder::{ExistingSocket, IntoDest, PipeBuilder};
pub use callbacks::CallbackId;
pub use error::{KeptSocket, OpenError};
pub use pipe::Pipe;
pub use runtime::{BoxFuture, ListenerIo, Readiness, Runtime, TcpIo, UdpIo};

pub use pipe_core;
pub use pipe_core::{
    Conf, DedupKey, Dest, EndReason, Family, Filter, Framing, Kind, LinkError, LinkId, Message, Outcome, PipeId, Proto, RecvError, SendError, Stats,
    SubId, SubscribeError,
};
