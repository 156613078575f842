//! Half-close and stream mode on tokio, against plain tokio sockets on loopback.

use std::time::Duration;

use pipe_tokio::{EndReason, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Generous: the box is shared and loaded.
const WAIT: Duration = Duration::from_secs(20);

/// Read until EOF, bounded.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("EOF within the deadline")
        .expect("read");
    out
}

/// A pipe client sends a request and shuts its write side; a plain server reads to EOF, then
/// answers 100 KiB and closes: the pipe still receives the whole answer after its FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_shutdown_then_full_answer() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let answer: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = answer.clone();
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let req = read_to_end(&mut s).await;
        s.write_all(&answer).await.unwrap();
        req
    });
    let pipe = pipe_tokio::pipe_open(Proto::Tcp, addr).await.unwrap();
    pipe.send(b"GET / please\n").await.unwrap();
    timeout(WAIT, pipe.shutdown())
        .await
        .expect("shutdown within the deadline")
        .expect("FIN sent");
    assert_eq!(
        pipe.send(b"late").await,
        Err(pipe_tokio::SendError::Closed),
        "a shut write side takes no more sends"
    );
    let req = timeout(WAIT, srv).await.unwrap().unwrap();
    assert_eq!(
        req, b"GET / please\n",
        "the server saw the request, then EOF"
    );
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match pipe.recv_timeout(WAIT).await {
            Ok(Some(m)) => got.extend_from_slice(&m.data),
            other => panic!("answer cut short at {} bytes: {other:?}", got.len()),
        }
    }
    assert_eq!(got, expected);
    // Both sides closed: the pipe ends, PeerClosed.
    timeout(WAIT, pipe.closed()).await.expect("pipe closes");
}

/// The other way round: a callback server (echo) whose client sends a request and shuts its
/// write side at once still answers in full (a peer's FIN no longer ends a pipe that has a
/// callback job left to answer with), then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_fin_does_not_end_a_pipe_with_an_answer_left() {
    let ends = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let e2 = ends.clone();
    let server = pipe_tokio::builder(Proto::Tcp)
        .on_message(|msg, pipe| async move {
            // The answer is made after the FIN arrived (the request and the FIN come
            // together): wait a little inside the callback to make that likely.
            tokio::task::yield_now().await;
            let mut out = msg.data.to_vec();
            out.extend_from_slice(b" -> answered");
            pipe.send(&out)
                .await
                .expect("a half-closed pipe still sends");
        })
        .on_end(move |reason, _| {
            let e2 = e2.clone();
            async move { e2.lock().unwrap().push(reason) }
        })
        .open()
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    for _ in 0..20 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"request").await.unwrap();
        c.shutdown().await.unwrap();
        let got = read_to_end(&mut c).await;
        assert_eq!(got, b"request -> answered");
    }
    server.close().await;
    let ends = ends.lock().unwrap().clone();
    assert!(
        ends.iter().filter(|r| **r == EndReason::PeerClosed).count() >= 20,
        "each connection ended PeerClosed once its answer was out: {ends:?}"
    );
}
