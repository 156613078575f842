//! Deadlines, which the engine owns, on real sockets: idle, first message, write stall, the
//! close flush, and closing a connection from its accept hook (a relay whose upstream fails).

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::prelude::*;

/// The deadline the scenarios set: long enough for a loaded machine to keep a talking peer
/// alive, short enough to keep the suite fast.
const SHORT: Duration = Duration::from_millis(400);

type Ends = Log<(PipeId, EndReason)>;

fn on_end_log<R: Runtime>(b: PipeBuilder<R>, log: &Ends) -> PipeBuilder<R> {
    let log = log.clone();
    b.on_end(move |r, p| {
        let log = log.clone();
        async move { log.push((p.id(), r)) }
    })
}

async fn ended(log: &Ends, id: PipeId, what: &str) -> EndReason {
    let all = log
        .wait_until(|v| v.iter().any(|(p, _)| *p == id), what)
        .await;
    let mine: Vec<_> = all.iter().filter(|(p, _)| *p == id).collect();
    assert_eq!(mine.len(), 1, "{what}: one end per pipe");
    mine[0].1.clone()
}

/// Read a raw connection until EOF or reset; the bytes read before.
async fn read_to_eof(s: &mut smol::Async<std::net::TcpStream>, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within(WAIT, what, s.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A server with an idle timeout ends a connection that went quiet with `IdleTimeout`, no
/// earlier than the deadline, and its client sees the close; a connection that keeps
/// talking past the deadline stays open. A UDP pipe with an idle timeout ends the same way.
pub async fn idle_timeout<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let ends = Ends::new();
    let conf = Conf {
        idle_timeout: Some(SHORT),
        ..Conf::default()
    };
    let server = on_end_log(PipeBuilder::new(srv, Proto::Tcp), &ends)
        .bind(lo0(Family::V4))
        .conf(conf.clone())
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    let quiet = client(cli.clone(), Proto::Tcp, dest).await;
    let qconn = within(WAIT, "accept", server.accept()).await.unwrap();
    let start = Instant::now();
    let chatty = client(cli.clone(), Proto::Tcp, dest).await;
    let cconn = within(WAIT, "accept", server.accept()).await.unwrap();
    let talk = async {
        // Three deadlines' worth of traffic, a message every quarter deadline.
        for _ in 0..12 {
            chatty.send(b"x").await.unwrap();
            sleep(SHORT / 4).await;
        }
    };
    let (_, reason) = futures_lite::future::zip(talk, ended(&ends, qconn.id(), "quiet ends")).await;
    assert_eq!(reason, EndReason::IdleTimeout);
    assert_at_least(start.elapsed(), SHORT, 0.9, "idle end");
    within(WAIT, "the quiet client sees the close", quiet.closed()).await;
    assert!(
        !cconn.is_closed(),
        "a connection that keeps talking stays open"
    );
    assert!(ends.snapshot().iter().all(|(p, _)| *p != cconn.id()));

    // UDP: a client pipe that hears nothing ends.
    let peer = raw_udp(Family::V4);
    let uends = Ends::new();
    let start = Instant::now();
    let udp = on_end_log(PipeBuilder::new(cli, Proto::Udp), &uends)
        .to(peer.get_ref().local_addr().unwrap())
        .conf(conf)
        .open()
        .await
        .unwrap();
    assert_eq!(
        ended(&uends, udp.id(), "UDP idle").await,
        EndReason::IdleTimeout
    );
    assert_at_least(start.elapsed(), SHORT, 0.9, "UDP idle end");
    server.close().await;
}

/// An accepted connection that sends no complete frame ends with `FirstMessageTimeout` (a
/// partial length prefix is not a message); one that sent a frame stays.
pub async fn first_message_timeout<R: Runtime>(rt: R) {
    let ends = Ends::new();
    let server = on_end_log(PipeBuilder::new(rt, Proto::Tcp), &ends)
        .bind(lo0(Family::V4))
        .conf(Conf {
            first_message_timeout: Some(SHORT),
            framing: Framing::LengthPrefixed { max: 1024 },
            ..Conf::default()
        })
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    let mut stalled = raw_tcp(dest).await;
    let start = Instant::now();
    stalled.write_all(&[0, 0, 0]).await.unwrap();
    let sconn = within(WAIT, "accept", server.accept()).await.unwrap();
    let mut good = raw_tcp(dest).await;
    good.write_all(&[0, 0, 0, 1, b'x']).await.unwrap();
    let gconn = within(WAIT, "accept", server.accept()).await.unwrap();
    assert_eq!(
        ended(&ends, sconn.id(), "stalled ends").await,
        EndReason::FirstMessageTimeout
    );
    assert_at_least(start.elapsed(), SHORT, 0.9, "first-message end");
    assert!(read_to_eof(&mut stalled, "stalled client sees the close")
        .await
        .is_empty());
    assert!(!gconn.is_closed(), "a connection that sent a frame stays");
    server.close().await;
}

/// A connection whose peer stops reading ends with `WriteStalled` once its queued bytes made
/// no progress for the stall timeout; the blocked sender gets `Closed`.
pub async fn write_stall_timeout<S: Runtime, C: Runtime>(srv: S, _cli: C) {
    let ends = Ends::new();
    let server = on_end_log(PipeBuilder::new(srv, Proto::Tcp), &ends)
        .bind(lo0(Family::V4))
        .conf(Conf {
            write_stall_timeout: Some(SHORT),
            ..Conf::default()
        })
        .open()
        .await
        .unwrap();
    let peer = raw_tcp(server.local_addr().unwrap()).await;
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0usize;
    let res = within(WAIT, "the stalled sender fails", async {
        loop {
            match conn.send(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => return e,
            }
        }
    })
    .await;
    assert_eq!(res, SendError::Closed);
    assert!(
        sent > 0,
        "some bytes went out before the peer's buffers filled"
    );
    match ended(&ends, conn.id(), "stalled conn ends").await {
        EndReason::WriteStalled { unsent } => assert!(unsent > 0, "bytes were left unsent"),
        other => panic!("ended with {other:?}, not WriteStalled"),
    }
    drop(peer);
    server.close().await;
}

/// Closing a pipe whose peer does not read: `close()` returns by the close deadline (the
/// rest is dropped), not never.
pub async fn close_flush_deadline<R: Runtime>(rt: R) {
    let listener = smol::Async::<std::net::TcpListener>::bind(lo0(Family::V4)).unwrap();
    let ends = Ends::new();
    let c = on_end_log(PipeBuilder::new(rt, Proto::Tcp), &ends)
        .to(listener.get_ref().local_addr().unwrap())
        .conf(Conf {
            close_timeout: SHORT,
            ..Conf::default()
        })
        .open()
        .await
        .unwrap();
    let (peer, _) = within(WAIT, "raw accept", listener.accept()).await.unwrap();
    // Fill the peer's receive buffer and ours, then queue some more.
    let chunk = vec![1u8; 64 << 10];
    loop {
        if timeout(Duration::from_millis(200), c.send(&chunk))
            .await
            .is_none()
        {
            break; // the send waits: everything is full
        }
    }
    // The kernel may still take some of the rest (its send buffer grows without a
    // writability event), so the close may finish early; it must never take much longer
    // than the deadline. The exact deadline is pipe-core's `engine_deadlines` tests.
    let (_, took) = timed(within(WAIT, "close returns", c.close())).await;
    assert!(took < SHORT + Duration::from_secs(2), "close took {took:?}");
    assert_eq!(ended(&ends, c.id(), "client ends").await, EndReason::Local);
    drop(peer);
}

/// An accept hook may close the connection it is given (a relay whose upstream refused): the
/// hook's `close().await` returns, and the client sees the close at once.
pub async fn close_from_accept_hook<S: Runtime, C: Runtime>(srv: S, _cli: C) {
    let hooks: Log<PipeId> = Log::new();
    let h = hooks.clone();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .on_accept(move |conn| {
            let h = h.clone();
            async move {
                conn.close().await;
                h.push(conn.id());
            }
        })
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    for i in 0..20 {
        let mut c = raw_tcp(dest).await;
        assert!(read_to_eof(&mut c, "client sees the close")
            .await
            .is_empty());
        hooks.wait_len(i + 1).await;
    }
    assert!(server.connections().is_empty());
    server.close().await;
}

/// A `recv`'s short deadline armed while a long one is (the idle deadline, minutes away)
/// moves the group's one timer earlier: the `recv` returns at its own deadline, not at the
/// long one.
pub async fn short_recv_deadline_under_a_long_one<R: Runtime>(rt: R) {
    let listener = smol::Async::<std::net::TcpListener>::bind(lo0(Family::V4)).unwrap();
    let c = PipeBuilder::new(rt, Proto::Tcp)
        .to(listener.get_ref().local_addr().unwrap())
        .conf(Conf {
            idle_timeout: Some(Duration::from_secs(300)),
            ..Conf::default()
        })
        .open()
        .await
        .unwrap();
    let (_peer, _) = within(WAIT, "raw accept", listener.accept()).await.unwrap();
    for _ in 0..3 {
        let (res, took) = within(
            WAIT,
            "recv at its own deadline",
            timed(c.recv_timeout(SHORT)),
        )
        .await;
        assert_eq!(res, Ok(None));
        assert_at_least(took, SHORT, 0.9, "the recv's deadline");
    }
    c.close().await;
}
