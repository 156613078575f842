//! A client's `recv` reads its socket itself while it waits, where the runtime allows it
//! (pipe-tokio), and gives reading back to the pipe's I/O task when it returns, times out or
//! is dropped. These scenarios check what the I/O task must still see after each of those:
//! the peer's FIN or reset, data that comes while nobody is in `recv`, and a second reader.
//! On runtimes without the hand-over (pipe-smol) they hold all the same.

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::prelude::*;

/// A raw TCP server's side of one connection from a pipes client.
pub(super) async fn accepted<C: Runtime>(cli: C) -> (Pipe<C>, smol::Async<std::net::TcpStream>) {
    let listener = smol::Async::<std::net::TcpListener>::bind(lo0(Family::V4)).expect("bind");
    let addr = listener.get_ref().local_addr().unwrap();
    let c = client(cli, Proto::Tcp, addr).await;
    let (s, _) = within(WAIT, "accept", listener.accept())
        .await
        .expect("accept");
    (c, s)
}

/// Far beyond [`WAIT`]: a `recv` with this timeout leaves the engine no deadline that would
/// wake the I/O task within `WAIT`, so only a `recv` that gave reading back lets it see the
/// peer in time.
const LONG: Duration = Duration::from_secs(60);

/// Receive `n` bytes of stream messages, each `recv` with the [`LONG`] timeout.
async fn recv_long<C: Runtime>(c: &Pipe<C>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = within(WAIT, "a message", c.recv_timeout(LONG)).await;
        out.extend_from_slice(&m.expect("recv").expect("a message").data);
    }
    out
}

/// Wait until the pipe is closed by what its I/O task read, polling `is_closed` every
/// millisecond for at most [`WAIT`]. Not `closed()`: waiting there is a user's act that
/// makes the engine look at the pipe, which would hide a socket nobody reads.
async fn sees_end<C: Runtime>(c: &Pipe<C>, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !c.is_closed() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        sleep(Duration::from_millis(1)).await;
    }
}

/// The raw side reads the end of the stream (no bytes first) within [`WAIT`].
async fn raw_sees_eof(s: &mut smol::Async<std::net::TcpStream>) {
    let mut buf = [0u8; 8];
    let n = within(WAIT, "the end of stream", s.read(&mut buf))
        .await
        .expect("raw read");
    assert_eq!(n, 0, "bytes instead of the end of stream");
}

/// Read `n` bytes from the raw side.
pub(super) async fn read_n(s: &mut smol::Async<std::net::TcpStream>, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within(WAIT, "raw read", s.read_exact(&mut buf))
        .await
        .expect("raw read");
    buf
}

/// Round trips through `recv`, then the peer's FIN while nobody is in `recv`: the pipe sees it
/// (its I/O task reads again once `recv` gave reading back).
pub async fn fin_after_recv_returned_is_seen<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    for i in 0..50u8 {
        c.send(&[i]).await.unwrap();
        assert_eq!(read_n(&mut s, 1).await, [i]);
        s.write_all(&[i, i]).await.unwrap();
        assert_eq!(recv_long(&c, 2).await, [i, i]);
    }
    drop(s);
    sees_end(&c, "the client sees the FIN").await;
    assert_eq!(c.recv_timeout(WAIT).await, Err(RecvError::Closed));
}

/// The peer's FIN while a `recv` waits: the `recv` returns `Closed` at once, not at its
/// timeout, and the pipe ends.
pub async fn fin_while_recv_waits<C: Runtime>(cli: C) {
    let (c, s) = accepted(cli).await;
    let closer = async {
        // Not synchronisation: a head start so that the `recv` is likely waiting (if not,
        // it finds the end at once, which the asserts accept too).
        sleep(Duration::from_millis(100)).await;
        drop(s);
    };
    let ((res, took), ()) = futures_lite::future::zip(timed(c.recv_timeout(LONG)), closer).await;
    assert_eq!(res, Err(RecvError::Closed));
    assert!(took < WAIT, "recv returned after {took:?}, not at the FIN");
    sees_end(&c, "the client ends").await;
}

/// A reset while a `recv` waits: `Closed` at once, and the pipe ends.
pub async fn reset_while_recv_waits<C: Runtime>(cli: C) {
    let (c, s) = accepted(cli).await;
    set_rst_on_close(s.get_ref());
    let closer = async {
        // Not synchronisation: a head start so that the `recv` is likely waiting (if not,
        // it finds the end at once, which the asserts accept too).
        sleep(Duration::from_millis(100)).await;
        drop(s);
    };
    let ((res, took), ()) = futures_lite::future::zip(timed(c.recv_timeout(LONG)), closer).await;
    assert_eq!(res, Err(RecvError::Closed));
    assert!(
        took < WAIT,
        "recv returned after {took:?}, not at the reset"
    );
    sees_end(&c, "the client ends").await;
}

/// A `recv` that timed out gave reading back: data and a FIN that come afterwards, while
/// nobody receives, are read (the data is queued, the pipe ends), and a later `recv` gets
/// the data. (The timeout's own timer also wakes the I/O task; the dropped `recv` below is
/// the case where nothing else would.)
pub async fn recv_timeout_gives_reading_back<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    assert_eq!(c.recv_timeout(Duration::from_millis(100)).await, Ok(None));
    s.write_all(b"late").await.unwrap();
    drop(s);
    sees_end(&c, "the client sees data then FIN").await;
    assert_eq!(recv_bytes(&c, 4).await, b"late");
    assert_eq!(c.recv_timeout(WAIT).await, Err(RecvError::Closed));
}

