//! The two examples of the user's description of pipes, in Rust.

use std::net::SocketAddr;
use std::time::Duration;

use pipe_core::rng::Rng;
use pipe_core::stun::{Message as StunMessage, TransactionId};
use pipe_io::{PipeBuilder, Proto, Runtime};

use crate::{Program, Res};

/// "TCP echo server example": a server whose message callback writes each message back down
/// the connection it came on, and a client that checks the echo.
#[derive(Debug)]
pub struct TcpEcho;

impl Program for TcpEcho {
    type Output = String;

    async fn run<R: Runtime>(self, rt: R) -> Res<String> {
        // Start the server and use a message callback to process messages.
        let server = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .on_message(|msg, pipe| async move {
                let _ = pipe.send_to(&msg.data, msg.from).await;
            })
            .open()
            .await?;

        // Connect to the server at the address it is bound to.
        let dest = server.local_addr().ok_or("server has no address")?;
        let client = PipeBuilder::new(rt, Proto::Tcp).dest(dest).open().await?;

        // Send data to the server and check receipt.
        let msg = b"test msg.";
        client.send(msg).await?;
        let out = client.recv().await?.ok_or("no echo within recv_timeout")?;
        assert_eq!(&out.data[..], msg);

        // Close both.
        client.close().await;
        server.close().await;
        Ok(format!(
            "echoed {:?} through a TCP server on {dest}",
            String::from_utf8_lossy(&out.data)
        ))
    }
}

/// "UDP await example": send a STUN Binding request and await the answer, up to 3 tries.
#[derive(Debug)]
pub struct UdpStun {
    /// The STUN server.
    pub server: SocketAddr,
}

impl Program for UdpStun {
    type Output = Option<SocketAddr>;

    async fn run<R: Runtime>(self, rt: R) -> Res<Option<SocketAddr>> {
        let pipe = PipeBuilder::new(rt, Proto::Udp)
            .dest(self.server)
            .open()
            .await?;

        // A random transaction id (the seed is the std hasher's random keys).
        let mut rng = Rng::new(std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            1u8,
        ));
        let req = StunMessage::binding_request(TransactionId::random(&mut rng));
        let req_buf = req.encode();

        // UDP is unreliable: try up to 3 times.
        for _ in 0..3 {
            pipe.send(&req_buf).await?;
            let Some(resp) = pipe.recv_timeout(Duration::from_secs(2)).await? else {
                continue; // Timeout: try again.
            };
            let mapped = StunMessage::decode(&resp.data)
                .ok()
                .filter(|m| m.transaction_id == req.transaction_id)
                .and_then(|m| m.mapped_address());
            pipe.close().await;
            return Ok(mapped);
        }
        pipe.close().await;
        Ok(None)
    }
}
