//! Half-close of stream pipes (`engine/half.rs`), driven directly: a peer's FIN closes the
//! read side only, the pipe ends when nothing may answer or both sides are shut, a local
//! `shutdown_write` flushes then emits `WriteShut`, stream mode stays writable and pauses
//! instead of dropping, and links both ways pass the FIN on after the forwarded bytes.

mod world;

use std::time::Instant;

use pipe_core::{
    Conf, EndReason, Engine, Event, LinkTarget, PipeId, RecvError, SendError, SubId, Transmit,
};
use world::{base_instant, sa};

fn txs(e: &mut Engine) -> Vec<Transmit> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn evs(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn ends(events: &[Event]) -> Vec<(PipeId, EndReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::End { pipe, reason } => Some((*pipe, reason.clone())),
            _ => None,
        })
        .collect()
}

fn has(events: &[Event], f: impl Fn(&Event) -> bool) -> bool {
    events.iter().any(f)
}

fn client(e: &mut Engine, now: Instant, conf: Conf, callbacks: bool) -> PipeId {
    let p = e
        .open_tcp(now, sa("10.0.0.2:5000"), sa("10.0.0.1:80"), conf, callbacks)
        .unwrap();
    evs(e);
    p
}

#[test]
fn a_fin_with_nothing_to_answer_ends_at_once_and_the_queue_stays_readable() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let p = client(&mut e, now, Conf::default(), false);
    e.handle_stream(now, p, b"last words");
    e.handle_peer_closed(now, p, false);
    let ev = evs(&mut e);
    assert_eq!(ends(&ev), [(p, EndReason::PeerClosed)]);
    assert_eq!(e.send(now, p, b"x", None), Err(SendError::Closed));
    assert_eq!(
        &e.recv(p, SubId::ALL).unwrap().unwrap().data[..],
        b"last words"
    );
    assert_eq!(e.recv(p, SubId::ALL), Err(RecvError::Closed));
}

#[test]
fn a_fin_waits_for_a_callback_that_may_answer() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let p = client(&mut e, now, Conf::default(), true);
    e.handle_stream(now, p, b"request");
    e.handle_peer_closed(now, p, false);
    let ev = evs(&mut e);
    assert!(has(&ev, |e| matches!(e, Event::Message { .. })));
    assert_eq!(ends(&ev), [], "a callback job may still answer: no end yet");
    assert!(e.is_read_closed(p) && !e.is_write_shut(p));
    // The callback answers after the FIN, then finishes.
    assert_eq!(e.send(now, p, b"answer", None), Ok(()));
    let out = txs(&mut e);
    assert_eq!(&out[0].payload[..], b"answer");
    e.handle_callback_done(p, 7);
    let ev = evs(&mut e);
    assert_eq!(ends(&ev), [(p, EndReason::PeerClosed)]);
    assert!(has(&ev, |e| matches!(e, Event::Released { unsent: 0, .. })));
}

#[test]
fn shutdown_write_flushes_then_fins_and_the_pipe_still_reads() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let p = client(&mut e, now, Conf::default(), false);
    e.send(now, p, b"abc", None).unwrap();
    assert_eq!(e.shutdown_write(now, p), Ok(()));
    assert_eq!(e.shutdown_write(now, p), Ok(()), "idempotent");
    assert!(
        !has(&evs(&mut e), |e| matches!(e, Event::WriteShut { .. })),
        "not before the queued bytes are written"
    );
    assert_eq!(e.send(now, p, b"late", None), Err(SendError::Closed));
    let (buf, _) = e.peek_transmit(p).unwrap();
    assert_eq!(&buf[..], b"abc");
    e.advance_transmit(now, p, 3);
    let ev = evs(&mut e);
    assert!(has(
        &ev,
        |e| matches!(e, Event::WriteShut { pipe } if *pipe == p)
    ));
    assert_eq!(ends(&ev), []);
    // The answer still comes in.
    e.handle_stream(now, p, b"answer");
    assert_eq!(&e.recv(p, SubId::ALL).unwrap().unwrap().data[..], b"answer");
    // The peer's FIN completes the close.
    e.handle_peer_closed(now, p, false);
    let ev = evs(&mut e);
    assert_eq!(ends(&ev), [(p, EndReason::PeerClosed)]);
    assert!(has(&ev, |e| matches!(e, Event::Released { .. })));
}

