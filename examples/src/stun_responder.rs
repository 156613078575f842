//! A minimal STUN Binding responder on a UDP pipe (these machines are offline, so the UDP
//! example asks this one by default).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pipe_core::stun::{StunServer, StunServerConfig};
use pipe_io::{OpenError, Pipe, PipeBuilder, Proto, Runtime};

/// Start a responder bound to `bind`; it answers until the returned pipe is closed or dropped.
pub async fn start<R: Runtime>(rt: R, bind: SocketAddr) -> Result<Pipe<R>, OpenError> {
    let agent = Arc::new(Mutex::new(StunServer::new(StunServerConfig::default())));
    PipeBuilder::new(rt, Proto::Udp)
        .bind(bind)
        .on_message(move |msg, pipe| {
            let agent = agent.clone();
            async move {
                let Some(local) = pipe.local_addr() else {
                    return;
                };
                let answer = agent.lock().unwrap_or_else(|p| p.into_inner()).handle(
                    Instant::now(),
                    local,
                    msg.from,
                    &msg.data,
                );
                if let Some(answer) = answer {
                    let _ = pipe.send_to(&answer, msg.from).await;
                }
            }
        })
        .open()
        .await
}
