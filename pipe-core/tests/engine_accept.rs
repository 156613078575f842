//! Accepted connections as `accept()` hands them out: the fallback subscription that keeps
//! what arrives before the user subscribes (and only what nothing else took), `accept` on a
//! pipe that is not a listener, abandoning a connection, and a listener's totals over its
//! connections (ended ones included).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pipe_core::{
    Conf, ConnTotals, Engine, Event, Filter, LinkTarget, PipeId, RecvError, SubId, SubscribeError,
};

#[allow(clippy::disallowed_methods)] // tests may read the clock; the crate may not
fn start() -> (Engine, Instant) {
    (Engine::new(11), Instant::now())
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn drain(e: &mut Engine) -> Vec<Event> {
    while e.poll_transmit().is_some() {}
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn recv_all(e: &mut Engine, p: PipeId) -> Vec<Bytes> {
    std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data)).collect()
}

/// A listener (with or without message callbacks) and `n` connections.
fn server(e: &mut Engine, now: Instant, callbacks: bool, n: u16) -> (PipeId, Vec<PipeId>) {
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), callbacks)
        .unwrap();
    let conns = (0..n)
        .map(|i| {
            let peer = SocketAddr::from(([10, 0, 0, 2], 5000 + i));
            e.handle_accepted(now, l, sa("10.0.0.1:80"), peer).unwrap()
        })
        .collect();
    (l, conns)
}

#[test]
fn bytes_before_accept_wait_for_it() {
    let (mut e, now) = start();
    let (l, c) = server(&mut e, now, false, 1);
    e.handle_stream(now, c[0], b"first");
    e.handle_stream(now, c[0], b"second");
    drain(&mut e);
    assert_eq!(e.pop_accepted(l), Ok(Some(c[0])));
    assert_eq!(recv_all(&mut e, c[0]), [&b"first"[..], b"second"]);
    let st = e.stats(c[0]).unwrap();
    assert_eq!((st.received, st.queued, st.unclaimed), (2, 2, 0));
    // Later bytes go to the same subscription.
    e.handle_stream(now, c[0], b"third");
    assert_eq!(recv_all(&mut e, c[0]), [&b"third"[..]]);
}

#[test]
fn a_listener_with_callbacks_leaves_its_connections_unsubscribed() {
    let (mut e, now) = start();
    let (_l, c) = server(&mut e, now, true, 1);
    e.handle_stream(now, c[0], b"to the callbacks");
    let evs = drain(&mut e);
    assert!(evs
        .iter()
        .any(|ev| matches!(ev, Event::Message { pipe, .. } if *pipe == c[0])));
    assert_eq!(e.recv(c[0], SubId::ALL), Err(RecvError::NotSubscribed));
}

#[test]
fn the_fallback_takes_only_what_nothing_else_took() {
    let (mut e, now) = start();
    let (l, c) = server(&mut e, now, false, 2);
    // c[0] is linked to c[1] (a relay): what it forwards is not queued a second time.
    e.link(c[0], LinkTarget::Local(c[1]), None, None).unwrap();
    e.handle_stream(now, c[0], b"forwarded");
    drain(&mut e);
    assert_eq!(e.queue_len(c[0], SubId::ALL), Some(0));
    assert_eq!(e.stats(c[0]).unwrap().forwarded, 1);
    // Asked for: the fallback becomes an ordinary subscription, and takes a copy.
    assert_eq!(e.subscribe(c[0], Filter::all()), Ok(SubId::ALL));
    e.handle_stream(now, c[0], b"both");
    drain(&mut e);
    assert_eq!(recv_all(&mut e, c[0]), [&b"both"[..]]);
    assert_eq!(e.stats(c[0]).unwrap().forwarded, 2);
    // Unsubscribed: nothing is queued, the message is unclaimed once unlinked.
    assert_eq!(e.unsubscribe(c[1], SubId::ALL), Ok(()));
    e.handle_stream(now, c[1], b"nobody");
    assert_eq!(e.stats(c[1]).unwrap().unclaimed, 1);
    assert_eq!(e.pop_accepted(l), Ok(Some(c[0])));
    assert!(e.within_caps());
}

#[test]
fn a_connection_evicted_from_the_backlog_drops_its_fallback() {
    let (mut e, now) = start();
    let conf = Conf {
        accept_backlog: 1,
        ..Conf::default()
    };
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), conf, false)
        .unwrap();
    let a = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:1"))
        .unwrap();
    e.handle_stream(now, a, b"early");
    let b = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:2"))
        .unwrap();
    // `a` can never be accepted now: its queue went, counted, and it takes no more.
    let st = e.stats(a).unwrap();
    assert_eq!((st.queued, st.unclaimed), (1, 1));
    assert_eq!(e.queue_len(a, SubId::ALL), None);
    e.handle_stream(now, a, b"late");
    assert_eq!(e.stats(a).unwrap().unclaimed, 2);
    assert_eq!(e.stats(l).unwrap().accept_dropped, 1);
    assert_eq!(e.pop_accepted(l), Ok(Some(b)));
    assert!(e.within_caps());
}