/// A `recv` dropped while it waits (a lost `select!`) gives reading back: the same.
pub async fn dropped_recv_gives_reading_back<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    assert!(
        timeout(Duration::from_millis(100), c.recv_timeout(LONG))
            .await
            .is_none(),
        "nothing was sent"
    );
    s.write_all(b"after").await.unwrap();
    drop(s);
    sees_end(&c, "the client sees data then FIN").await;
    assert_eq!(recv_bytes(&c, 5).await, b"after");
}

/// Two tasks in `recv` on one pipe: one may read the socket, the other is woken by its
/// reads; each gets one of two messages. Then UDP, where a burst of datagrams read by one
/// `recv` all reach the queue in order.
pub async fn two_receivers_and_bursts<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli.clone()).await;
    let got = std::sync::atomic::AtomicUsize::new(0);
    let counted = || async {
        let m = recv_long(&c, 1).await;
        got.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        m
    };
    let feeder = async {
        // Not synchronisation: a head start so that both receivers are likely waiting.
        sleep(Duration::from_millis(50)).await;
        s.write_all(b"a").await.unwrap();
        // The second byte leaves once a reader has the first, so each reader gets one
        // message (TCP would merge two quick writes into one).
        let deadline = Instant::now() + WAIT;
        while got.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "no reader got the first message");
            sleep(Duration::from_millis(1)).await;
        }
        s.write_all(b"b").await.unwrap();
    };
    let two = futures_lite::future::zip(counted(), counted());
    // Boxed: kept inline, these futures make the scenario's future large enough to overflow
    // a test thread's stack in the executors' debug-build frames.
    let ((m1, m2), ()) = Box::pin(futures_lite::future::zip(two, feeder)).await;
    let mut got = vec![m1, m2];
    got.sort();
    assert_eq!(got, [b"a", b"b"]);
    c.close().await;

    let peer = raw_udp(Family::V4);
    let u = client(cli, Proto::Udp, peer.get_ref().local_addr().unwrap()).await;
    u.send(b"hello").await.unwrap();
    let (_, from) = raw_recv(&peer, WAIT).await.expect("hello");
    for i in 0..100u32 {
        peer.send_to(&i.to_be_bytes(), from).await.unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(
            &recv_msg(&u).await.data[..],
            i.to_be_bytes(),
            "datagram {i}"
        );
    }
    u.close().await;
}

// A client's I/O task starts when it has something to do, not at open (pipe-io's
// `group::lazy`): before any `recv`, the socket's readiness is all that watches it.

/// The peer's FIN to a client nobody has read from yet ends it.
pub async fn fin_before_any_recv_is_seen<C: Runtime>(cli: C) {
    let (c, s) = accepted(cli).await;
    drop(s);
    sees_end(&c, "the client sees a FIN before any recv").await;
}

/// Bytes to a client nobody has read from are read and queued; a `recv` later gets them,
/// and the FIN after them ends the pipe.
pub async fn data_before_any_recv_is_queued<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    s.write_all(b"early").await.unwrap();
    drop(s);
    sees_end(&c, "the client reads the bytes and the FIN").await;
    assert_eq!(recv_long(&c, 5).await, b"early");
}

/// `close()` of a client that never read nor queued anything closes the socket itself: it
/// is done at its first poll, and the peer reads the end of the stream.
pub async fn idle_close_is_done_at_once<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    let close = c.close();
    let mut close = std::pin::pin!(close);
    assert!(
        futures_lite::future::poll_once(&mut close).await.is_some(),
        "close() of an idle client waited"
    );
    assert!(c.is_closed());
    raw_sees_eof(&mut s).await;
}

/// Dropping the only handle of an idle client closes its socket.
pub async fn idle_drop_closes<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    drop(c);
    raw_sees_eof(&mut s).await;
}

/// A client's clones own it as the handle they were cloned from: dropping one leaves the
/// pipe open for the others, dropping the last closes it.
pub async fn client_clones_own_it<C: Runtime>(cli: C) {
    let (c, mut s) = accepted(cli).await;
    let (c2, c3) = (c.clone(), c.clone());
    drop(c);
    drop(c3);
    s.write_all(b"still").await.unwrap();
    assert_eq!(recv_long(&c2, 5).await, b"still");
    c2.send(b"open").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"open");
    drop(c2);
    raw_sees_eof(&mut s).await;
}

/// A `recv` waiting while its pipe is closed returns `Closed` at the end, not once the
/// socket has finished flushing: here the peer reads nothing, so the close flush would
/// last its whole `close_timeout` (60 s).
pub async fn recv_returns_at_the_end_while_the_socket_flushes<C: Runtime>(cli: C) {
    let listener = smol::Async::<std::net::TcpListener>::bind(lo0(Family::V4)).expect("bind");
    let c = PipeBuilder::new(cli, Proto::Tcp)
        .to(listener.get_ref().local_addr().unwrap())
        .conf(pipe_io::Conf {
            close_timeout: LONG,
            ..pipe_io::Conf::default()
        })
        .open()
        .await
        .expect("open");
    let (peer, _) = within(WAIT, "accept", listener.accept())
        .await
        .expect("accept");
    // Fill the peer's receive buffer and ours, then queue some more.
    let chunk = vec![1u8; 64 << 10];
    while timeout(Duration::from_millis(200), c.send(&chunk))
        .await
        .is_some()
    {}
    let closer = async {
        // Not synchronisation: a head start so that the `recv` is likely waiting (if not,
        // it finds the end at once, which the asserts accept too).
        sleep(Duration::from_millis(100)).await;
        // The close itself waits for the flush; it is not what this checks.
        let _ = timeout(Duration::from_secs(1), c.close()).await;
    };
    let ((res, took), ()) = futures_lite::future::zip(timed(c.recv_timeout(LONG)), closer).await;
    assert_eq!(res, Err(RecvError::Closed));
    assert!(took < WAIT, "recv returned after {took:?}, not at the end");
    drop(peer);
}
