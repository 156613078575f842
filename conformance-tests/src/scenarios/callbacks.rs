//! Callbacks: order, panic isolation, and up/end exactly once in every way a pipe can end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::prelude::*;

/// Message callbacks run in registration order, one at a time, each awaited: a slow first
/// callback does not let the second overtake it. Removal by id works.
pub async fn callbacks_run_in_order<R: Runtime>(rt: R) {
    let log: Log<(String, usize)> = Log::new();
    let cb = |i: usize, log: Log<(String, usize)>| {
        move |m: pipe_io::Message, _p: Pipe<R>| {
            let log = log.clone();
            async move {
                if i == 0 {
                    sleep(Duration::from_millis(30)).await;
                }
                log.push((text(&m), i));
            }
        }
    };
    let mut b = PipeBuilder::new(rt, Proto::Udp).bind(lo0(Family::V4));
    for i in 0..4 {
        b = b.on_message(cb(i, log.clone()));
    }
    let server = b.open().await.unwrap();
    let mut ids = Vec::new();
    for i in 4..8 {
        ids.push(server.add_msg_cb(cb(i, log.clone())));
    }
    let sender = raw_udp(Family::V4);
    let dest = server.local_addr().unwrap();
    sender.send_to(b"m1", dest).await.unwrap();
    sender.send_to(b"m2", dest).await.unwrap();
    let got = log.wait_exactly(16).await;
    let want: Vec<(String, usize)> = ["m1", "m2"]
        .iter()
        .flat_map(|m| (0..8).map(move |i| (m.to_string(), i)))
        .collect();
    assert_eq!(got, want);

    assert!(server.del_cb(ids[2]), "callback 6 removed");
    assert!(!server.del_cb(ids[2]), "removing twice reports false");
    sender.send_to(b"m3", dest).await.unwrap();
    // m4 is a sentinel: callbacks run in order, one message after the other, so once m4's
    // last callback has logged, every callback for m1..m3 has run; a second run of any of
    // them would sit before m4's entries. No quiet window needed.
    sender.send_to(b"m4", dest).await.unwrap();
    let got = log.wait_exactly(30).await;
    assert_eq!(got[..16], want[..], "m1 and m2, once each");
    for (m, entries) in [("m3", &got[16..23]), ("m4", &got[23..])] {
        assert_eq!(
            entries,
            [0, 1, 2, 3, 4, 5, 7].map(|i| (m.to_string(), i)),
            "{m}: callback 6 removed, the others once each"
        );
    }
    server.close().await;
}

/// A panicking callback is caught: the callbacks after it still get that message, later
/// messages are still delivered, and the pipe keeps sending and queueing.
pub async fn panicking_callback_is_isolated<S: Runtime, C: Runtime>(srv: S, cli: C, proto: Proto) {
    let panics = Arc::new(AtomicUsize::new(0));
    let p2 = panics.clone();
    let server = PipeBuilder::new(srv, proto)
        .bind(lo0(Family::V4))
        .on_message(move |m, _| {
            let p2 = p2.clone();
            async move {
                if m.data.starts_with(b"boom") {
                    p2.fetch_add(1, Ordering::SeqCst);
                    panic!("callback panics on purpose (conformance test)");
                }
            }
        })
        .on_message(|m, pipe| async move {
            let _ = pipe.send_to(&m.data, m.from).await;
        })
        .open()
        .await
        .unwrap();
    let c = client(cli, proto, server.local_addr().unwrap()).await;
    for msg in ["boom-1", "ok-1", "boom-2", "ok-2"] {
        c.send(msg.as_bytes()).await.unwrap();
        assert_eq!(
            recv_bytes(&c, msg.len()).await,
            msg.as_bytes(),
            "echo of {msg} after a panic"
        );
    }
    assert_eq!(panics.load(Ordering::SeqCst), 2);
    assert!(!server.is_closed());
    c.close().await;
    server.close().await;
}