#[test]
fn shutdown_write_is_for_streams_only() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let u = e
        .open_udp(now, sa("10.0.0.2:5000"), None, Conf::default(), false)
        .unwrap();
    assert!(matches!(
        e.shutdown_write(now, u),
        Err(SendError::WrongKind(_))
    ));
}

#[test]
fn stream_mode_stays_writable_after_the_fin_until_shut_down() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let p = client(&mut e, now, Conf::default(), false);
    e.keep_writable(p, true);
    e.handle_stream(now, p, b"question");
    e.handle_peer_closed(now, p, false);
    assert_eq!(ends(&evs(&mut e)), []);
    assert_eq!(
        &e.recv(p, SubId::ALL).unwrap().unwrap().data[..],
        b"question"
    );
    assert_eq!(
        e.recv(p, SubId::ALL),
        Err(RecvError::Closed),
        "the read side is done: a drained queue says so"
    );
    e.send(now, p, b"answer", None).unwrap();
    e.shutdown_write(now, p).unwrap();
    let ev = evs(&mut e);
    assert_eq!(ends(&ev), [(p, EndReason::PeerClosed)]);
    assert!(
        !has(&ev, |e| matches!(e, Event::Released { .. })),
        "answer still queued"
    );
    assert_eq!(&txs(&mut e)[0].payload[..], b"answer");
    assert!(has(&evs(&mut e), |e| matches!(
        e,
        Event::Released { unsent: 0, .. }
    )));
}

#[test]
fn stream_mode_pauses_reading_instead_of_dropping() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let conf = Conf {
        max_qsize: 4,
        ..Conf::default()
    };
    let p = client(&mut e, now, conf, false);
    e.keep_writable(p, true);
    for i in 0..4u8 {
        assert!(
            !has(&evs(&mut e), |e| matches!(e, Event::Pause { .. })),
            "read {i}"
        );
        e.handle_stream(now, p, &[i]);
    }
    assert!(
        has(
            &evs(&mut e),
            |e| matches!(e, Event::Pause { pipe } if *pipe == p)
        ),
        "a full queue pauses the socket's reading"
    );
    assert_eq!(e.stats(p).unwrap().queue_dropped, 0);
    e.recv(p, SubId::ALL).unwrap().unwrap();
    assert!(has(
        &evs(&mut e),
        |e| matches!(e, Event::Resume { pipe } if *pipe == p)
    ));
}

#[test]
fn links_both_ways_pass_the_fin_on_after_the_forwarded_bytes() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    let a = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:5000"))
        .unwrap();
    let b = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.3:5000"))
        .unwrap();
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    e.link(b, LinkTarget::Local(a), None, None).unwrap();
    evs(&mut e);
    e.handle_stream(now, a, b"request");
    e.handle_peer_closed(now, a, false);
    let ev = evs(&mut e);
    assert_eq!(ends(&ev), [], "a may still get b's answer");
    assert!(e.is_write_shut(b), "a's FIN shut b's write side");
    assert!(
        !has(&ev, |e| matches!(e, Event::WriteShut { .. })),
        "b's FIN waits for the forwarded request"
    );
    let (buf, _) = e.peek_transmit(b).unwrap();
    assert_eq!(&buf[..], b"request");
    e.advance_transmit(now, b, 7);
    assert!(has(
        &evs(&mut e),
        |e| matches!(e, Event::WriteShut { pipe } if *pipe == b)
    ));
    // b's answer goes back to a, then b's FIN ends b and shuts a after the answer.
    e.handle_stream(now, b, b"answer");
    e.handle_peer_closed(now, b, false);
    let ev = evs(&mut e);
    // b's FIN first shuts a (whose read side is closed: a ends), then b ends.
    assert_eq!(
        ends(&ev),
        [(a, EndReason::PeerClosed), (b, EndReason::PeerClosed)]
    );
    let (buf, _) = e.peek_transmit(a).unwrap();
    assert_eq!(&buf[..], b"answer", "a's answer still leaves after its end");
    e.advance_transmit(now, a, 6);
    assert!(has(
        &evs(&mut e),
        |e| matches!(e, Event::Released { pipe, unsent: 0 } if *pipe == a)
    ));
}

