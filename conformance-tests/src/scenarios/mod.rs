//! The scenarios, each written once and generic over the runtime.
//!
//! A scenario with a server side and a client side takes two runtimes (`srv: S`, `cli: C`) so
//! the same code runs on one runtime (`rt.clone(), rt`) and on tokio ↔ smol pairs.

pub mod accept;
pub mod accept_owning;
pub mod callbacks;
pub mod conf;
pub mod deadlines;
pub mod echo;
pub mod errors;
pub mod framing;
pub mod handoff;
pub mod happy_eyeballs;
pub mod lifecycle;
pub mod recv;
pub mod relay;
pub mod reliable;
pub mod semantics;
pub mod tls;

/// What every scenario module uses.
mod prelude {
    pub use std::net::SocketAddr;
    pub use std::time::{Duration, Instant};

    pub use pipe_io::{
        Conf, EndReason, Family, Filter, Framing, OpenError, Outcome, Pipe, PipeBuilder, PipeId,
        Proto, RecvError, Runtime, SendError, SubId,
    };

    pub use crate::{
        assert_at_least, client, echo_builder, echo_server, lo, lo0, raw_recv, raw_tcp, raw_udp,
        recv_bytes, recv_msg, refusing_port, round_trip, set_rst_on_close, sleep, text, timed,
        timeout, within, BuilderExt, Log, WAIT,
    };
}