/// The same with a lone message callback (run as the job itself, without a job future
/// around it): one that panics in its future, and one that panics before it returns one;
/// and the callback's own code before its future may take the group's lock (`stats`).
pub async fn lone_panicking_callback_is_isolated<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = PipeBuilder::new(srv, Proto::Udp)
        .bind(lo0(Family::V4))
        .on_message(|m, pipe| {
            // User code before the future: it runs outside the group's lock (reading the
            // pipe's stats takes it), like every callback.
            assert!(pipe.stats().is_some());
            if m.data.starts_with(b"early") {
                panic!("callback panics before its future (conformance test)");
            }
            async move {
                if m.data.starts_with(b"boom") {
                    panic!("callback panics on purpose (conformance test)");
                }
                let _ = pipe.send_to(&m.data, m.from).await;
            }
        })
        .open()
        .await
        .unwrap();
    let c = client(cli, Proto::Udp, server.local_addr().unwrap()).await;
    for (i, msg) in [
        "boom-1", "ok-1", "early-1", "ok-2", "boom-2", "early-2", "ok-3",
    ]
    .into_iter()
    .enumerate()
    {
        c.send(msg.as_bytes()).await.unwrap();
        if msg.starts_with("ok") {
            assert_eq!(text(&recv_msg(&c).await), msg, "echo {i} after panics");
        }
    }
    assert!(!server.is_closed());
    c.close().await;
    server.close().await;
}

/// The up and end callbacks of a builder, logged.
#[derive(Clone)]
struct Watch {
    up: Log<PipeId>,
    end: Log<(PipeId, EndReason)>,
}

fn watched<R: Runtime>(b: PipeBuilder<R>) -> (PipeBuilder<R>, Watch) {
    let w = Watch {
        up: Log::new(),
        end: Log::new(),
    };
    let (up, end) = (w.up.clone(), w.end.clone());
    let b = b
        .on_up(move |p| {
            let up = up.clone();
            async move { up.push(p.id()) }
        })
        .on_end(move |r, p| {
            let end = end.clone();
            async move { end.push((p.id(), r)) }
        });
    (b, w)
}

/// Up, then local close: the client's end fires once with `Local`; the accepted connection
/// sees the FIN and its end fires once with `PeerClosed`. An end callback added after the
/// close fires at once.
pub async fn up_end_client_local_close<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (sb, sw) = watched(PipeBuilder::new(srv, Proto::Tcp).bind(lo0(Family::V4)));
    let server = sb.open().await.unwrap();
    let listener_id = server.id();
    let (cb, cw) = watched(PipeBuilder::new(cli, Proto::Tcp).to(server.local_addr().unwrap()));
    let c = cb.open().await.unwrap();
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    assert_eq!(cw.up.wait_exactly(1).await, [c.id()]);
    assert_eq!(
        sw.up.wait_exactly(1).await,
        [conn.id()],
        "up greets the connection once; the listener is not a peer (P2PD fires up per connection)"
    );

    c.close().await;
    assert_eq!(cw.end.wait_exactly(1).await, [(c.id(), EndReason::Local)]);
    assert_eq!(
        sw.end.wait_exactly(1).await,
        [(conn.id(), EndReason::PeerClosed)]
    );

    let late: Log<EndReason> = Log::new();
    let l = late.clone();
    c.add_end_cb(move |r, _| {
        let l = l.clone();
        async move { l.push(r) }
    });
    assert_eq!(late.wait_exactly(1).await, [EndReason::Local]);
    server.close().await;
    assert_eq!(
        sw.end.wait_exactly(2).await[1],
        (listener_id, EndReason::Local)
    );
    // After every pipe has ended: each up and end fired once.
    assert_eq!(cw.up.snapshot(), [c.id()]);
    assert_eq!(
        sw.up.snapshot().len(),
        1,
        "the connection only, never the listener"
    );
    assert_eq!(cw.end.snapshot(), [(c.id(), EndReason::Local)]);
    assert_eq!(late.snapshot(), [EndReason::Local]);
}