#[test]
fn a_one_way_link_does_not_pass_the_fin_on() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    let a = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:5000"))
        .unwrap();
    let b = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.3:5000"))
        .unwrap();
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    evs(&mut e);
    e.handle_peer_closed(now, a, false);
    assert_eq!(ends(&evs(&mut e)), [(a, EndReason::PeerClosed)]);
    assert!(
        !e.is_write_shut(b),
        "a fan-in target is not shut by one source's FIN"
    );
}

#[test]
fn a_connection_taken_by_accept_stays_writable_after_the_peer_fin() {
    // A listener served by `accept()` (called once already, as an accept loop does): a
    // connection's user may answer after reading the request, as with a `TcpStream`.
    let (mut e, now) = (Engine::new(1), base_instant());
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    assert_eq!(e.pop_accepted(l).unwrap(), None);
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:5000"))
        .unwrap();
    evs(&mut e);
    e.handle_stream(now, c, b"request");
    e.handle_peer_closed(now, c, false);
    assert_eq!(ends(&evs(&mut e)), [], "the FIN alone does not end it");
    assert!(e.is_read_closed(c));
    assert!(!e.is_write_shut(c));
    assert_eq!(e.pop_accepted(l).unwrap(), Some(c));
    assert_eq!(
        &e.recv(c, SubId::ALL).unwrap().unwrap().data[..],
        b"request"
    );
    e.send(now, c, b"answer", None).unwrap();
    e.shutdown_write(now, c).unwrap();
    let ev = evs(&mut e);
    assert_eq!(
        ends(&ev),
        [(c, EndReason::PeerClosed)],
        "shut both ways: ended"
    );
    let (buf, _) = e.peek_transmit(c).unwrap();
    assert_eq!(&buf[..], b"answer");
}

#[test]
fn a_taken_connection_stays_writable_after_a_fin_read_after_the_take() {
    // When the driver reads a FIN is a matter of scheduling: one read after `accept()`
    // handed the connection out is treated as one read before. The user holds it like a
    // `TcpStream` (reads and writes, stream mode or not) until it acts in P2PD's way: a
    // callback edit or a wait for the end (`user_acts`) applies P2PD's rule.
    let (mut e, now) = (Engine::new(1), base_instant());
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    assert_eq!(e.pop_accepted(l).unwrap(), None);
    let take = |e: &mut Engine, port: u16, fin: bool| {
        let from = sa(&format!("10.0.0.2:{port}"));
        let c = e.handle_accepted(now, l, sa("10.0.0.1:80"), from).unwrap();
        assert_eq!(e.pop_accepted(l).unwrap(), Some(c));
        e.subscribe(c, pipe_core::Filter::all()).unwrap();
        e.handle_stream(now, c, b"request");
        if fin {
            e.handle_peer_closed(now, c, false);
            assert_eq!(ends(&evs(e)), [], "held by its user: stays writable");
            assert!(e.is_read_closed(c));
        }
        c
    };
    let answered = |e: &mut Engine, c: PipeId| {
        assert_eq!(
            &e.recv(c, SubId::ALL).unwrap().unwrap().data[..],
            b"request"
        );
        assert_eq!(
            e.recv(c, SubId::ALL),
            Err(RecvError::Closed),
            "read side closed"
        );
        assert_eq!(ends(&evs(e)), [], "a recv does not end it");
        e.send(now, c, b"answer", None).unwrap();
        e.shutdown_write(now, c).unwrap();
        assert_eq!(
            ends(&evs(e)),
            [(c, EndReason::PeerClosed)],
            "shut both ways"
        );
        let (buf, _) = e.peek_transmit(c).unwrap();
        assert_eq!(&buf[..], b"answer");
    };
    // Message mode and stream mode both answer after the FIN.
    let c = take(&mut e, 5000, true);
    answered(&mut e, c);
    let c = take(&mut e, 5001, true);
    e.keep_writable(c, true);
    answered(&mut e, c);
    // Stream mode settles it: a later wait for the end does not end it.
    let c = take(&mut e, 5002, true);
    e.keep_writable(c, true);
    e.user_acts(c);
    answered(&mut e, c);
    // A callback edit, or a wait for the end, applies P2PD's rule: the FIN ends it.
    let c = take(&mut e, 5003, true);
    e.set_callbacks(c, false);
    assert_eq!(ends(&evs(&mut e)), [(c, EndReason::PeerClosed)]);
    let c = take(&mut e, 5004, true);
    e.user_acts(c);
    assert_eq!(ends(&evs(&mut e)), [(c, EndReason::PeerClosed)]);
    // Acted on before its FIN: the FIN ends it at once.
    let c = take(&mut e, 5005, false);
    e.user_acts(c);
    e.handle_peer_closed(now, c, false);
    assert_eq!(ends(&evs(&mut e)), [(c, EndReason::PeerClosed)]);
}

