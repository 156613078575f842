//! Half-close and stream mode on smol (futures-io traits), against plain async-io sockets on
//! loopback.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use futures_lite::{future, io, AsyncReadExt, AsyncWriteExt, StreamExt};
use pipe_smol::Proto;
use smol::Async;

/// Generous: the box is shared and loaded.
const WAIT: Duration = Duration::from_secs(20);

/// `fut` within the deadline, or a panic naming `what`.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    future::or(async { Some(fut.await) }, async {
        smol::Timer::after(WAIT).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what}: not within {WAIT:?}"))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A plain async-io echo server: bytes back until EOF, then close.
fn echo_server() -> std::net::SocketAddr {
    let l = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = l.get_ref().local_addr().unwrap();
    smol::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            smol::spawn(async move {
                let _ = io::copy(&s, &mut &s).await;
                let _ = s.get_ref().shutdown(std::net::Shutdown::Write);
            })
            .detach();
        }
    })
    .detach();
    addr
}

/// futures-io's `copy` into a pipe stream (2 MiB), `close()` (our FIN: the write side only),
/// then the echo read back to its end, byte-exact.
#[test]
fn futures_io_copy_through_a_pipe_stream() {
    smol::block_on(async {
        let addr = echo_server();
        let pipe = pipe_smol::pipe_open(Proto::Tcp, addr).await.unwrap();
        let stream = pipe.into_stream().unwrap();
        let (mut r, mut w) = io::split(stream);
        let data = pattern(2 << 20);
        let send = async {
            let n = io::copy(io::Cursor::new(&data), &mut w).await.unwrap();
            w.close().await.unwrap();
            n
        };
        let recv = async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        let (n, got) = within("copy and echo", future::zip(send, recv)).await;
        assert_eq!(n, data.len() as u64);
        assert_eq!(got.len(), data.len());
        assert!(got == data, "byte-exact");
    });
}

/// Half-close on a smol pipe: request, `shutdown()`, then the server's full answer, which it
/// sends only after our EOF.
#[test]
fn pipe_shutdown_then_full_answer() {
    smol::block_on(async {
        let l = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = l.get_ref().local_addr().unwrap();
        let answer = pattern(200 * 1024);
        let expected = answer.clone();
        let srv = smol::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            s.read_to_end(&mut req).await.unwrap();
            s.write_all(&answer).await.unwrap();
            req
        });
        let pipe = pipe_smol::pipe_open(Proto::Tcp, addr).await.unwrap();
        pipe.send(b"request").await.unwrap();
        within("shutdown", pipe.shutdown()).await.unwrap();
        assert_eq!(within("server", srv).await, b"request");
        let mut got = Vec::new();
        let mut msgs = pipe.messages();
        while let Some(m) = within("answer", msgs.next()).await {
            got.extend_from_slice(&m.data);
        }
        assert!(got == expected, "{} of {} bytes", got.len(), expected.len());
        within("pipe closes", pipe.closed()).await;
    });
}

/// A smol stream whose peer half-closes reads to EOF and still writes its whole answer.
#[test]
fn peer_fin_leaves_a_stream_writable() {
    smol::block_on(async {
        let server = pipe_smol::pipe_open(Proto::Tcp, ()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let mut c = Async::<TcpStream>::connect(addr).await.unwrap();
        c.write_all(b"question").await.unwrap();
        c.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        let conn = within("accept", server.accept()).await.unwrap();
        let mut s = conn.into_stream().unwrap();
        let mut req = Vec::new();
        within("request", s.read_to_end(&mut req)).await.unwrap();
        assert_eq!(req, b"question");
        let answer = pattern(1 << 20);
        s.write_all(&answer).await.unwrap();
        s.close().await.unwrap();
        let mut got = Vec::new();
        within("answer", c.read_to_end(&mut got)).await.unwrap();
        assert!(got == answer, "{} of {} bytes", got.len(), answer.len());
    });
}