/// The accepted connection closes locally: its end fires once with `Local` (P2PD never fired
/// end on a local close); the client sees the FIN: `PeerClosed`, once.
pub async fn up_end_accepted_local_close<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (sb, sw) = watched(PipeBuilder::new(srv, Proto::Tcp).bind(lo0(Family::V4)));
    let server = sb.open().await.unwrap();
    let (cb, cw) = watched(PipeBuilder::new(cli, Proto::Tcp).to(server.local_addr().unwrap()));
    let c = cb.open().await.unwrap();
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    sw.up.wait_len(1).await;
    conn.close().await;
    assert_eq!(
        sw.end.wait_exactly(1).await,
        [(conn.id(), EndReason::Local)]
    );
    assert_eq!(
        cw.end.wait_exactly(1).await,
        [(c.id(), EndReason::PeerClosed)]
    );
    assert_eq!(cw.up.snapshot(), [c.id()]);
    assert_eq!(conn.send(b"x").await, Err(SendError::Closed));
    assert_eq!(c.send(b"x").await, Err(SendError::Closed));
    server.close().await;
    // The listener's end comes after the connection's: still one end for the connection.
    assert_eq!(
        sw.end.wait_exactly(2).await,
        [
            (conn.id(), EndReason::Local),
            (server.id(), EndReason::Local)
        ]
    );
    assert_eq!(cw.end.snapshot(), [(c.id(), EndReason::PeerClosed)]);
    assert_eq!(
        sw.up.snapshot().len(),
        1,
        "the connection only, never the listener"
    );
}

/// A peer that resets (SO_LINGER 0): the accepted connection's end, and a client's end, fire
/// once with `Reset`.
pub async fn up_end_peer_reset<R: Runtime>(rt: R) {
    // Reset towards an accepted connection.
    let (sb, sw) = watched(PipeBuilder::new(rt.clone(), Proto::Tcp).bind(lo0(Family::V4)));
    let server = sb.open().await.unwrap();
    let raw = raw_tcp(server.local_addr().unwrap()).await;
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    set_rst_on_close(raw.get_ref());
    drop(raw);
    assert_eq!(
        sw.end.wait_exactly(1).await,
        [(conn.id(), EndReason::Reset)]
    );
    server.close().await;
    assert_eq!(
        sw.end.wait_exactly(2).await,
        [
            (conn.id(), EndReason::Reset),
            (server.id(), EndReason::Local)
        ],
        "one end for the connection, then the listener's"
    );

    // Reset towards a client.
    let listener = smol::Async::<std::net::TcpListener>::bind(lo0(Family::V4)).unwrap();
    let (cb, cw) =
        watched(PipeBuilder::new(rt, Proto::Tcp).to(listener.get_ref().local_addr().unwrap()));
    let c = cb.open().await.unwrap();
    let (stream, _) = within(WAIT, "raw accept", listener.accept()).await.unwrap();
    set_rst_on_close(stream.get_ref());
    drop(stream);
    assert_eq!(cw.end.wait_exactly(1).await, [(c.id(), EndReason::Reset)]);
    assert_eq!(cw.up.snapshot(), [c.id()]);
    assert_eq!(c.send(b"x").await, Err(SendError::Closed));
    c.close().await;
    assert_eq!(cw.end.snapshot(), [(c.id(), EndReason::Reset)]);
}