#[test]
fn a_listener_not_served_by_accept_ends_a_connection_at_its_fin() {
    // P2PD's way: nobody calls `accept()`, so nobody could answer after the FIN.
    let (mut e, now) = (Engine::new(1), base_instant());
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:5000"))
        .unwrap();
    evs(&mut e);
    e.handle_peer_closed(now, c, false);
    assert_eq!(ends(&evs(&mut e)), [(c, EndReason::PeerClosed)]);
}

#[test]
fn a_fin_connection_evicted_from_the_accept_queue_ends() {
    let (mut e, now) = (Engine::new(1), base_instant());
    let conf = Conf {
        accept_backlog: 1,
        ..Conf::default()
    };
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), conf, false)
        .unwrap();
    assert_eq!(e.pop_accepted(l).unwrap(), None);
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:5000"))
        .unwrap();
    e.handle_peer_closed(now, c, false);
    assert_eq!(ends(&evs(&mut e)), [], "queued for a user: stays writable");
    e.handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.3:5000"))
        .unwrap();
    assert_eq!(
        ends(&evs(&mut e)),
        [(c, EndReason::PeerClosed)],
        "pushed out of the queue, nobody can answer it"
    );
}

/// A listener on 10.0.0.1:80 with `max_out_bytes` of `out` (for the local-link tests).
fn listener(out: usize) -> (Engine, Instant, PipeId) {
    let (mut e, now) = (Engine::new(1), base_instant());
    let conf = Conf {
        max_out_bytes: out,
        ..Conf::default()
    };
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), conf, false)
        .unwrap();
    (e, now, l)
}

/// A connection of `l` from 10.0.0.2:`port`.
fn accept(e: &mut Engine, now: Instant, l: PipeId, port: u16) -> PipeId {
    e.handle_accepted(now, l, sa("10.0.0.1:80"), sa(&format!("10.0.0.2:{port}")))
        .unwrap()
}

