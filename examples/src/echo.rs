//! `echo-server`: echo every message back to its sender.
//!
//! TCP connections get the library's server deadlines (idle, first message, write stall), so
//! peers that stall, or send without reading, are closed. Errors are logged at most once a
//! second.

use std::net::SocketAddr;
use std::sync::Arc;

use pipe_io::{PipeBuilder, Proto, Runtime, SendError};

use crate::{Deadlines, Program, RateLimited, Res};

/// Echo until killed, after printing `listening on <addr>`.
#[derive(Debug)]
pub struct EchoServer {
    /// TCP or UDP.
    pub proto: Proto,
    /// Where to listen.
    pub bind: SocketAddr,
    /// Deadlines for TCP connections.
    pub deadlines: Deadlines,
}

impl Program for EchoServer {
    type Output = ();

    async fn run<R: Runtime>(self, rt: R) -> Res {
        let conf = match self.proto {
            Proto::Tcp => self.deadlines.conf(),
            // The UDP server is one socket for every peer: it never idles out.
            Proto::Udp => pipe_io::Conf::default(),
        };
        let log = Arc::new(RateLimited::default());
        let server = PipeBuilder::new(rt, self.proto)
            .bind(self.bind)
            .conf(conf)
            .on_message(move |msg, pipe| {
                let log = log.clone();
                async move {
                    match pipe.send_to(&msg.data, msg.from).await {
                        // The client left: nothing to report.
                        Ok(()) | Err(SendError::Closed) => {}
                        Err(e) => log.eprint(format_args!("echo to {}: {e}", msg.from)),
                    }
                }
            })
            .open()
            .await?;
        crate::announce(server.local_addr())?;
        server.closed().await;
        Ok(())
    }
}