/// Closing a server ends each accepted connection once (`ServerClosed`), then the listener
/// (`Local`); every remote client sees `PeerClosed` once.
pub async fn up_end_server_close<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let (sb, sw) = watched(PipeBuilder::new(srv, Proto::Tcp).bind(lo0(Family::V4)));
    let server = sb.open().await.unwrap();
    let mut clients = Vec::new();
    let mut conns = Vec::new();
    // accept() hands out owning handles: they are kept, so the server's close ends them.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (cb, cw) =
            watched(PipeBuilder::new(cli.clone(), Proto::Tcp).to(server.local_addr().unwrap()));
        clients.push((cb.open().await.unwrap(), cw));
        let conn = within(WAIT, "accept", server.accept()).await.unwrap();
        conns.push(conn.id());
        held.push(conn);
    }
    let mut ups = sw.up.wait_exactly(2).await;
    ups.sort();
    assert_eq!(ups, conns, "up for each connection, none for the listener");
    server.close().await;
    let mut ends = sw.end.wait_exactly(3).await;
    ends.sort_by_key(|(id, _)| *id);
    let mut want = vec![(server.id(), EndReason::Local)];
    want.extend(conns.iter().map(|&c| (c, EndReason::ServerClosed)));
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(ends, want);
    for (c, cw) in &clients {
        assert_eq!(
            cw.end.wait_exactly(1).await,
            [(c.id(), EndReason::PeerClosed)]
        );
        assert_eq!(cw.up.snapshot().len(), 1);
    }
    // After every client has ended too: still two ups (the connections) and three ends (the
    // connections and the listener) on the server side.
    assert_eq!(sw.up.snapshot().len(), 2);
    assert_eq!(sw.end.snapshot().len(), 3);
}

/// UDP pipes fire up once when bound (P2PD ignored up for UDP) and end once on close.
pub async fn up_end_udp<R: Runtime>(rt: R) {
    let (b, w) = watched(PipeBuilder::new(rt, Proto::Udp).bind(lo0(Family::V4)));
    let p = b.open().await.unwrap();
    assert_eq!(w.up.wait_exactly(1).await, [p.id()]);
    p.close().await;
    p.close().await;
    assert_eq!(w.end.wait_exactly(1).await, [(p.id(), EndReason::Local)]);
    // Checked again after a later event (a late end callback, which fires at once on an
    // ended pipe): still one up and one end.
    let late: Log<EndReason> = Log::new();
    let l = late.clone();
    p.add_end_cb(move |r, _| {
        let l = l.clone();
        async move { l.push(r) }
    });
    late.wait_exactly(1).await;
    assert_eq!(w.up.snapshot(), [p.id()]);
    assert_eq!(w.end.snapshot(), [(p.id(), EndReason::Local)]);
}

/// An accepted connection's up callback can already send (P2PD ran it before the writer was
/// installed), and a callback added to one connection stays on it (P2PD shared the lists of
/// all connections). The server's connection list shrinks when a client leaves.
pub async fn per_connection_callbacks<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .on_up(|p| async move {
            if p.dest().is_some() {
                let _ = p.send(b"welcome").await;
            }
        })
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    let a = client(cli.clone(), Proto::Tcp, dest).await;
    let conn_a = within(WAIT, "accept", server.accept()).await.unwrap();
    let b = client(cli, Proto::Tcp, dest).await;
    let conn_b = within(WAIT, "accept", server.accept()).await.unwrap();
    assert_eq!(recv_bytes(&a, 7).await, b"welcome");
    assert_eq!(recv_bytes(&b, 7).await, b"welcome");

    let on_a: Log<String> = Log::new();
    let l = on_a.clone();
    conn_a.add_msg_cb(move |m, p| {
        let l = l.clone();
        async move { l.push(format!("{}@{:?}", text(&m), p.id())) }
    });
    b.send(b"to b").await.unwrap();
    a.send(b"to a").await.unwrap();
    assert_eq!(
        on_a.wait_exactly(1).await,
        [format!("to a@{:?}", conn_a.id())]
    );

    assert_eq!(server.connections().len(), 2);
    b.close().await;
    within(WAIT, "b's connection ends", conn_b.closed()).await;
    let left: Vec<_> = server.connections().iter().map(|c| c.id()).collect();
    assert_eq!(left, [conn_a.id()]);
    server.close().await;
}