#[test]
fn accept_on_a_pipe_that_is_not_a_listener_says_so() {
    let (mut e, now) = start();
    let udp = e
        .open_udp(now, sa("10.0.0.1:1"), None, Conf::default(), false)
        .unwrap();
    let tcp = e
        .open_tcp(
            now,
            sa("10.0.0.1:2"),
            sa("10.0.0.2:2"),
            Conf::default(),
            false,
        )
        .unwrap();
    assert_eq!(e.pop_accepted(udp), Err(RecvError::NotListener("UDP pipe")));
    assert_eq!(
        e.pop_accepted(tcp),
        Err(RecvError::NotListener("TCP client"))
    );
    let (_l, c) = server(&mut e, now, false, 1);
    assert_eq!(
        e.pop_accepted(c[0]),
        Err(RecvError::NotListener("TCP connection"))
    );
    assert_eq!(
        RecvError::NotListener("UDP pipe").to_string(),
        "accept needs a TCP listener, and this pipe is a UDP pipe"
    );
}

#[test]
fn an_abandoned_connection_is_forgotten_with_its_unread_messages() {
    let (mut e, now) = start();
    let (l, c) = server(&mut e, now, false, 1);
    e.handle_stream(now, c[0], b"never read");
    assert_eq!(e.pop_accepted(l), Ok(Some(c[0])));
    drain(&mut e);
    e.abandon(now, c[0]);
    let evs = drain(&mut e);
    assert!(evs
        .iter()
        .any(|ev| matches!(ev, Event::Released { pipe, .. } if *pipe == c[0])));
    assert_eq!(e.state(c[0]), None, "forgotten, not held for a reader");
    assert_eq!(
        e.subscribe(c[0], Filter::all()),
        Err(SubscribeError::Closed)
    );
    let t = e.conn_totals(l).unwrap();
    assert_eq!((t.accepted, t.ended, t.received), (1, 1, 1));
}

#[test]
fn a_listener_totals_its_connections_ended_ones_included() {
    let (mut e, now) = start();
    let (l, c) = server(&mut e, now, false, 2);
    assert_eq!(e.pop_accepted(l), Ok(Some(c[0])));
    assert_eq!(e.pop_accepted(l), Ok(Some(c[1])));
    e.handle_stream(now, c[0], b"hello");
    e.handle_stream(now, c[1], b"hi");
    e.handle_stream(now, c[1], b"again");
    e.send(now, c[0], b"answer", None).unwrap();
    e.send(now, c[1], b"ok", None).unwrap();
    drain(&mut e);
    let live = e.conn_totals(l).unwrap();
    assert_eq!(
        (live.accepted, live.ended, live.bytes_in, live.received),
        (2, 0, 12, 3)
    );
    assert_eq!((live.bytes_out, live.sent), (8, 2));
    // c[0] ends (reset) and is forgotten: its counters stay in the totals.
    assert_eq!(recv_all(&mut e, c[0]).len(), 1);
    e.handle_peer_closed(now, c[0], true); // a reset: ended whatever half-close does
    drain(&mut e);
    assert_eq!(e.state(c[0]), None);
    let after = e.conn_totals(l).unwrap();
    assert_eq!(
        (after.accepted, after.ended, after.bytes_in, after.bytes_out),
        (2, 1, 12, 8)
    );
    assert_eq!((after.received, after.sent), (3, 2));
    // Not a listener: no totals.
    assert_eq!(e.conn_totals(c[1]), None);
    assert_eq!(ConnTotals::default().accepted, 0);
}

#[test]
fn a_full_fallback_pauses_reading_instead_of_dropping() {
    let (mut e, now) = start();
    let conf = Conf {
        max_queue_bytes: 64 << 10,
        reader_limit: 16 << 10,
        ..Conf::default()
    };
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), conf, false)
        .unwrap();
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:1"))
        .unwrap();
    drain(&mut e);
    let chunk = [7u8; 16 << 10];
    // Four reads fill the 64 KiB queue exactly; one more would not fit: paused.
    for _ in 0..4 {
        e.handle_stream(now, c, &chunk);
    }
    let evs = drain(&mut e);
    assert!(evs.contains(&Event::Pause { pipe: c }), "{evs:?}");
    assert_eq!(e.stats(c).unwrap().queue_dropped, 0);
    // Accepted and read: room again, reading resumes; nothing was lost.
    assert_eq!(e.pop_accepted(l), Ok(Some(c)));
    assert_eq!(recv_all(&mut e, c).len(), 4);
    let evs = drain(&mut e);
    assert!(evs.contains(&Event::Resume { pipe: c }), "{evs:?}");
    // Made ordinary by an explicit subscribe: drop-oldest as for any subscription.
    assert_eq!(e.subscribe(c, Filter::all()), Ok(SubId::ALL));
    for _ in 0..5 {
        e.handle_stream(now, c, &chunk);
    }
    assert!(e.stats(c).unwrap().queue_dropped > 0);
    assert!(e.within_caps());
}
