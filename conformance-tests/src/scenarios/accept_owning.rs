//! `accept()` like `TcpListener::accept`: a plain `loop { accept; spawn }` gets every first
//! message (bytes that arrive before the task subscribes wait in the connection's fallback
//! subscription), the accepted handle owns the connection (dropping it closes it: the peer
//! reads EOF), handles from `connections()` do not, and `accept()` on a pipe that is not a
//! listener fails at once with `NotListener`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use super::prelude::*;

/// How many clients fit the process's open-file limit: `want` if it holds both ends of
/// each (the clients and the server's accepted sockets run in this process) with 500 to
/// spare, else fewer, said loudly (never fewer than 200).
pub fn clients_that_fit(want: usize, test: &str) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .map_or(usize::MAX, |v| v.parse().unwrap_or(usize::MAX));
    if soft >= want * 2 + 500 {
        return want;
    }
    let n = soft.saturating_sub(500) / 2;
    eprintln!(
        "\n!!!!! {test}: the open-file limit is {soft}: {n} clients instead of {want} !!!!!\n"
    );
    assert!(n >= 200, "{test}: an open-file limit of {soft} is too low");
    n
}

/// `n` clients connect at once and each sends its first message as soon as it is
/// connected; the server is `loop { let c = server.accept().await?; spawn(serve(c)) }` with
/// no callbacks, where `serve` reads the first message with `recv`, answers `ok <i>` and
/// drops the handle. Every client gets its answer and then EOF (the dropped handle closed
/// the connection); the server got every first message intact, each once, and its totals
/// count every connection (accepted and ended) and every byte.
pub async fn accept_loop_gets_every_first_message<S: Runtime, C: Runtime>(
    srv: S,
    cli: C,
    fam: Family,
    want: usize,
) {
    let n = clients_that_fit(want, "accept_loop_gets_every_first_message");
    let server = PipeBuilder::new(srv.clone(), Proto::Tcp)
        .bind(lo0(fam))
        .open()
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (got_tx, got_rx) = smol::channel::unbounded::<Result<Vec<u8>, String>>();
    {
        let (server, srv2) = (server.clone(), srv.clone());
        srv.spawn(Box::pin(async move {
            // The plain accept loop: no subscribe, no callbacks.
            while let Ok(conn) = server.accept().await {
                let got_tx = got_tx.clone();
                srv2.spawn(Box::pin(async move {
                    let res = serve_one(&conn).await;
                    let _ = got_tx.send(res).await;
                    // `conn` (the only owning handle) is dropped here: the peer reads EOF.
                }));
            }
        }));
    }

    // The clients: blocking sockets on threads of their own, so that each connects and
    // writes at once, whatever the executors under test are doing.
    let (done_tx, done_rx) = smol::channel::unbounded::<Result<(), String>>();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let _ = done_tx.send_blocking(client(addr, i));
                })
                .expect("client thread")
        })
        .collect();
    drop(cli); // the clients are raw blocking sockets
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let first = within(Duration::from_secs(45), "a first message", got_rx.recv())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("server side: {e}"));
        let text = String::from_utf8(first).unwrap();
        assert!(seen.insert(text.clone()), "{text:?} twice");
    }
    let want_msgs: std::collections::HashSet<String> = (0..n)
        .map(|i| format!("hello {i} from the client"))
        .collect();
    assert_eq!(seen, want_msgs, "every first message, intact");
    for _ in 0..n {
        within(Duration::from_secs(45), "a client", done_rx.recv())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("client side: {e}"));
    }
    for t in threads {
        t.join().unwrap();
    }
    // The dropped handles closed every connection: the totals see them all ended.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = server.conn_totals().unwrap();
        if t.ended == n as u64 {
            assert_eq!(t.accepted, n as u64);
            let sent: u64 = (0..n).map(|i| format!("ok {i}").len() as u64).sum();
            let recvd: u64 = want_msgs.iter().map(|m| m.len() as u64).sum();
            assert_eq!((t.bytes_in, t.bytes_out), (recvd, sent));
            assert_eq!(t.sent, n as u64);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} connections ended: {t:?}",
            t.ended
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert!(server.connections().is_empty());
    server.close().await;
}

/// The server side of one connection: the whole first message (one read, or a few if the
/// kernel split it), then the answer.
async fn serve_one<R: Runtime>(conn: &Pipe<R>) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    while !got.ends_with(b" from the client") {
        match conn.recv_timeout(Duration::from_secs(40)).await {
            Ok(Some(m)) => got.extend_from_slice(&m.data),
            other => return Err(format!("{} after {got:?}: {other:?}", conn.id())),
        }
    }
    let i = std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .ok_or_else(|| format!("bad first message {got:?}"))?
        .to_owned();
    conn.send(format!("ok {i}").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(got)
}

