//! `echo-server`: echo every message back to its sender.

use std::net::SocketAddr;

use pipe_io::{PipeBuilder, Proto, Runtime};

use crate::{Program, Res};

/// Echo until killed, after printing `listening on <addr>`.
#[derive(Debug)]
pub struct EchoServer {
    /// TCP or UDP.
    pub proto: Proto,
    /// Where to listen.
    pub bind: SocketAddr,
}

impl Program for EchoServer {
    type Output = ();

    async fn run<R: Runtime>(self, rt: R) -> Res {
        let server = PipeBuilder::new(rt, self.proto)
            .bind(self.bind)
            .on_message(|msg, pipe| async move {
                if let Err(e) = pipe.send_to(&msg.data, msg.from).await {
                    eprintln!("echo to {}: {e}", msg.from);
                }
            })
            .open()
            .await?;
        crate::announce(server.local_addr())?;
        server.closed().await;
        Ok(())
    }
}