/// A local link into a stream pipe (two connections of one listener) never drops: a byte
/// stream has no holes, and a TLS record dropped after it was encrypted would break the
/// session. Once the target holds `max_out_bytes` its source pauses (backpressure), and it
/// resumes when the target drains below it, or ends. Before, forwards past the hard cap of
/// engine-made transmits (4 × 4,096 + 65,527 bytes here) were dropped from the middle of
/// the stream and the source read on.
#[test]
fn a_local_link_into_a_full_stream_pauses_its_source_and_drops_nothing() {
    let (mut e, now, l) = listener(4096);
    let (a, b) = (accept(&mut e, now, l, 1), accept(&mut e, now, l, 2));
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    evs(&mut e);
    let paused =
        |ev: &[Event], p: PipeId| has(ev, |e| matches!(e, Event::Pause { pipe } if *pipe == p));
    let resumed =
        |ev: &[Event], p: PipeId| has(ev, |e| matches!(e, Event::Resume { pipe } if *pipe == p));
    let mut sent = Vec::new();
    let chunk = |i: usize| -> Vec<u8> { (0..1000).map(|j| ((i * 7 + j) % 251) as u8).collect() };
    // Four chunks fit under the target's buffer; the fifth fills it and pauses the source.
    for i in 0..4 {
        let c = chunk(i);
        e.handle_stream(now, a, &c);
        sent.extend_from_slice(&c);
        assert!(!paused(&evs(&mut e), a), "chunk {i}: room left");
    }
    let c = chunk(4);
    e.handle_stream(now, a, &c);
    sent.extend_from_slice(&c);
    assert!(paused(&evs(&mut e), a), "b is full: a pauses");
    // Reads already on their way when the pause came are taken, whole: far past the hard
    // cap that used to drop them.
    for i in 5..100 {
        let c = chunk(i);
        e.handle_stream(now, a, &c);
        sent.extend_from_slice(&c);
    }
    assert_eq!(e.out_bytes(b), sent.len());
    assert_eq!(e.stats(b).unwrap().out_dropped, 0);
    assert!(e.within_caps());
    assert_eq!(e.stats(a).unwrap().forward_failed, 0);
    // b drains: a resumes once b is below its buffer, not before.
    let mut got = Vec::new();
    while e.out_bytes(b) >= 4096 {
        assert!(!resumed(&evs(&mut e), a), "b still full");
        let (buf, _) = e.peek_transmit(b).unwrap();
        let n = buf.len().min(3000);
        got.extend_from_slice(&buf[..n]);
        e.advance_transmit(now, b, n);
    }
    assert!(resumed(&evs(&mut e), a), "b has room: a reads again");
    while let Some((buf, _)) = e.peek_transmit(b) {
        let n = buf.len();
        got.extend_from_slice(buf);
        e.advance_transmit(now, b, n);
    }
    assert!(got == sent, "b sent every forwarded byte, in order");
    // Full again, then b ends: a has nothing to wait for and reads on.
    for i in 0..5 {
        e.handle_stream(now, a, &chunk(i));
    }
    assert!(paused(&evs(&mut e), a));
    e.handle_error(
        now,
        b,
        pipe_core::IoError::new(std::io::ErrorKind::ConnectionReset.into()),
    );
    assert!(resumed(&evs(&mut e), a), "b ended: a resumes");
}

/// A source linked to two full stream targets stays paused until neither is full: one
/// draining is not enough. Unlinking from the last full target resumes it at once.
#[test]
fn a_source_waits_for_every_full_local_target_and_resumes_when_unlinked() {
    let (mut e, now, l) = listener(1000);
    let (a, b, c) = (
        accept(&mut e, now, l, 1),
        accept(&mut e, now, l, 2),
        accept(&mut e, now, l, 3),
    );
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    let to_c = e.link(a, LinkTarget::Local(c), None, None).unwrap();
    evs(&mut e);
    let pause_events = |ev: &[Event]| {
        ev.iter()
            .filter_map(|e| match e {
                Event::Pause { pipe } if *pipe == a => Some(true),
                Event::Resume { pipe } if *pipe == a => Some(false),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    e.handle_stream(now, a, &[7; 1500]);
    assert_eq!(pause_events(&evs(&mut e)), [true], "both targets are full");
    // b drains; c is still full.
    let n = e.peek_transmit(b).unwrap().0.len();
    e.advance_transmit(now, b, n);
    assert_eq!(e.out_bytes(b), 0);
    assert_eq!(pause_events(&evs(&mut e)), [], "c is still full");
    // Unlinked from c: nothing full is left to wait for.
    e.unlink(a, to_c).unwrap();
    assert_eq!(pause_events(&evs(&mut e)), [false]);
    // Full again through b alone, then b drains: resumed.
    e.handle_stream(now, a, &[8; 1500]);
    assert_eq!(pause_events(&evs(&mut e)), [true]);
    let n = e.peek_transmit(b).unwrap().0.len();
    e.advance_transmit(now, b, n);
    assert_eq!(pause_events(&evs(&mut e)), [false]);
    assert!(e.within_caps());
}