/// One client: connect, send at once, read the answer to EOF.
fn client(addr: SocketAddr, i: usize) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
        .map_err(|e| format!("client {i}: connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    s.write_all(format!("hello {i} from the client").as_bytes())
        .map_err(|e| format!("client {i}: write: {e}"))?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)
        .map_err(|e| format!("client {i}: read (no EOF: the handle did not close?): {e}"))?;
    if back != format!("ok {i}").as_bytes() {
        return Err(format!(
            "client {i}: got {:?}",
            String::from_utf8_lossy(&back)
        ));
    }
    Ok(())
}

/// Dropping the handles `connections()` gives does not close the connection (they do not
/// own it); the message it sent before anyone looked waits for `accept()`, whose handle
/// does own it: dropping that one closes the connection.
pub async fn only_accepted_handles_own<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let c = client_pipe(cli, server.local_addr().unwrap()).await;
    c.send(b"before accept").await.unwrap();
    let deadline = Instant::now() + WAIT;
    while server.connections().is_empty() {
        assert!(Instant::now() < deadline, "no connection");
        sleep(Duration::from_millis(5)).await;
    }
    drop(server.connections());
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    assert!(
        !conn.is_closed(),
        "dropping connections() handles closed it"
    );
    assert_eq!(recv_bytes(&conn, 13).await, b"before accept");
    round_trip_once(&c, &conn).await;
    let stats_before = conn.stats().unwrap();
    assert_eq!(stats_before.unclaimed, 0);
    drop(conn);
    // The client sees its peer close.
    let end = within(WAIT, "the client's end", async {
        loop {
            match c.recv_timeout(Duration::from_millis(200)).await {
                Err(RecvError::Closed) => return,
                Ok(Some(m)) => panic!("unexpected {m:?}"),
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    end.await;
    assert!(server.connections().is_empty());
    server.close().await;
}

async fn client_pipe<R: Runtime>(rt: R, to: SocketAddr) -> Pipe<R> {
    PipeBuilder::new(rt, Proto::Tcp)
        .to(to)
        .open()
        .await
        .unwrap()
}

async fn round_trip_once<A: Runtime, B: Runtime>(c: &Pipe<A>, conn: &Pipe<B>) {
    conn.send(b"answer").await.unwrap();
    assert_eq!(recv_bytes(c, 6).await, b"answer");
}

/// `accept()` on a UDP pipe, a TCP client and an accepted connection: `NotListener`, at
/// once (not after a wait).
pub async fn accept_on_a_non_listener_fails_at_once<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let udp = PipeBuilder::new(srv.clone(), Proto::Udp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let c = client_pipe(cli, server.local_addr().unwrap()).await;
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    for (p, kind) in [(udp.clone(), "UDP pipe"), (conn.clone(), "TCP connection")] {
        let err = within(
            Duration::from_millis(500),
            "accept on a non-listener",
            p.accept(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, RecvError::NotListener(kind));
        let t = within(
            Duration::from_millis(500),
            "accept_timeout on a non-listener",
            p.accept_timeout(Duration::from_secs(30)),
        )
        .await;
        assert_eq!(t.map(|_| ()), Err(RecvError::NotListener(kind)));
    }
    let err = within(Duration::from_millis(500), "accept on a client", c.accept())
        .await
        .unwrap_err();
    assert_eq!(err, RecvError::NotListener("TCP client"));
    assert!(err.to_string().contains("TCP listener"), "{err}");
    let io = std::io::Error::from(err);
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    server.close().await;
    udp.close().await;
}

/// Cancel safety as documented: an `accept()` and a `recv()` dropped while pending (as the
/// losing branch of a `select!`) take nothing; the connection and the message that come
/// after are returned whole by the next call.
pub async fn cancelled_accept_and_recv_lose_nothing<S: Runtime, C: Runtime>(srv: S, cli: C) {
    use futures_lite::future;
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    assert!(future::poll_once(server.accept()).await.is_none());
    let raced = future::or(async { server.accept().await.map(|_| "accept") }, async {
        sleep(Duration::from_millis(20)).await;
        Ok("timer")
    })
    .await;
    assert_eq!(raced, Ok("timer"));
    let c = client_pipe(cli, server.local_addr().unwrap()).await;
    let conn = within(WAIT, "accept after cancelled ones", server.accept())
        .await
        .unwrap();
    for i in 0..3 {
        let raced = future::or(
            async {
                conn.recv_timeout(Duration::from_secs(30))
                    .await
                    .map(|m| m.map(|m| m.data.len()))
            },
            async {
                sleep(Duration::from_millis(10)).await;
                Ok(None)
            },
        )
        .await;
        assert_eq!(raced, Ok(None), "round {i}: nothing was sent yet");
        let msg = format!("after cancel {i}");
        c.send(msg.as_bytes()).await.unwrap();
        assert_eq!(recv_bytes(&conn, msg.len()).await, msg.as_bytes());
    }
    assert_eq!(conn.stats().unwrap().queue_dropped, 0);
    server.close().await;
}
