//! pipe-core (docs being written)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addr;
pub mod conf;
mod dedup;
mod engine;
pub mod error;
mod event;
mod framing;
pub mod rng;
pub mod rudp;
pub mod stun;
mod sub;

pub use addr::{Dest, Family, Host, Proto};
pub use conf::{Conf, DedupKey, Framing};
pub use engine::{Engine, Kind, State, Stats, MAX_EVENTS, MAX_LINKS, MAX_SUBSCRIPTIONS, MAX_UDP_V4, MAX_UDP_V6};
pub use error::{AcceptError, ConfError, DestError, LinkError, RecvError, SendError, SubscribeError};
pub use event::{EndReason, Event, LinkId, LinkTarget, Message, MessageId, Outcome, PipeId, SubId, Transmit};
pub use sub::Filter;
