//! A client pipe's I/O task starts when it has something to do (pipe-io's `group::lazy`),
//! not at open: these tests count the runtime's live tasks (tokio's metrics) and check that
//! everything the task is there for still happens while nobody calls `recv`: the peer's
//! bytes reach callbacks, its FIN ends the pipe, `close()` and a dropped handle close the
//! socket, and the peer sees it at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipe_io::{EndReason, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::timeout;

type Pipe = pipe_io::Pipe<pipe_tokio::Tokio>;

/// Every wait on a peer or a pipe is bounded by this.
const LIMIT: Duration = Duration::from_secs(10);

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Yield until `done`, or fail after `LIMIT` of tokio time.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A plain TCP client pipe and the raw peer it connected to.
async fn connected() -> (Pipe, tokio::net::TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = pipe_tokio::builder(Proto::Tcp)
        .dest(l.local_addr().unwrap())
        .open()
        .await
        .unwrap();
    let (peer, _) = l.accept().await.unwrap();
    (p, peer)
}

/// Open `b` with a message callback that counts the bytes it is given.
async fn counting(b: pipe_io::PipeBuilder<pipe_tokio::Tokio>) -> (Pipe, Arc<AtomicUsize>) {
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    let p = b
        .on_message(move |m, _| {
            g.fetch_add(m.data.len(), Ordering::SeqCst);
            async {}
        })
        .open()
        .await
        .unwrap();
    (p, got)
}

/// Why an ended pipe ended (an end callback added after the end runs at once).
async fn reason(p: &Pipe) -> EndReason {
    let got = Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    p.add_end_cb(move |why, _| {
        *g.lock().unwrap() = Some(why);
        async {}
    });
    until("no end callback", || got.lock().unwrap().is_some()).await;
    let why = got.lock().unwrap().take();
    why.unwrap()
}

/// The peer reads the end of the stream within the limit (no bytes first).
async fn peer_sees_eof(peer: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 16];
    let n = timeout(LIMIT, peer.read(&mut buf))
        .await
        .expect("the peer saw no end of stream: the pipe's socket is still open")
        .unwrap();
    assert_eq!(n, 0, "bytes instead of the end of stream");
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_client_closes_without_ever_starting_its_task() {
    let (p, mut peer) = connected().await;
    assert_eq!(alive(), 0, "a task was started for an idle client");
    p.close().await;
    // `close()` returned with the socket closed, and no task ever ran.
    assert!(p.is_closed());
    assert_eq!(alive(), 0);
    peer_sees_eof(&mut peer).await;
    assert_eq!(reason(&p).await, EndReason::Local);
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_idle_client_closes_its_socket() {
    let (p, mut peer) = connected().await;
    drop(p);
    assert_eq!(alive(), 0);
    peer_sees_eof(&mut peer).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_peers_bytes_start_the_task_and_reach_the_callbacks() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (p, got) = counting(pipe_tokio::builder(Proto::Tcp).dest(l.local_addr().unwrap())).await;
    let (mut peer, _) = l.accept().await.unwrap();
    assert_eq!(alive(), 0);
    peer.write_all(b"hello").await.unwrap();
    until("the callback never saw the peer's bytes", || {
        got.load(Ordering::SeqCst) == 5
    })
    .await;
    assert_eq!(alive(), 1, "the task did not start for the peer's bytes");
    // It stays and keeps reading.
    peer.write_all(b"again").await.unwrap();
    until("the second message was lost", || {
        got.load(Ordering::SeqCst) == 10
    })
    .await;
    p.close().await;
    peer_sees_eof(&mut peer).await;
    until("the task did not exit after close", || alive() == 0).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_peers_fin_ends_an_idle_client_nobody_reads() {
    let (p, peer) = connected().await;
    assert_eq!(alive(), 0);
    drop(peer);
    timeout(LIMIT, p.closed())
        .await
        .expect("the peer's FIN did not end the idle client");
    assert_eq!(reason(&p).await, EndReason::PeerClosed);
    until("the task did not exit", || alive() == 0).await;
}

#[tokio::test(flavor = "current_thread")]
async fn bytes_queued_before_the_client_was_opened_are_read() {
    // The peer's bytes are in the socket before the pipe registers its readiness.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let std = std::net::TcpStream::connect(addr).unwrap();
    let (mut peer, _) = l.accept().await.unwrap();
    peer.write_all(b"early").await.unwrap();
    peer.flush().await.unwrap();
    std.set_nonblocking(true).unwrap();
    // Wait until the bytes are readable on the client's side.
    let mut one = [0u8; 1];
    until("the peer's bytes never arrived", || {
        std.peek(&mut one).is_ok_and(|n| n == 1)
    })
    .await;
    let (p, got) = counting(pipe_tokio::builder(Proto::Tcp).socket(std)).await;
    until("the bytes waiting at open were not read", || {
        got.load(Ordering::SeqCst) == 5
    })
    .await;
    p.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_udp_client_starts_its_task_for_a_datagram() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (p, got) = counting(pipe_tokio::builder(Proto::Udp).dest(peer.local_addr().unwrap())).await;
    assert_eq!(alive(), 0);
    peer.send_to(b"dgram", p.local_addr().unwrap())
        .await
        .unwrap();
    until("the datagram never reached the callback", || {
        got.load(Ordering::SeqCst) == 5
    })
    .await;
    assert_eq!(alive(), 1);
    p.close().await;
    until("the task did not exit after close", || alive() == 0).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_recv_then_an_idle_wait_still_sees_the_peers_fin() {
    let (p, mut peer) = connected().await;
    peer.write_all(b"one").await.unwrap();
    let m = timeout(LIMIT, p.recv_timeout(LIMIT))
        .await
        .unwrap()
        .unwrap()
        .expect("no message");
    assert_eq!(&m.data[..], b"one");
    // Nobody reads now; the peer's FIN must still end the pipe.
    drop(peer);
    timeout(LIMIT, p.closed())
        .await
        .expect("the FIN after a recv was not seen");
    assert_eq!(reason(&p).await, EndReason::PeerClosed);
}
