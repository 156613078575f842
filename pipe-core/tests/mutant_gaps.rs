//! Tests for gaps cargo-mutants found in pipe-core (see `pipe-core/MUTANTS.md`): each test
//! names the mutant(s) it kills. Engines are driven directly, as in `engine_rules.rs`.

mod world;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pipe_core::{Conf, Engine, Event, Filter, Message, PipeId, RecvError, SubId};
use world::{base_instant, sa};

fn engine() -> (Engine, Instant) {
    (Engine::new(11), base_instant())
}

/// A reliable-UDP pipe on a fresh engine, with `Conf::seed` = `seed`.
fn seeded_reliable(seed: u64) -> (Engine, Instant, PipeId) {
    let (mut e, now) = engine();
    let conf = Conf {
        reliable_udp: true,
        seed,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(sa("10.0.0.2:5")), conf, false)
        .unwrap();
    (e, now, p)
}

fn evs(e: &mut Engine) -> Vec<Event> {
    while e.poll_transmit().is_some() {}
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn msg(data: &'static [u8], from: &str) -> Message {
    Message {
        data: Bytes::from_static(data),
        from: sa(from),
    }
}

/// `Filter::matches` (public, for callers filtering messages themselves) agrees with what a
/// subscription takes: pattern searched anywhere, address with port 0 = any port, IPv4-mapped
/// IPv6 = IPv4, both conditions when both are set.
/// Kills: `sub.rs` `Filter::matches -> bool` with `true` / `false`, and the `||` / `!=`
/// mutants of `matches_parts` when reached through it.
#[test]
fn filter_matches_pattern_address_and_both() {
    let all = Filter::all();
    assert!(all.matches(&msg(b"", "10.0.0.1:1")));

    let pat = Filter::pattern("b.d").unwrap();
    assert!(
        pat.matches(&msg(b"abcde", "10.0.0.1:1")),
        "searched anywhere"
    );
    assert!(!pat.matches(&msg(b"abd", "10.0.0.1:1")));

    let any_port = Filter::from_addr(sa("10.0.0.1:0"));
    assert!(any_port.matches(&msg(b"x", "10.0.0.1:9")));
    assert!(
        any_port.matches(&msg(b"x", "[::ffff:10.0.0.1]:9")),
        "mapped = v4"
    );
    assert!(!any_port.matches(&msg(b"x", "10.0.0.2:9")), "another IP");

    let one_port = Filter::from_addr(sa("10.0.0.1:7"));
    assert!(one_port.matches(&msg(b"x", "10.0.0.1:7")));
    assert!(!one_port.matches(&msg(b"x", "10.0.0.1:8")), "another port");

    let both = Filter::pattern("^U").unwrap().with_addr(sa("10.0.0.1:0"));
    assert!(both.matches(&msg(b"U1", "10.0.0.1:5")));
    assert!(
        !both.matches(&msg(b"V1", "10.0.0.1:5")),
        "address right, pattern wrong"
    );
    assert!(
        !both.matches(&msg(b"U1", "10.0.0.3:5")),
        "pattern right, address wrong"
    );

    // The same answers as a subscription gives.
    let (mut e, now) = engine();
    let p = e
        .open_udp(now, sa("10.0.0.9:1"), None, Conf::default(), false)
        .unwrap();
    let s = e.subscribe(p, both.clone()).unwrap();
    let inputs = [
        ("10.0.0.1:5", &b"U1"[..]),
        ("10.0.0.1:5", b"V1"),
        ("10.0.0.3:5", b"U2"),
        ("[::ffff:10.0.0.1]:6", b"U3"),
    ];
    let mut want = Vec::new();
    for (from, data) in inputs {
        e.handle_datagram(now, p, sa(from), data);
        let m = Message {
            data: Bytes::copy_from_slice(data),
            from: sa(from),
        };
        if both.matches(&m) {
            want.push(m.data);
        }
    }
    evs(&mut e);
    let got: Vec<Bytes> =
        std::iter::from_fn(|| e.recv(p, s).ok().flatten().map(|m| m.data)).collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 2);
}

/// `Stats::ignored` counts exactly the inputs a pipe cannot take: a datagram handed to a TCP
/// pipe, stream bytes handed to a UDP pipe, a datagram after the UDP pipe was closed (while it
/// is still known), stream bytes to a listener. Inputs it takes do not count.
/// Kills: the `ignored += 1` deletions and the `||` / `!=` mutants of the guards in
/// `handle_datagram` and `handle_stream` (`inbound.rs`).
#[test]
fn ignored_counts_exactly_the_inputs_a_pipe_cannot_take() {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:80");
    let u = e
        .open_udp(now, sa("10.0.0.1:5"), Some(peer), Conf::default(), false)
        .unwrap();
    let t = e
        .open_tcp(now, sa("10.0.0.1:6"), peer, Conf::default(), false)
        .unwrap();
    let l = e
        .open_listener(now, sa("10.0.0.1:7"), Conf::default(), false)
        .unwrap();
    evs(&mut e);
    let ignored = |e: &Engine, p: PipeId| e.stats(p).unwrap().ignored;

    e.handle_datagram(now, u, peer, b"ok");
    e.handle_stream(now, t, b"ok");
    assert_eq!((ignored(&e, u), ignored(&e, t)), (0, 0), "taken inputs");
    assert_eq!(e.stats(u).unwrap().received, 1);
    assert_eq!(e.stats(t).unwrap().received, 1);

    e.handle_datagram(now, t, peer, b"x");
    assert_eq!(ignored(&e, t), 1, "a datagram on a TCP pipe");
    assert_eq!(e.stats(t).unwrap().received, 1);
    e.handle_stream(now, u, b"x");
    assert_eq!(ignored(&e, u), 1, "stream bytes on a UDP pipe");
    e.handle_stream(now, l, b"x");
    assert_eq!(ignored(&e, l), 1, "stream bytes on a listener");
    e.handle_datagram(now, l, peer, b"x");
    assert_eq!(ignored(&e, l), 2, "a datagram on a listener");

    // A closed UDP pipe with a message still queued stays known: later datagrams are ignored.
    assert_eq!(e.subscribe(u, Filter::all()), Ok(SubId::ALL));
    e.handle_datagram(now, u, peer, b"queued");
    e.close(now, u);
    evs(&mut e);
    e.handle_datagram(now, u, peer, b"late");
    assert_eq!(ignored(&e, u), 2, "a datagram after the close");
    assert_eq!(
        e.stats(u).unwrap().received,
        2,
        "the late one was not received"
    );
}

/// `Stats::events_dropped` counts message events dropped because the engine's event queue is
/// full (`MAX_EVENTS`), and nothing else: the messages before the cap all have their events.
/// Kills: the `events_dropped += 1` deletion and the `<` mutants of the `MAX_EVENTS` checks
/// on the callback path (`inbound.rs`), and `within_caps`'s `4 × pipes + timers` with `*`,
/// and its count of forgotten pipes with the `!` deleted (counting known pipes with events
/// instead: one here, a bound of `MAX_EVENTS + 8` under the three pipes' 9 events).
#[test]
fn events_dropped_counts_message_events_past_the_event_queue_cap() {
    let (mut e, now) = engine();
    let from: SocketAddr = sa("10.0.0.2:80");
    let conf = Conf {
        max_callback_jobs: 1 << 20,
        max_callback_bytes: 1 << 30,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(from), conf, true)
        .unwrap();
    // The Up event is queued too: MAX_EVENTS - 1 messages fill the queue.
    let cap = pipe_core::MAX_EVENTS;
    for i in 0..cap + 9 {
        e.handle_datagram(now, p, from, &(i as u32).to_be_bytes());
    }
    let st = e.stats(p).unwrap();
    assert_eq!(st.received, (cap + 9) as u64);
    assert_eq!(st.events_dropped, 10, "one Up + {} messages fit", cap - 1);
    // Lifecycle events are never dropped: the oracle allows a few per pipe past the cap,
    // forgotten pipes with events still queued included (three here: with only the known
    // pipes counted, `MAX_EVENTS + 9` events failed a bound of `MAX_EVENTS + 4`).
    for port in [6, 7, 8] {
        let b = e
            .open_udp(
                now,
                sa(&format!("10.0.0.1:{port}")),
                Some(from),
                Conf::default(),
                false,
            )
            .unwrap();
        e.close(now, b);
        assert!(e.within_caps(), "{} pipes", e.pipe_count());
    }
    assert_eq!(e.pipe_count(), 1, "the closed pipes are forgotten");
    let events = evs(&mut e);
    let messages = events
        .iter()
        .filter(|ev| matches!(ev, Event::Message { .. }))
        .count();
    assert_eq!(messages, cap - 1);
    assert_eq!(
        events.len(),
        cap + 9,
        "and each closed pipe's Up, End, Released"
    );
    // With room again, the next message has its event.
    e.handle_datagram(now, p, from, b"again");
    assert_eq!(e.stats(p).unwrap().events_dropped, 10);
    assert!(matches!(&evs(&mut e)[..], [Event::Message { .. }]));
}

/// `Conf::seed` mixes into a reliable pipe's sequence numbers: on engines seeded alike, every
/// conf seed gives its own first sequence number, and the same seed the same one.
/// Kills: `engine/mod.rs` `Engine::insert` `^` with `|` (`rng ^ conf.seed`: with `|`,
/// seeds that differ only in bits the engine's draw has set collide).
#[test]
fn conf_seed_gives_each_pipe_its_own_sequence() {
    let first_id = |seed: u64| {
        let (mut e, now, p) = seeded_reliable(seed);
        e.send_reliable(now, p, b"x", None).unwrap()
    };
    let ids: Vec<_> = (0..64u64).map(first_id).collect();
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    assert_eq!(first_id(5), ids[5], "deterministic");
}

/// After the end, a drained subscription says `Closed` even while the pipe is still known
/// because another subscription holds messages; that one drains, then says `Closed` too.
/// Kills: `engine/mod.rs` `Engine::recv` match guard `open` with `true`.
#[test]
fn a_drained_subscription_of_an_ended_pipe_is_closed_while_another_still_holds_messages() {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:5");
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(peer), Conf::default(), false)
        .unwrap();
    let a = e.subscribe(p, Filter::pattern("^a").unwrap()).unwrap();
    let b = e.subscribe(p, Filter::pattern("^b").unwrap()).unwrap();
    e.handle_datagram(now, p, peer, b"a1");
    evs(&mut e);
    assert_eq!(e.recv(p, b), Ok(None), "open: an empty queue is just empty");
    e.close(now, p);
    evs(&mut e);
    assert_eq!(e.recv(p, b), Err(pipe_core::RecvError::Closed));
    assert!(e.state(p).is_some(), "still known: a's queue holds a1");
    assert_eq!(
        e.recv(p, a).unwrap().unwrap().data,
        Bytes::from_static(b"a1")
    );
    assert_eq!(e.recv(p, a), Err(pipe_core::RecvError::Closed));
}

/// The driver's forward results are counted one by one: `Ok` in `forwarded`, an error in
/// `forward_failed`; a `Closed` target is unlinked (`Unlinked`), another error keeps the link.
/// Kills: `engine/mod.rs` `Engine::handle_forward_result` `+=` with `*=` (and `-=`).
#[test]
fn forward_results_are_counted_and_a_closed_target_unlinks() {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:5");
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(peer), Conf::default(), false)
        .unwrap();
    let target = pipe_core::LinkTarget::External {
        kind: pipe_core::Kind::Udp,
        open: true,
    };
    let l = e.link(p, target, None, None).unwrap();
    let token = e.link_token(p, l).unwrap();
    e.handle_datagram(now, p, peer, b"m");
    let forwards = evs(&mut e)
        .into_iter()
        .filter(|ev| matches!(ev, Event::Forward { target, .. } if *target == token))
        .count();
    assert_eq!(forwards, 1);
    let counts = |e: &Engine| {
        let s = e.stats(p).unwrap();
        (s.forwarded, s.forward_failed)
    };
    e.handle_forward_result(p, l, Ok(()));
    e.handle_forward_result(p, l, Ok(()));
    assert_eq!(counts(&e), (2, 0));
    e.handle_forward_result(p, l, Err(pipe_core::SendError::WouldBlock));
    assert_eq!(counts(&e), (2, 1));
    assert_eq!(evs(&mut e), [], "a full target keeps the link");
    assert_eq!(e.link_token(p, l), Some(token));
    e.handle_forward_result(p, l, Err(pipe_core::SendError::Closed));
    assert_eq!(counts(&e), (2, 2));
    assert_eq!(
        evs(&mut e),
        [Event::Unlinked {
            pipe: p,
            link: l,
            target: token
        }]
    );
    assert_eq!(e.link_token(p, l), None);
}

/// Draining one connection's queue under the server budget resumes every connection the
/// crossing paused, at once.
/// Written for run 2's `engine/mod.rs:1281:18` in `Engine::settle` (0e28cf5), recorded then as
/// `held != old` with `==`; the mutant at that position is in fact `pause != paused` with `==`,
/// which no test can kill (equivalent: see `pipe-core/MUTANTS.md`). It does kill `held != old`
/// with `==` (1407:17 on d9b3df5), as do `engine_deadlines`' budget tests.
#[test]
fn draining_under_the_server_budget_resumes_every_paused_connection_at_once() {
    let (mut e, now) = engine();
    let conf = Conf {
        max_server_bytes: 10_000,
        ..Conf::default()
    };
    let listen = sa("10.0.0.1:80");
    let l = e.open_listener(now, listen, conf, false).unwrap();
    let a = e.handle_accepted(now, l, listen, sa("10.0.0.2:1")).unwrap();
    let b = e.handle_accepted(now, l, listen, sa("10.0.0.2:2")).unwrap();
    for c in [a, b] {
        assert_eq!(e.subscribe(c, Filter::all()), Ok(SubId::ALL));
    }
    evs(&mut e);
    e.handle_stream(now, a, &[1; 6000]);
    e.handle_stream(now, b, &[2; 4000]);
    let paused: std::collections::HashSet<PipeId> = evs(&mut e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Pause { pipe } => Some(pipe),
            _ => None,
        })
        .collect();
    assert_eq!(paused, [a, b].into_iter().collect());
    // a's queue is read: 4,000 of 10,000 bytes held, both read again.
    assert_eq!(e.recv(a, SubId::ALL).unwrap().unwrap().data.len(), 6000);
    let resumed: std::collections::HashSet<PipeId> = evs(&mut e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Resume { pipe } => Some(pipe),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, [a, b].into_iter().collect());
}

/// A reliable-UDP pipe with `max_out_bytes` = `max_out` that was fed `frames` one-byte data
/// frames (sequence numbers 1, 2, ...) whose ACKs the driver has not written yet.
fn unacked_data_frames(max_out: usize, frames: usize) -> (Engine, PipeId) {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:5");
    let conf = Conf {
        reliable_udp: true,
        max_out_bytes: max_out,
        max_qsize: 1,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(peer), conf, false)
        .unwrap();
    for seq in 1..=frames as u64 {
        let frame = pipe_core::rudp::encode(seq, pipe_core::rudp::FLAG_DATA, b"x");
        e.handle_datagram(now, p, peer, &frame);
    }
    (e, p)
}

/// Engine-made transmits (here ACKs of reliable-UDP data frames the driver has not written
/// yet) are queued up to exactly `4 × max_out_bytes + MAX_UDP_V6` bytes; the ones past it are
/// dropped and counted in `out_dropped`.
/// Kills: `engine/mod.rs` `Engine::push_internal` `>` with `==` / `>=`, `+` with `*`, `*` with `/`;
/// and the `within_caps` mutants that shrink its outbound bound (`* with +`, `+ 64` with `- 64`)
/// below what the engine really queues.
#[test]
fn engine_made_transmits_stop_at_exactly_their_hard_cap() {
    // 4 × 41 + MAX_UDP_V6 is a multiple of 9: the last ACK that fits fills the cap exactly;
    // and the oracle's slack (64 + one ACK + max_out) is tight.
    let max_out = 41;
    let cap = 4 * max_out + pipe_core::MAX_UDP_V6;
    let fit = cap / 9; // an ACK is 9 bytes
    let total = fit + 25;
    let (mut e, p) = unacked_data_frames(max_out, total);
    let st = e.stats(p).unwrap();
    assert_eq!(st.received, total as u64, "every frame delivered");
    assert_eq!(e.out_bytes(p), fit * 9);
    assert_eq!(fit * 9, cap, "filled to exactly the cap");
    assert_eq!(st.out_dropped, (total - fit) as u64);
    // `within_caps` (the property tests' oracle) allows exactly this much.
    assert!(e.within_caps());
    let mut acks = 0;
    while let Some(t) = e.poll_transmit() {
        assert_eq!(t.payload.len(), 9);
        acks += 1;
    }
    assert_eq!(acks, fit);
}

/// A subscription queue's byte cap is inclusive: a message of exactly `max_queue_bytes` is
/// queued (alone, after dropping the older ones); one byte more is dropped as oversize.
/// Kills: `sub.rs` `Queue::push` `len > self.max_bytes` with `>=`.
#[test]
fn a_message_of_exactly_the_queue_byte_cap_is_queued() {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:5");
    let conf = Conf {
        max_queue_bytes: 8,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(peer), conf, false)
        .unwrap();
    assert_eq!(e.subscribe(p, Filter::all()), Ok(SubId::ALL));
    e.handle_datagram(now, p, peer, b"abc");
    e.handle_datagram(now, p, peer, b"12345678");
    assert_eq!(e.stats(p).unwrap().queue_dropped, 1, "abc made room");
    e.handle_datagram(now, p, peer, b"123456789");
    assert_eq!(e.stats(p).unwrap().queue_dropped, 2, "9 bytes never fit");
    evs(&mut e);
    assert_eq!(
        e.recv(p, SubId::ALL).unwrap().unwrap().data,
        Bytes::from_static(b"12345678")
    );
    assert_eq!(e.recv(p, SubId::ALL), Ok(None));
}

/// Two `Tls` values are equal when they share one rustls config (and, for clients, name the
/// same server), so a `Conf` compares equal to its clone and not to a fresh configuration.
/// Kills: `tls.rs` `<impl PartialEq for Tls>::eq` with `false`, and `n == m` with `!=`.
#[test]
fn tls_equality_is_the_shared_config_and_the_name() {
    use pipe_core::{Tls, TlsClient};
    let name = |s: &str| rustls::pki_types::ServerName::try_from(s.to_owned()).unwrap();
    let plain = TlsClient::with_roots([]).build().unwrap();
    assert_eq!(plain, plain.clone());
    let named = TlsClient::with_roots([])
        .server_name(name("a.example"))
        .build()
        .unwrap();
    assert_eq!(named, named.clone());
    let Tls::Client { config, .. } = &named else {
        panic!("a client")
    };
    let other_name = Tls::Client {
        config: config.clone(),
        name: Some(name("b.example")),
    };
    assert_ne!(named, other_name, "same config, another name");
    assert_ne!(
        plain,
        TlsClient::with_roots([]).build().unwrap(),
        "another config"
    );
    let conf = Conf {
        tls: Some(named.clone()),
        ..Conf::default()
    };
    assert_eq!(conf, conf.clone());
    assert_ne!(
        conf,
        Conf {
            tls: Some(other_name),
            ..Conf::default()
        }
    );
}

/// `within_caps` holds for an engine that forgot every pipe but still has their last events
/// queued (End, Released).
/// (The `within_caps` mutant `4 × pipes + timers` with `*` is killed by the events test above.)
#[test]
fn within_caps_counts_the_events_of_forgotten_pipes() {
    let (mut e, now) = engine();
    let p = e
        .open_udp(
            now,
            sa("10.0.0.1:5"),
            Some(sa("10.0.0.2:5")),
            Conf::default(),
            false,
        )
        .unwrap();
    e.close(now, p);
    assert_eq!(
        e.pipe_count(),
        0,
        "a closed UDP pipe with nothing queued is forgotten"
    );
    assert!(e.within_caps());
    assert_eq!(evs(&mut e).len(), 3, "Up, End, Released");
}

/// Stream mode pauses reading when one more read (at least 16 KiB) would not fit the queue's
/// byte cap, and not one byte earlier: queued bytes + one read exactly at the cap still read.
/// Kills: `sub.rs` `Queue::would_drop`, `>` with `>=` / `==` and `+` with `*` in its byte term
/// (`self.bytes + len > self.max_bytes`).
#[test]
fn stream_mode_pauses_at_exactly_the_queue_byte_cap_less_one_read() {
    let (mut e, now) = engine();
    let read = 1 << 14; // `reader_limit` below 16 KiB still counts a read as 16 KiB
    let conf = Conf {
        reader_limit: 512,
        max_queue_bytes: read + 10,
        ..Conf::default()
    };
    let p = e
        .open_tcp(now, sa("10.0.0.2:5000"), sa("10.0.0.1:80"), conf, false)
        .unwrap();
    evs(&mut e);
    e.keep_writable(p, true);
    let paused = |ev: &[Event]| {
        ev.iter()
            .any(|x| matches!(x, Event::Pause { pipe } if *pipe == p))
    };
    e.handle_stream(now, p, &[7; 10]);
    assert!(
        !paused(&evs(&mut e)),
        "10 queued + one read = the cap exactly: still fits"
    );
    e.handle_stream(now, p, b"x");
    assert!(
        paused(&evs(&mut e)),
        "11 queued + one read is over the cap: pause"
    );
    assert_eq!(e.stats(p).unwrap().queue_dropped, 0);
}

/// The peer's FIN wakes readers with exactly one `Readable`: one when none was pending (a
/// reader waiting on an empty queue learns that nothing more comes), none more when one
/// already is.
/// Kills: `engine/half.rs` `peer_fin`, delete `!` in `if !p.readable_pending`.
#[test]
fn the_peer_fin_wakes_readers_with_exactly_one_readable() {
    let (mut e, now) = engine();
    let readables = |ev: &[Event], p: PipeId| {
        ev.iter()
            .filter(|x| matches!(x, Event::Readable { pipe } if *pipe == p))
            .count()
    };
    let open = |e: &mut Engine, port: u16| {
        let local = SocketAddr::from(([10, 0, 0, 2], port));
        let p = e
            .open_tcp(now, local, sa("10.0.0.1:80"), Conf::default(), false)
            .unwrap();
        e.keep_writable(p, true);
        evs(e);
        p
    };

    let idle = open(&mut e, 5000);
    e.handle_peer_closed(now, idle, false);
    assert_eq!(readables(&evs(&mut e), idle), 1, "nothing was pending");

    let busy = open(&mut e, 5001);
    e.handle_stream(now, busy, b"data");
    e.handle_peer_closed(now, busy, false);
    assert_eq!(readables(&evs(&mut e), busy), 1, "one was already pending");
}

/// A closed listener still known (its last connection, handed out, still has output queued)
/// answers `accept` with `Closed` once its queue is drained, not `Ok(None)`.
/// Kills: `engine/mod.rs` `Engine::pop_accepted` match guard `open` with `true`.
#[test]
fn a_closed_listener_with_a_drained_queue_pops_closed() {
    let (mut e, now) = engine();
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    assert_eq!(e.pop_accepted(l), Ok(None), "open, nothing waiting");
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:5000"))
        .unwrap();
    e.send(now, c, b"unsent", None).unwrap(); // keeps `c`, so `l`, known after the close
    e.close(now, l);
    assert_eq!(e.pop_accepted(l), Ok(Some(c)));
    assert!(e.stats(l).is_some(), "the listener is still known");
    assert_eq!(e.pop_accepted(l), Err(RecvError::Closed));
}

/// Reliable-UDP sequence numbers skip 0 when they wrap (a `Conf::seed` that puts the first
/// one at `u64::MAX`).
/// Kills: `engine/mod.rs` `Engine::send_reliable` `||` with `&&` in the skip loop.
#[test]
fn reliable_sequence_numbers_skip_zero_when_they_wrap() {
    let first_ids = |seed: u64| {
        let (mut e, now, p) = seeded_reliable(seed);
        let a = e.send_reliable(now, p, b"a", None).unwrap();
        let b = e.send_reliable(now, p, b"b", None).unwrap();
        (a.0, b.0)
    };
    let (draw, _) = first_ids(0); // the engine's own draw for its first pipe
    assert_ne!(draw, 0);
    assert_eq!(first_ids(draw ^ u64::MAX), (u64::MAX, 1));
}

/// Unsubscribing another filter on an accepted connection still waiting for `accept()` leaves
/// its fallback subscription a fallback: a message a link took is still not queued a second
/// time for `accept()`'s reader.
/// Kills: `engine/mod.rs` `Engine::unsubscribe` `==` with `!=` in `if sub == SubId::ALL`
/// (which cleared `fallback_all` when any other subscription went).
#[test]
fn unsubscribing_another_filter_keeps_an_accepted_connections_fallback() {
    let (mut e, now) = engine();
    let listen = sa("10.0.0.1:80");
    let l = e
        .open_listener(now, listen, Conf::default(), false)
        .unwrap();
    let a = e.handle_accepted(now, l, listen, sa("10.0.0.2:1")).unwrap();
    let b = e.handle_accepted(now, l, listen, sa("10.0.0.2:2")).unwrap();
    let s = e.subscribe(a, Filter::pattern("^never").unwrap()).unwrap();
    assert_ne!(s, SubId::ALL);
    assert_eq!(e.unsubscribe(a, s), Ok(()));
    e.link(a, pipe_core::LinkTarget::Local(b), None, None)
        .unwrap();
    e.handle_stream(now, a, b"forwarded");
    e.handle_stream(now, a, b"forwarded too");
    evs(&mut e);
    assert_eq!(e.stats(a).unwrap().forwarded, 2);
    assert_eq!(e.pop_accepted(l), Ok(Some(a)));
    assert_eq!(
        e.recv(a, SubId::ALL),
        Ok(None),
        "what the link took is not queued for accept() as well"
    );
    assert_eq!(e.stats(a).unwrap().queued, 0);
}

/// `abandon` counts the messages it drops from the pipe's subscriptions in `queue_dropped`
/// (read while the pipe is still known: its output is not flushed yet).
/// Kills: `engine/mod.rs` `Engine::abandon` `+=` with `*=` (and `-=`).
#[test]
fn abandon_counts_the_unread_messages_it_drops() {
    let (mut e, now) = engine();
    let p = e
        .open_tcp(
            now,
            sa("10.0.0.2:5000"),
            sa("10.0.0.1:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    evs(&mut e);
    e.handle_stream(now, p, b"one");
    e.handle_stream(now, p, b"two");
    e.handle_stream(now, p, b"three");
    assert_eq!(e.stats(p).unwrap().queued, 3);
    assert_eq!(e.stats(p).unwrap().queue_dropped, 0);
    e.send(now, p, b"unsent", None).unwrap(); // keeps `p` known after the abandon
    e.abandon(now, p);
    let st = e.stats(p).expect("still known: its output is queued");
    assert_eq!(st.queue_dropped, 3);
    assert_eq!(e.recv(p, SubId::ALL), Err(RecvError::Closed));
}

/// Host names are checked at their limits (253 bytes in all without a trailing dot, 63 a
/// label; letters, digits, `-` and `_`; no empty label, none starting with `-`; not digits and
/// dots only), kept lowercased, and need resolving; an IPv6-looking text that is not an
/// address is malformed, not a bad name.
/// Kills: `addr.rs` `check_name` (its length, label and character tests), and
/// `parse_ip_with_scope` `||` with `&&` / `!=` with `==` in `if scope != 0 || ip_text.contains(':')`.
#[test]
fn dest_host_names_are_checked_at_their_limits() {
    use pipe_core::{Dest, DestError, Host};
    let bad = |h: &str| matches!(Dest::new(h, 80), Err(DestError::BadHostName(_)));

    let d = Dest::new("Example.COM", 80).unwrap();
    assert_eq!(d.host(), &Host::Name("example.com".into()));
    assert_eq!((d.port(), d.scope_id(), d.socket_addr()), (80, 0, None));
    assert_eq!(d.to_string(), "example.com:80");
    assert_eq!(Dest::parse("example.com:80"), Ok(d));
    assert!(Dest::new("example.com.", 80).is_ok(), "a trailing dot");
    assert!(
        Dest::new("_sip.a-b.c1", 80).is_ok(),
        "`_` and `-` inside labels"
    );
    assert!(Dest::new("1.2.3a", 80).is_ok(), "not digits only");

    let (l63, l64) = ("a".repeat(63), "a".repeat(64));
    assert!(Dest::new(&format!("{l63}.com"), 80).is_ok());
    assert!(bad(&format!("{l64}.com")), "a 64-byte label");
    let n253 = format!("{l63}.{l63}.{l63}.{}", "a".repeat(61));
    assert_eq!(n253.len(), 253);
    assert!(Dest::new(&n253, 80).is_ok());
    assert!(Dest::new(&format!("{n253}."), 80).is_ok());
    assert!(bad(&format!("{n253}a")), "254 bytes");

    for name in [
        "",
        ".",
        "a..b",
        "-a.com",
        "a b.com",
        "a/b",
        "1.2.3",
        "1.2.3.4.5",
    ] {
        assert!(bad(name), "{name:?}");
    }
    for text in ["fe80::zz", "::g", "1:2"] {
        assert_eq!(
            Dest::new(text, 80),
            Err(DestError::Malformed(text.into())),
            "{text:?}"
        );
    }
    assert!(matches!(
        Dest::parse("fe80::1:80"),
        Err(DestError::Malformed(_))
    ));
    assert_eq!(Dest::parse("example.com"), Err(DestError::MissingPort));
}

/// `Rng` is SplitMix64 (the published sequence for seed 0), `fill` takes its bytes little-end
/// first, `below(n)` covers `0..n` and nothing else, and `chance` is never true at 0 and
/// always true at 1, even on the one draw of all zero bits.
/// Kills: `rng.rs` `next_u64` (each `^` / `>>`), `fill` with `()`, `below` (`*`, `>>`),
/// `chance` (`>` with `<` / `==`, `/`, `-`, the shifts), and the `>=` of `chance` itself.
#[test]
fn rng_is_splitmix64_and_its_helpers_keep_their_ranges() {
    use pipe_core::rng::Rng;
    let mut r = Rng::new(0);
    let firsts = [r.next_u64(), r.next_u64(), r.next_u64()];
    assert_eq!(
        firsts,
        [
            0xE220_A839_7B1D_CDAF,
            0x6E78_9E6A_A1B9_65F4,
            0x06C4_5D18_8009_454F
        ]
    );

    let mut bytes = [0u8; 12];
    Rng::new(0).fill(&mut bytes);
    assert_eq!(bytes[..8], firsts[0].to_le_bytes());
    assert_eq!(bytes[8..], firsts[1].to_le_bytes()[..4]);

    let mut r = Rng::new(7);
    let mut seen = [0u32; 10];
    for _ in 0..1000 {
        let v = r.below(10);
        assert!(v < 10);
        seen[v as usize] += 1;
    }
    assert!(seen.iter().all(|&n| (50..150).contains(&n)), "{seen:?}");

    let mut r = Rng::new(7);
    let heads = (0..1000).filter(|_| r.chance(0.25)).count();
    assert!((200..300).contains(&heads), "{heads} of 1000 at 0.25");
    let mut r = Rng::new(7);
    assert!((0..1000).all(|_| !r.chance(0.0)));
    assert!((0..1000).all(|_| r.chance(1.0)));
    // The seed whose first draw is 0 (SplitMix64's state is 0 after one step).
    let zero = 0u64.wrapping_sub(0x9E37_79B9_7F4A_7C15);
    assert_eq!(Rng::new(zero).next_u64(), 0);
    assert!(Rng::new(zero).chance(1.0), "p = 1 is always true");
    assert!(!Rng::new(zero).chance(0.0), "p = 0 is never true");
}

/// A STUN response takes only its own transaction's queued requests with it: another
/// transaction's request still waiting to be sent stays queued. `StunTransmit`'s `Debug`
/// shows the payload's length, not its bytes.
/// Kills: `stun/client.rs` `StunClient::handle_input` `!=` with `==` in the `transmits.retain`,
/// and `<impl Debug for StunTransmit>::fmt` with `Ok(Default::default())`.
#[test]
fn a_stun_response_drops_only_its_own_queued_requests() {
    use pipe_core::stun::{
        decode, Attribute, Class, Message, Method, StunClient, StunClientConfig, StunEvent,
        Transport,
    };
    let now = base_instant();
    let (s1, s2, me) = (
        sa("198.51.100.1:3478"),
        sa("198.51.100.2:3478"),
        sa("192.0.2.7:5555"),
    );
    let mut c = StunClient::new(StunClientConfig::default(), 7);
    let a = c.start_binding(now, s1, Transport::Udp).unwrap();
    let b = c.start_binding(now, s2, Transport::Udp).unwrap();
    let mut ok = Message::new(Class::Success, Method::Binding, a);
    ok.attributes.push(Attribute::XorMappedAddress(me));
    c.handle_input(now, s1, &ok.encode());
    assert!(
        matches!(c.poll_event(), Some(StunEvent::Success { id, mapped, .. }) if id == a && mapped == me)
    );
    let t = c.poll_transmit().expect("b's request is still queued");
    assert_eq!(t.dest, s2);
    assert_eq!(decode(&t.payload).unwrap().transaction_id, b);
    assert!(
        c.poll_transmit().is_none(),
        "a's request went with its answer"
    );
    assert_eq!(
        format!("{t:?}"),
        format!(
            "StunTransmit {{ dest: {s2}, transport: Udp, len: {} }}",
            t.payload.len()
        )
    );
}

/// The STUN client's two output queues hold 256 entries each: one more drops the oldest and
/// counts it in `dropped_queue_overflow`; while either queue holds something, `poll_timeout`
/// is the time of the last input (the driver must drain now), not the next deadline.
/// Kills: `stun/client.rs` `push_transmit` and `push_event` `+=` with `-=` / `*=`, and
/// `poll_timeout` `||` with `&&`.
#[test]
fn stun_client_queues_drop_their_oldest_past_256_and_ask_to_be_drained() {
    use pipe_core::stun::{decode, StunClient, StunClientConfig, StunEvent, Transport};
    use std::time::Duration;
    let now = base_instant();
    let mut conf = StunClientConfig::default();
    conf.max_transactions = 300;
    conf.max_outstanding_per_server = 300;
    conf.tcp_timeout = Duration::from_secs(1);
    let server = sa("198.51.100.1:3478");

    let mut c = StunClient::new(conf.clone(), 1);
    let first = c.start_binding(now, server, Transport::Udp).unwrap();
    assert_eq!(c.poll_timeout(), Some(now), "a request waits to be sent");
    for _ in 1..257 {
        c.start_binding(now, server, Transport::Udp).unwrap();
    }
    assert_eq!(c.stats().dropped_queue_overflow, 1);
    let sent: Vec<_> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(sent.len(), 256);
    assert_ne!(decode(&sent[0].payload).unwrap().transaction_id, first);
    assert_eq!(
        c.poll_timeout(),
        Some(now + Duration::from_millis(500)),
        "drained: the first retransmission"
    );

    let mut c = StunClient::new(conf, 2);
    let first = c.start_binding(now, server, Transport::Tcp).unwrap();
    for _ in 1..257 {
        c.start_binding(now, server, Transport::Tcp).unwrap();
    }
    while c.poll_transmit().is_some() {}
    assert_eq!(
        c.stats().dropped_queue_overflow,
        1,
        "the transmit of the 257th"
    );
    let later = now + Duration::from_secs(1);
    c.handle_timeout(later);
    assert_eq!(c.stats().dropped_queue_overflow, 2, "and now its timeout");
    assert_eq!(c.poll_timeout(), Some(later), "events wait to be taken");
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(events.len(), 256);
    assert_ne!(events[0], StunEvent::Timeout { id: first });
    assert_eq!(c.poll_timeout(), None);
}

/// `Debug` of `EncodeOptions` never prints the MESSAGE-INTEGRITY key; a `TransactionId`
/// prints as its 24 hex digits, in `Debug` and `Display`.
/// Kills: `stun/codec.rs` `<impl Debug for EncodeOptions>::fmt` and `<impl Debug for
/// TransactionId>::fmt` with `Ok(Default::default())`.
#[test]
fn stun_debug_output_redacts_the_key_and_shows_ids_in_hex() {
    use pipe_core::stun::{EncodeOptions, TransactionId};
    let opts = EncodeOptions {
        integrity_key: Some(b"hunter2"),
        fingerprint: true,
    };
    assert_eq!(
        format!("{opts:?}"),
        "EncodeOptions { integrity_key: Some(\"<redacted>\"), fingerprint: true }"
    );
    let id = TransactionId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xab, 0xff]);
    assert_eq!(id.to_string(), "00010203040506070809abff");
    assert_eq!(format!("{id:?}"), "TransactionId(00010203040506070809abff)");
}

/// A lookup is finished only once it has its result; its error lists each server with its
/// failure, comma-separated, in the configured order.
/// Kills: `stun/lookup.rs` `ExternalLookup::is_finished` with `true`, and `>` with `>=` / `==`
/// in `<impl Display for List>::fmt` (the separator).
#[test]
fn a_lookup_error_lists_every_server_and_finishes_only_with_its_result() {
    use pipe_core::stun::{ExternalLookup, LookupConfig, LookupError};
    use std::io::ErrorKind;
    let now = base_instant();
    let (s1, s2) = (sa("198.51.100.1:3478"), sa("198.51.100.2:3478"));
    let mut l = ExternalLookup::new(LookupConfig::new(vec![s1, s2]), 1);
    assert!(!l.is_finished(), "not started");
    l.start(now);
    assert_eq!(l.in_flight(), 2);
    assert!(!l.is_finished(), "asking");
    l.handle_unreachable(now, s1, ErrorKind::NetworkUnreachable);
    assert!(!l.is_finished(), "one server left");
    l.handle_unreachable(now, s2, ErrorKind::HostUnreachable);
    assert!(l.is_finished());
    let err = l.poll_result().unwrap().unwrap_err();
    assert!(matches!(err, LookupError::Unreachable { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "no STUN server is reachable: {s1} unreachable ({}), {s2} unreachable ({})",
            ErrorKind::NetworkUnreachable,
            ErrorKind::HostUnreachable
        )
    );
}

/// NAT discovery's three id streams (mapping socket, filtering socket, hairpin probe) never
/// share a transaction id, whatever the key (all zero bits, all one bits): a server that
/// caches answers by id (RFC 8489 §6.3.1) must not answer one test with another's mapping.
/// Kills: `stun/nat.rs` `NatDiscovery::with_key` `^=` with `&=` (zero key) / `|=` (ones key)
/// in the key derivation.
#[test]
fn nat_discovery_never_reuses_a_transaction_id_across_its_sockets() {
    use pipe_core::stun::{
        decode, Attribute, Class, Message, Method, NatConfig, NatDiscovery, NatSocket,
    };
    let now = base_instant();
    let (server, other) = (sa("198.51.100.1:3478"), sa("198.51.100.2:3479"));
    let (local_m, local_f) = (sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    for key in [[0; 32], [0xFF; 32]] {
        let mut d = NatDiscovery::with_key(NatConfig::new(vec![server]), key);
        d.start(now, local_m, local_f);
        let mut ids = Vec::new();
        let first = d.poll_transmit().expect("test I");
        assert_eq!((first.socket, first.dest), (NatSocket::Mapping, server));
        let test1 = decode(&first.payload).unwrap().transaction_id;
        ids.push(test1);
        assert!(d.poll_transmit().is_none());
        let mut ok = Message::new(Class::Success, Method::Binding, test1);
        ok.attributes
            .push(Attribute::XorMappedAddress(sa("203.0.113.9:5000")));
        ok.attributes.push(Attribute::OtherAddress(other));
        d.handle_datagram(now, NatSocket::Mapping, server, &ok.encode());
        let mut sockets = Vec::new();
        while let Some(t) = d.poll_transmit() {
            sockets.push(t.socket);
            ids.push(decode(&t.payload).unwrap().transaction_id);
        }
        let on = |s| sockets.iter().filter(|x| **x == s).count();
        assert_eq!((on(NatSocket::Mapping), on(NatSocket::Filtering)), (3, 3));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }
}

/// The NAT classes print as P2PD names them, with P2PD's numbers.
/// Kills: `stun/nat.rs` `<impl Display for NatClass>::fmt` with `Ok(Default::default())`.
#[test]
fn nat_classes_print_their_names_and_p2pd_codes() {
    use pipe_core::stun::NatClass::*;
    let all = [
        (OpenInternet, "open internet", 1),
        (SymmetricUdpFirewall, "symmetric UDP firewall", 2),
        (FullCone, "full cone", 3),
        (Restricted, "restricted", 4),
        (PortRestricted, "port restricted", 5),
        (Symmetric, "symmetric", 6),
        (Blocked, "blocked", 7),
    ];
    for (class, name, code) in all {
        assert_eq!(
            (class.to_string().as_str(), class.p2pd_code()),
            (name, code)
        );
    }
}

/// Drive a NAT discovery whose servers never answer until it reports; returns each request
/// (ms after start, destination) and when the report came.
fn silent_nat_run(
    conf: pipe_core::stun::NatConfig,
) -> (Vec<(u128, SocketAddr)>, u128, pipe_core::stun::NatReport) {
    use pipe_core::stun::NatDiscovery;
    let t0 = base_instant();
    let mut d = NatDiscovery::new(conf, 5);
    assert!(!d.is_finished(), "not started");
    d.start(t0, sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    let mut now = t0;
    let mut sends = Vec::new();
    loop {
        while let Some(t) = d.poll_transmit() {
            sends.push((now.duration_since(t0).as_millis(), t.dest));
        }
        if let Some(r) = d.poll_result() {
            assert!(d.is_finished());
            return (sends, now.duration_since(t0).as_millis(), r.unwrap());
        }
        assert!(!d.is_finished(), "running");
        now = d.poll_timeout().expect("running: a timer");
        d.handle_timeout(now);
    }
}

/// The race asks a further server only while its test (2.75 s with the defaults) can still
/// finish before the deadline, and one whose test ends exactly at the deadline still is.
/// Kills: `stun/nat.rs` `NatDiscovery::race` `||` with `&&`, `>` with `==` / `>=` in
/// `late` (`now >= d || now + test_time > d`), and `NatDiscovery::is_finished` with `true`.
#[test]
fn nat_race_asks_a_server_only_while_its_test_fits_before_the_deadline() {
    use pipe_core::stun::{NatClass, NatConfig};
    use std::time::Duration;
    let servers = vec![
        sa("198.51.100.1:3478"),
        sa("198.51.100.2:3478"),
        sa("198.51.100.3:3478"),
    ];
    let mut conf = NatConfig::new(servers.clone());
    conf.parallel = 1;
    assert_eq!(conf.test_time(), Duration::from_millis(2750));
    let asked = |sends: &[(u128, SocketAddr)]| {
        let mut d: Vec<SocketAddr> = sends.iter().map(|s| s.1).collect();
        d.dedup();
        d
    };

    // 6 s: the second server at 2.75 s (done by 5.5 s), no third (it would end at 8.25 s).
    let (sends, at, report) = silent_nat_run(conf.clone());
    assert_eq!(asked(&sends), servers[..2]);
    assert_eq!(sends.iter().find(|s| s.1 == servers[1]).unwrap().0, 2750);
    assert_eq!((at, report.class), (5500, NatClass::Blocked));

    // 5.5 s: the second server's test ends exactly at the deadline: it is still asked.
    conf.timeout = Duration::from_millis(5500);
    let (sends, at, _) = silent_nat_run(conf);
    assert_eq!(asked(&sends), servers[..2]);
    assert_eq!(at, 5500);
}

/// During the race the filtering socket sends nothing: a send failure reported for it does
/// not fail the server the mapping socket is asking.
/// Kills: `stun/nat.rs` `NatDiscovery::handle_unreachable` `&&` with `||`.
#[test]
fn nat_race_ignores_a_filtering_socket_failure() {
    use pipe_core::stun::{NatConfig, NatDiscovery, NatError, NatSocket};
    use std::io::ErrorKind;
    let now = base_instant();
    let server = sa("198.51.100.1:3478");
    let mut d = NatDiscovery::new(NatConfig::new(vec![server]), 5);
    d.start(now, sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    assert!(d.poll_transmit().is_some());
    d.handle_unreachable(
        now,
        NatSocket::Filtering,
        server,
        ErrorKind::HostUnreachable,
    );
    assert!(
        d.poll_result().is_none() && !d.is_finished(),
        "still asking"
    );
    d.handle_unreachable(now, NatSocket::Mapping, server, ErrorKind::HostUnreachable);
    assert_eq!(
        d.poll_result(),
        Some(Err(NatError::Unreachable(ErrorKind::HostUnreachable)))
    );
}

/// The report's mappings start with test I's (mapping socket's local port → the mapped port
/// the race saw), then each later test's, in order; the CHANGE-REQUEST answers (which come
/// from the server's other address) add none.
/// Kills: `stun/nat.rs` `NatDiscovery::note_mapping` with `()`, `NatDiscovery::tests`
/// `&&` with `||` in `if i != 3 && i != 4`, and `delta_of` `&&` with `||` (`Preserving`
/// needs both two local ports and one offset).
#[test]
fn nat_report_lists_test_one_mapping_first() {
    use pipe_core::stun::{
        decode, Attribute, Class, Message, Method, NatConfig, NatDiscovery, NatSocket,
    };
    use std::time::Duration;
    let now = base_instant();
    let (server, other) = (sa("198.51.100.1:3478"), sa("198.51.100.2:3479"));
    let a2p1 = sa("198.51.100.2:3478");
    let mut d = NatDiscovery::new(NatConfig::new(vec![server]), 5);
    d.start(now, sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    let answer = |req: &[u8], mapped: &str, extra: Option<Attribute>| {
        let id = decode(req).unwrap().transaction_id;
        let mut ok = Message::new(Class::Success, Method::Binding, id);
        ok.attributes.push(Attribute::XorMappedAddress(sa(mapped)));
        ok.attributes.extend(extra);
        ok.encode()
    };
    let t1 = d.poll_transmit().unwrap();
    let reply = answer(
        &t1.payload,
        "203.0.113.9:5000",
        Some(Attribute::OtherAddress(other)),
    );
    d.handle_datagram(now, NatSocket::Mapping, server, &reply);
    let mut replies = Vec::new();
    while let Some(t) = d.poll_transmit() {
        let change = decode(&t.payload)
            .unwrap()
            .attributes
            .iter()
            .find_map(|a| match a {
                Attribute::ChangeRequest { change_ip, .. } => Some(*change_ip),
                _ => None,
            });
        let (from, mapped) = match (t.socket, t.dest, change) {
            (NatSocket::Mapping, dest, _) if dest == a2p1 => (dest, "203.0.113.9:5001"),
            (NatSocket::Mapping, dest, _) if dest == other => (dest, "203.0.113.9:5002"),
            (NatSocket::Filtering, dest, None) => (dest, "203.0.113.9:6000"),
            // "Change IP and port", answered from the other address.
            (NatSocket::Filtering, _, Some(true)) => (other, "203.0.113.9:6001"),
            _ => continue, // "change port" and the hairpin probe go unanswered
        };
        replies.push((t.socket, from, answer(&t.payload, mapped, None)));
    }
    assert_eq!(replies.len(), 4);
    for (socket, from, reply) in replies {
        d.handle_datagram(now, socket, from, &reply);
    }
    d.handle_timeout(now + Duration::from_secs(6));
    let report = d.poll_result().expect("reported by the deadline").unwrap();
    assert_eq!(
        report.mappings,
        [(4000, 5000), (4000, 5001), (4000, 5002), (4001, 6000)]
    );
    assert_eq!(
        report.delta,
        pipe_core::stun::PortDelta::Random,
        "two local ports, but no constant offset: deltas 1, 1, 998"
    );
}

/// A NAT discovery past its race (test I answered with OTHER-ADDRESS by `server`), and the
/// second phase's requests, each with the answer a full-cone NAT in front of an RFC 5780
/// server would bring back (none for the hairpin probe: that is `None`); the filtering
/// socket's mapping is `filtering_mapped`.
#[allow(clippy::type_complexity)]
fn nat_second_phase(
    hairpin: bool,
    filtering_mapped: &str,
) -> (
    pipe_core::stun::NatDiscovery,
    Instant,
    Vec<(pipe_core::stun::NatTransmit, Option<(SocketAddr, Bytes)>)>,
) {
    use pipe_core::stun::{
        decode, Attribute, Class, Message, Method, NatConfig, NatDiscovery, NatSocket,
    };
    let now = base_instant();
    let (server, other) = (sa("198.51.100.1:3478"), sa("198.51.100.2:3479"));
    let mut conf = NatConfig::new(vec![server]);
    conf.hairpin = hairpin;
    let mut d = NatDiscovery::new(conf, 5);
    d.start(now, sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    let answer = |req: &[u8], mapped: &str, extra: Vec<Attribute>| {
        let id = decode(req).unwrap().transaction_id;
        let mut ok = Message::new(Class::Success, Method::Binding, id);
        ok.attributes.push(Attribute::XorMappedAddress(sa(mapped)));
        ok.attributes.extend(extra);
        ok.encode()
    };
    let t1 = d.poll_transmit().unwrap();
    let reply = answer(
        &t1.payload,
        "203.0.113.9:5000",
        vec![Attribute::OtherAddress(other)],
    );
    d.handle_datagram(now, NatSocket::Mapping, server, &reply);
    let mut out = Vec::new();
    while let Some(t) = d.poll_transmit() {
        let msg = decode(&t.payload).unwrap();
        let change = msg.attributes.iter().find_map(|a| match a {
            Attribute::ChangeRequest {
                change_ip,
                change_port,
            } => Some((*change_ip, *change_port)),
            _ => None,
        });
        let reply = match (t.socket, msg.class, change) {
            (_, Class::Request, _) if t.dest == sa("203.0.113.9:5000") => None, // hairpin
            (NatSocket::Mapping, ..) => {
                Some((t.dest, answer(&t.payload, "203.0.113.9:5000", vec![])))
            }
            (NatSocket::Filtering, _, None) => {
                Some((t.dest, answer(&t.payload, filtering_mapped, vec![])))
            }
            (NatSocket::Filtering, _, Some((ip, _))) => {
                let origin = if ip { other } else { sa("198.51.100.1:3479") };
                let origin_attr = vec![Attribute::ResponseOrigin(origin)];
                Some((origin, answer(&t.payload, filtering_mapped, origin_attr)))
            }
        };
        out.push((t, reply));
    }
    (d, now, out)
}

/// The hairpin probe is sent three times (0, 1, 2 RTOs), and the report waits for it: it
/// comes when the probe does (hairpin `Some(true)`), or when the probe's time is up
/// (`Some(false)`, at 1.5 s with the defaults). Once "change IP and port" is answered, the
/// report does not wait for "change port".
/// Kills: `stun/nat.rs` `NatDiscovery::tests` `-=` with `/=` (probe sends), delete `!` in
/// `!h.expired` (`hairpin_pending`), delete `!` in `!both_done`, and `||` with `&&` after
/// `matches!(t.f_both, Test::Pending(_))` (the report must wait for "change IP and port").
#[test]
fn nat_report_waits_for_the_hairpin_probe_but_not_for_change_port() {
    use pipe_core::stun::NatSocket;
    // The probe comes back: the report waits for it.
    let (mut d, now, out) = nat_second_phase(true, "203.0.113.9:6000");
    let mut probe = None;
    for (t, reply) in out {
        match reply {
            Some((from, bytes)) => d.handle_datagram(now, t.socket, from, &bytes),
            None => probe = Some(t),
        }
    }
    assert!(
        d.poll_result().is_none(),
        "every test answered, the probe not yet"
    );
    let probe = probe.expect("a hairpin probe");
    d.handle_datagram(now, NatSocket::Mapping, probe.dest, &probe.payload);
    let r = d.poll_result().expect("the probe came back").unwrap();
    assert_eq!(r.hairpin, Some(true));

    // The probe never comes back: three sends, then the report at its give-up time.
    let (mut d, t0, out) = nat_second_phase(true, "203.0.113.9:6000");
    let mut probes = 0;
    for (t, reply) in out {
        match reply {
            Some((from, bytes)) => d.handle_datagram(t0, t.socket, from, &bytes),
            None => probes += 1,
        }
    }
    let mut now = t0;
    let r = loop {
        if let Some(r) = d.poll_result() {
            break r.unwrap();
        }
        now = d.poll_timeout().unwrap();
        d.handle_timeout(now);
        while let Some(t) = d.poll_transmit() {
            assert_eq!(t.dest, sa("203.0.113.9:5000"), "only the probe again");
            probes += 1;
        }
    };
    assert_eq!(probes, 3);
    assert_eq!(
        (r.hairpin, now.duration_since(t0).as_millis()),
        (Some(false), 1500)
    );

    // No hairpin test; "change port" unanswered: the report comes with the other answers.
    let (mut d, now, out) = nat_second_phase(false, "203.0.113.9:6000");
    for (t, reply) in out {
        let change_port_only = t.socket == NatSocket::Filtering
            && reply
                .as_ref()
                .is_some_and(|(from, _)| *from == sa("198.51.100.1:3479"));
        if let (Some((from, bytes)), false) = (reply, change_port_only) {
            d.handle_datagram(now, t.socket, from, &bytes);
        }
    }
    let r = d
        .poll_result()
        .expect("not waiting on change port")
        .unwrap();
    assert_eq!(r.filtering, pipe_core::stun::Filtering::EndpointIndependent);

    // "Change IP and port" answered last (after "change port"): the report waits for it.
    let (mut d, now, out) = nat_second_phase(false, "203.0.113.9:6000");
    let mut both = None;
    for (t, reply) in out {
        let Some((from, bytes)) = reply else { continue };
        if t.socket == NatSocket::Filtering && from == sa("198.51.100.2:3479") {
            both = Some((from, bytes));
        } else {
            d.handle_datagram(now, t.socket, from, &bytes);
        }
    }
    assert!(d.poll_result().is_none(), "waiting on change IP and port");
    let (from, bytes) = both.unwrap();
    d.handle_datagram(now, NatSocket::Filtering, from, &bytes);
    let r = d.poll_result().unwrap().unwrap();
    assert_eq!(r.filtering, pipe_core::stun::Filtering::EndpointIndependent);
}

/// Mappings a constant distance from their local ports, on two local ports, are
/// `Preserving`; one local port alone cannot show that.
/// Kills: `stun/nat.rs` `delta_of` `>=` with `<` in `distinct_locals >= 2`.
#[test]
fn nat_delta_is_preserving_only_over_two_local_ports() {
    let (mut d, now, out) = nat_second_phase(false, "203.0.113.9:5001");
    for (t, reply) in out {
        if let Some((from, bytes)) = reply {
            d.handle_datagram(now, t.socket, from, &bytes);
        }
    }
    let r = d.poll_result().unwrap().unwrap();
    assert_eq!(r.mappings, [(4000, 5000), (4001, 5001)]);
    assert_eq!(r.delta, pipe_core::stun::PortDelta::Preserving(1000));
    assert_eq!(r.port_preserved, Some(false));
}

/// The STUN server counts what it does: answers, an answer sent from its other address
/// (`answered_changed`), one sent to another port (`answered_response_port`) and a request
/// over the source's rate (`dropped_rate_limited`).
/// Kills: `stun/server.rs` `StunServer::handle_request` `+=` with `*=` on `answered`,
/// `answered_changed`, `answered_response_port` and `dropped_rate_limited`, and `!=` with `==`
/// in `u64::from(to != from)`.
#[test]
fn stun_server_counts_changed_answers_and_rate_limited_drops() {
    use pipe_core::stun::{Attribute, Message, StunServer, StunServerConfig, TransactionId};
    let now = base_instant();
    let (primary, alternate) = (sa("192.0.2.1:3478"), sa("192.0.2.2:3479"));
    let mut conf = StunServerConfig::default();
    conf.alternate = Some((primary, alternate));
    conf.burst = 2;
    conf.rate_per_sec = 1;
    let mut s = StunServer::new(conf);
    let client = sa("203.0.113.5:40000");
    let req = |n: u8, attrs: Vec<Attribute>| {
        let mut m = Message::binding_request(TransactionId([n; 12]));
        m.attributes = attrs;
        m.encode()
    };
    let change = Attribute::ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let r = s.handle_request(now, primary, client, &req(1, vec![change]));
    assert_eq!(r.map(|r| r.from), Some(alternate));
    let r = s.handle_request(now, primary, client, &req(2, vec![]));
    assert_eq!(r.map(|r| r.from), Some(primary));
    assert_eq!(
        s.handle_request(now, primary, client, &req(3, vec![])),
        None
    );
    let st = s.stats();
    assert_eq!(
        (
            st.received,
            st.answered,
            st.answered_changed,
            st.dropped_rate_limited
        ),
        (3, 2, 1, 1)
    );
    assert_eq!(st.answered_response_port, 0);
    // Another source (its own bucket), answered on another port of its IP.
    let other = sa("203.0.113.6:40000");
    let r = s.handle_request(
        now,
        primary,
        other,
        &req(4, vec![Attribute::ResponsePort(40001)]),
    );
    assert_eq!(r.map(|r| r.to), Some(sa("203.0.113.6:40001")));
    let st = s.stats();
    assert_eq!(
        (st.answered, st.answered_changed, st.answered_response_port),
        (3, 1, 1)
    );
}

/// The server's SOFTWARE goes into an answer only if the whole answer stays within twice
/// the request, counted with its real size (4-byte header + value padded to 4).
/// Kills: `stun/server.rs` `attr_len` `*` with `+` (`s.len().div_ceil(4) * 4`).
#[test]
fn stun_server_adds_software_only_within_twice_the_request() {
    use pipe_core::stun::{
        decode, Attribute, Message, StunServer, StunServerConfig, TransactionId,
    };
    let now = base_instant();
    let local = sa("192.0.2.1:3478");
    let mut conf = StunServerConfig::default();
    conf.software = Some("s".repeat(40)); // 44 bytes on the wire
    let mut s = StunServer::new(conf);
    let software = |resp: &[u8]| {
        decode(resp)
            .unwrap()
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::Software(_)))
    };
    for (pad, fits) in [("abcd", false), (&*"p".repeat(20), true)] {
        let mut m = Message::binding_request(TransactionId([7; 12]));
        m.attributes.push(Attribute::Software(pad.into()));
        let req = m.encode();
        let resp = s.handle(now, local, sa("203.0.113.5:40000"), &req).unwrap();
        assert!(
            resp.len() <= 2 * req.len(),
            "{} > 2 × {}",
            resp.len(),
            req.len()
        );
        assert_eq!(software(&resp), fits, "request of {} bytes", req.len());
    }
}

/// The three optional deadlines (`idle_timeout`, `first_message_timeout`,
/// `write_stall_timeout`) may be off or anything from a nanosecond to a day: zero and more
/// than a day are refused, naming the key.
/// Kills: `conf.rs` `Conf::validate` match guards `d.is_zero()` and `d > day` with `false`,
/// and `>` with `==` / `>=` in `d > day`.
#[test]
fn optional_deadlines_are_checked_from_one_nanosecond_to_a_day() {
    use pipe_core::ConfError;
    use std::time::Duration;
    let day = Duration::from_secs(86_400);
    let keys = [
        "idle_timeout",
        "first_message_timeout",
        "write_stall_timeout",
    ];
    for key in keys {
        let with = |d: Option<Duration>| {
            let mut c = Conf::default();
            match key {
                "idle_timeout" => c.idle_timeout = d,
                "first_message_timeout" => c.first_message_timeout = d,
                _ => c.write_stall_timeout = d,
            }
            c.validate()
        };
        assert_eq!(with(None), Ok(()), "{key} off");
        assert_eq!(with(Some(Duration::from_nanos(1))), Ok(()), "{key}");
        assert_eq!(with(Some(day)), Ok(()), "{key} = a day");
        assert_eq!(
            with(Some(Duration::ZERO)),
            Err(ConfError::ZeroDuration { key })
        );
        assert_eq!(
            with(Some(day + Duration::from_nanos(1))),
            Err(ConfError::DurationTooLong { key, max: day })
        );
    }
}

/// A Happy Eyeballs plan shows its order and attempt delay, starts nothing once it has a
/// winner or once every address has started (before the deadline too), and nothing at the
/// deadline even with addresses left.
/// Results for an address with no attempt in flight are ignored.
/// Kills: `connect_plan.rs` `ConnectPlan::order` with an empty slice, `attempt_delay` with
/// `Default::default()`, `poll_start` `||` with `&&` before `now >= self.deadline`, and
/// `slot` `&&` with `||` (an attempt is found by its address *and* being in flight).
#[test]
fn a_connect_plan_starts_nothing_once_won_exhausted_or_out_of_time() {
    use pipe_core::ConnectPlan;
    use std::time::Duration;
    let now = base_instant();
    let ms = Duration::from_millis;
    let (v4, v6, v4b) = (
        sa("192.0.2.1:80"),
        sa("[2001:db8::1]:80"),
        sa("192.0.2.2:80"),
    );
    let plan = |addrs: Vec<SocketAddr>| {
        ConnectPlan::<String>::new(now, addrs, None, ms(250), ms(1000)).unwrap()
    };

    let mut p = plan(vec![v4, v6, v4b]);
    assert_eq!(p.order(), [v6, v4, v4b]);
    assert_eq!(p.attempt_delay(), ms(250));
    assert_eq!(p.poll_start(now), Some(v6));
    assert_eq!(p.poll_start(now + ms(250)), Some(v4));
    assert!(p.handle_connected(v6));
    assert_eq!(p.poll_start(now + ms(500)), None, "won: nothing more");

    let mut p = plan(vec![v4]);
    assert_eq!(p.poll_start(now), Some(v4));
    assert_eq!(p.poll_start(now + ms(300)), None, "every address started");
    assert_eq!(p.poll_timeout(), Some(now + ms(1000)));

    let mut p = plan(vec![v6, v4]);
    assert_eq!(p.poll_start(now), Some(v6));
    assert_eq!(
        p.poll_start(now + ms(1000)),
        None,
        "the deadline, v4 untried"
    );

    // Results for an address not being tried change nothing.
    let mut p = plan(vec![v6, v4]);
    assert_eq!(p.poll_start(now), Some(v6));
    assert!(!p.handle_connected(v4), "v4 was never started");
    p.handle_failed(v4, "not started".to_string());
    assert!(!p.is_done());
    assert_eq!(
        p.poll_start(now + ms(1)),
        None,
        "v6 still in flight: v4 waits"
    );
    assert!(p.handle_connected(v6), "v6 is still in flight");
}

/// `IoError` keeps the wrapped error's chain: its `source()` is the wrapped error's source.
/// Kills: `error.rs` `<impl Error for IoError>::source` with `None`.
#[test]
fn io_error_keeps_the_wrapped_errors_source() {
    use pipe_core::{IoError, SendError};
    use std::error::Error;
    let cause = SendError::Io(IoError::from("the disk is on fire"));
    let wrapped = IoError::new(std::io::Error::other(cause));
    let source = wrapped.source().expect("the chain is kept");
    assert_eq!(source.to_string(), "the disk is on fire");
    assert!(IoError::from("no chain").source().is_none());
}

/// Pipe ids are distinct raw numbers and print as `pipe#N`; `Message` and `Transmit` print
/// their payload's length, not its bytes.
/// Kills: `event.rs` `PipeId::as_u64` with `0` / `1`, `<impl Display for PipeId>::fmt`,
/// `<impl Debug for Message>::fmt` and `<impl Debug for Transmit>::fmt` with
/// `Ok(Default::default())`.
#[test]
fn pipe_ids_messages_and_transmits_print_without_payloads() {
    let (mut e, now) = engine();
    let open = |e: &mut Engine, port: u16| {
        let local = SocketAddr::from(([10, 0, 0, 1], port));
        e.open_udp(now, local, Some(sa("10.0.0.2:9")), Conf::default(), false)
            .unwrap()
    };
    let (a, b) = (open(&mut e, 1), open(&mut e, 2));
    assert_ne!(a.as_u64(), b.as_u64());
    assert_eq!(a.to_string(), format!("pipe#{}", a.as_u64()));
    assert_eq!(format!("{a:?}"), format!("PipeId({})", a.as_u64()));

    let m = msg(b"secret", "10.0.0.7:7");
    assert_eq!(format!("{m:?}"), "Message { len: 6, from: 10.0.0.7:7 }");

    evs(&mut e);
    e.send(now, b, b"hello", None).unwrap();
    let t = e.poll_transmit().expect("the datagram");
    assert_eq!(
        format!("{t:?}"),
        format!(
            "Transmit {{ pipe: PipeId({}), proto: Udp, src: 10.0.0.1:2, dst: 10.0.0.2:9, len: {} }}",
            b.as_u64(),
            t.payload.len()
        )
    );
}

/// Attributes after MESSAGE-INTEGRITY-SHA256 are ignored (FINGERPRINT excepted), as after
/// MESSAGE-INTEGRITY, also when it is the first integrity attribute; a second one is ignored.
/// Kills: `stun/codec.rs` `decode_inner` match guard `after_integrity && !after_sha256` with
/// `true`, and its `&&` with `||`.
#[test]
fn stun_attributes_after_integrity_sha256_are_ignored() {
    use pipe_core::stun::{decode, Attribute, Message, TransactionId};
    let sha256 = Attribute::Unknown {
        typ: 0x001C,
        value: Bytes::from_static(&[0xAB; 32]),
    };
    let mut m = Message::binding_request(TransactionId([3; 12]));
    m.attributes = vec![
        sha256.clone(),
        Attribute::Software("after".into()),
        sha256.clone(),
    ];
    assert_eq!(decode(&m.encode()).unwrap().attributes, [sha256]);
}

/// Comprehension-required attribute types are exactly 0x0000..=0x7FFF: an unknown 0x7FFF is
/// reported, an unknown 0x8000 is not.
/// Kills: `stun/codec.rs` `Message::unknown_comprehension_required` `<` with `<=`.
#[test]
fn stun_comprehension_required_ends_at_0x7fff() {
    use pipe_core::stun::{decode, Attribute, Message, TransactionId};
    let unknown = |typ| Attribute::Unknown {
        typ,
        value: Bytes::from_static(b"abcd"),
    };
    let mut m = Message::binding_request(TransactionId([4; 12]));
    m.attributes = vec![unknown(0x7FFF), unknown(0x8000), unknown(0x7FFF)];
    let d = decode(&m.encode()).unwrap();
    assert_eq!(d.attributes.len(), 3);
    assert_eq!(d.unknown_comprehension_required(), [0x7FFF]);
}

/// A Binding response carrying an attribute the client does not know and must understand
/// (type below 0x8000) is an invalid response (RFC 8489 §7.3.3), an error response with a
/// usable ERROR-CODE too (a success one would be invalid anyway: no mapped address is taken
/// from it either way).
/// Kills: `stun/client.rs` `StunClient::handle_input` delete match arm `(_, false)`.
#[test]
fn a_stun_response_with_an_unknown_comprehension_required_attribute_is_invalid() {
    use pipe_core::stun::{
        Attribute, Class, Message, Method, StunClient, StunClientConfig, StunEvent, Transport,
    };
    let now = base_instant();
    let (server, me) = (sa("198.51.100.1:3478"), sa("192.0.2.7:5555"));
    let mut c = StunClient::new(StunClientConfig::default(), 3);
    let id = c.start_binding(now, server, Transport::Udp).unwrap();
    let unknown = Attribute::Unknown {
        typ: 0x7ffe,
        value: Bytes::from_static(b"????"),
    };
    let mut ok = Message::new(Class::Success, Method::Binding, id);
    ok.attributes.push(Attribute::XorMappedAddress(me));
    ok.attributes.push(unknown.clone());
    c.handle_input(now, server, &ok.encode());
    assert_eq!(c.poll_event(), Some(StunEvent::InvalidResponse { id }));
    assert_eq!(c.outstanding(), 0);

    let id = c.start_binding(now, server, Transport::Udp).unwrap();
    let mut err = Message::new(Class::Error, Method::Binding, id);
    err.attributes.push(Attribute::ErrorCode {
        code: 400,
        reason: "Bad Request".into(),
    });
    err.attributes.push(unknown);
    c.handle_input(now, server, &err.encode());
    assert_eq!(c.poll_event(), Some(StunEvent::InvalidResponse { id }));
}

/// One `handle_timeout` sends at most one retransmission per transaction, even when the next
/// wait is zero (`rto` = 0): the driver paces the sends. `outstanding` counts the
/// transactions in flight; a TCP transaction past `tcp_timeout` is counted in `timeouts`.
/// Kills: `stun/client.rs` `StunClient::handle_timeout` `+=` with `*=` (425:19, the index
/// after a retransmission), `StunClient::outstanding` with 0, and `timeouts` `+=` with `*=`.
#[test]
fn a_stun_client_retransmits_once_per_handle_timeout_and_counts_what_is_in_flight() {
    use pipe_core::stun::{StunClient, StunClientConfig, StunEvent, Transport};
    use std::time::Duration;
    let now = base_instant();
    let server = sa("198.51.100.1:3478");
    let mut conf = StunClientConfig::default();
    conf.rto = Duration::ZERO;
    conf.tcp_timeout = Duration::from_secs(1);
    let mut c = StunClient::new(conf, 4);
    assert_eq!(c.outstanding(), 0);
    c.start_binding(now, server, Transport::Udp).unwrap();
    assert_eq!(c.outstanding(), 1);
    assert!(c.poll_transmit().is_some());
    c.handle_timeout(now);
    assert_eq!(c.stats().retransmits, 1);
    assert!(c.poll_transmit().is_some());
    assert!(c.poll_transmit().is_none(), "one send per call");
    assert!(c.poll_event().is_none());
    assert_eq!(c.outstanding(), 1);

    let tcp = c.start_binding(now, server, Transport::Tcp).unwrap();
    assert_eq!(c.outstanding(), 2);
    c.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(c.stats().retransmits, 2);
    assert_eq!(c.stats().timeouts, 1);
    assert_eq!(c.poll_event(), Some(StunEvent::Timeout { id: tcp }));
    assert_eq!(c.outstanding(), 1);
}

/// `ExternalLookup::start` a second time does nothing: the deadline stays `timeout` after
/// the first call.
/// Kills: `stun/lookup.rs` `ExternalLookup::start` `||` with `&&`.
#[test]
fn a_lookup_started_twice_keeps_its_first_deadline() {
    use pipe_core::stun::{ExternalLookup, LookupConfig, LookupError};
    use std::time::Duration;
    let now = base_instant();
    let mut conf = LookupConfig::new(vec![sa("198.51.100.1:3478")]);
    conf.server_timeout = Some(Duration::from_secs(60));
    let mut l = ExternalLookup::new(conf, 5);
    l.start(now);
    l.start(now + Duration::from_secs(2));
    assert_eq!(l.in_flight(), 1);
    l.handle_timeout(now + Duration::from_secs(3));
    assert!(l.is_finished());
    assert!(matches!(
        l.poll_result(),
        Some(Err(LookupError::Timeout { .. }))
    ));
}

/// Only the hairpin probe itself (a Binding request with the probe's transaction id) counts
/// as hairpinning: another request arriving on the mapping socket does not.
/// Kills: `stun/nat.rs` `NatDiscovery::handle_datagram` `&&` with `||` (hairpin `seen`).
#[test]
fn nat_hairpin_is_seen_only_for_the_probes_own_request() {
    use pipe_core::stun::{Class, Message, Method, NatSocket, TransactionId};
    let (mut d, now, out) = nat_second_phase(true, "203.0.113.9:6000");
    let mut probe = None;
    for (t, reply) in out {
        match reply {
            Some((from, bytes)) => d.handle_datagram(now, t.socket, from, &bytes),
            None => probe = Some(t),
        }
    }
    let probe = probe.expect("a hairpin probe");
    let stray = Message::new(Class::Request, Method::Binding, TransactionId([9; 12])).encode();
    d.handle_datagram(now, NatSocket::Mapping, probe.dest, &stray);
    assert!(
        d.poll_result().is_none(),
        "another request is not the probe"
    );
    d.handle_datagram(now, NatSocket::Mapping, probe.dest, &probe.payload);
    let r = d.poll_result().expect("the probe came back").unwrap();
    assert_eq!(r.hairpin, Some(true));
}

/// The report waits for each of tests II and III (mapping socket) and for the filtering
/// socket's plain request: with any one of them unanswered there is no report yet.
/// Kills: `stun/nat.rs` `NatDiscovery::tests` `||` with `&&` before `matches!(t.f_i, ..)`
/// (`filtering_pending`) and between tests II and III (`mapping_pending`).
#[test]
fn nat_report_waits_for_tests_two_and_three_and_the_plain_filtering_request() {
    use pipe_core::stun::{NatSocket, NatTransmit};
    let server = sa("198.51.100.1:3478");
    type Pick = fn(&NatTransmit) -> bool;
    let withheld: [(&str, Pick); 3] = [
        ("test II", |t| {
            t.socket == NatSocket::Mapping && t.dest == sa("198.51.100.2:3478")
        }),
        ("test III", |t| {
            t.socket == NatSocket::Mapping && t.dest == sa("198.51.100.2:3479")
        }),
        ("the plain filtering request", |t| {
            t.socket == NatSocket::Filtering
                && pipe_core::stun::decode(&t.payload)
                    .unwrap()
                    .attributes
                    .iter()
                    .all(|a| !matches!(a, pipe_core::stun::Attribute::ChangeRequest { .. }))
        }),
    ];
    for (what, pick) in withheld {
        let (mut d, now, out) = nat_second_phase(false, "203.0.113.9:6000");
        let mut held = None;
        for (t, reply) in out {
            let Some((from, bytes)) = reply else { continue };
            if pick(&t) {
                assert!(held.is_none(), "{what}: one request");
                held = Some((t.socket, from, bytes));
            } else {
                d.handle_datagram(now, t.socket, from, &bytes);
            }
        }
        assert!(d.poll_result().is_none(), "waiting on {what}");
        let (socket, from, bytes) = held.expect(what);
        assert!(socket != NatSocket::Filtering || from == server);
        d.handle_datagram(now, socket, from, &bytes);
        let r = d.poll_result().expect(what).unwrap();
        assert_eq!(r.filtering, pipe_core::stun::Filtering::EndpointIndependent);
    }
}

/// A server whose OTHER-ADDRESS has its own IP (another port only) cannot run the RFC 5780
/// tests: it answers the race as a plain server, and with no other server the discovery ends
/// with `NoBehaviourDiscovery`. Once finished, `poll_timeout` and `poll_transmit` are `None`.
/// Kills: `stun/nat.rs` `NatDiscovery::race` match guard `other.ip() != ...` with `true`, and
/// `NatDiscovery::running` with `true`.
#[test]
fn nat_discovery_needs_an_other_address_on_another_ip_and_is_idle_once_finished() {
    use pipe_core::stun::{
        decode, Attribute, Class, Message, Method, NatConfig, NatDiscovery, NatError, NatSocket,
    };
    let now = base_instant();
    let server = sa("198.51.100.1:3478");
    let mut d = NatDiscovery::new(NatConfig::new(vec![server]), 5);
    assert_eq!(d.poll_timeout(), None, "not started");
    d.start(now, sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    let t1 = d.poll_transmit().unwrap();
    let id = decode(&t1.payload).unwrap().transaction_id;
    let mut ok = Message::new(Class::Success, Method::Binding, id);
    ok.attributes
        .push(Attribute::XorMappedAddress(sa("203.0.113.9:5000")));
    ok.attributes
        .push(Attribute::OtherAddress(sa("198.51.100.1:3479")));
    d.handle_datagram(now, NatSocket::Mapping, server, &ok.encode());
    assert_eq!(
        d.poll_result(),
        Some(Err(NatError::NoBehaviourDiscovery {
            answered: vec![(server, sa("203.0.113.9:5000"))]
        }))
    );
    assert!(d.is_finished());
    assert_eq!(d.poll_timeout(), None, "finished");
    d.handle_timeout(now + std::time::Duration::from_secs(1));
    assert!(d.poll_transmit().is_none());
    assert_eq!(d.poll_timeout(), None);
}

/// RESPONSE-PORT: `handle` (the single-socket API) returns no answer for a request asking
/// for another port; a reply to a blocked port is dropped and counted; an RFC 3489 request
/// (not the RFC 5389 magic cookie) does not have RESPONSE-PORT honoured and is answered
/// where it came from. `bytes_in` counts every datagram's bytes.
/// Kills: `stun/server.rs` `StunServer::handle` `&&` with `||`, `StunServer::handle_request`
/// `+=` with `*=` on `bytes_in` and on `dropped_blocked_source` (the reply's port), and the
/// match guard `!classic` with `true`.
#[test]
fn stun_server_honours_response_port_only_for_rfc_5389_requests_to_allowed_ports() {
    use pipe_core::stun::{Attribute, Message, StunServer, StunServerConfig, TransactionId};
    let now = base_instant();
    let local = sa("192.0.2.1:3478");
    let client = sa("203.0.113.5:40000");
    let mut s = StunServer::new(StunServerConfig::default());
    let req = |n: u8, port: u16| {
        let mut m = Message::binding_request(TransactionId([n; 12]));
        m.attributes.push(Attribute::ResponsePort(port));
        m.encode()
    };
    let mut bytes_in = 0;

    let r1 = req(1, 40001);
    bytes_in += r1.len() as u64;
    assert_eq!(s.handle(now, local, client, &r1), None, "another port");

    let r2 = req(2, 53);
    bytes_in += r2.len() as u64;
    assert_eq!(s.handle_request(now, local, client, &r2), None);
    assert_eq!(s.stats().dropped_blocked_source, 1);

    let mut r3 = req(3, 40001).to_vec();
    r3[4..8].copy_from_slice(&[1, 2, 3, 4]); // an RFC 3489 transaction id, no magic cookie
    bytes_in += r3.len() as u64;
    let reply = s.handle_request(now, local, client, &r3).expect("answered");
    assert_eq!((reply.from, reply.to), (local, client));
    let st = s.stats();
    assert_eq!((st.received, st.answered, st.answered_classic), (3, 2, 1));
    assert_eq!(st.answered_response_port, 1);
    assert_eq!(st.bytes_in, bytes_in);
}

/// With no NAT (the mapped address is the local one) the hairpin probe is not sent; the
/// report's `hairpin` is then `Some(true)` (a datagram to ourselves arrives) only if
/// hairpinning was asked for, `None` if `NatConfig::hairpin` is off.
/// Kills: `stun/nat.rs` `NatDiscovery::report` `&&` with `||` in
/// `self.conf.hairpin && t.x1 == local_m`.
#[test]
fn nat_hairpin_without_a_nat_is_reported_only_when_asked_for() {
    use pipe_core::stun::{
        decode, Attribute, Class, Message, Method, NatClass, NatConfig, NatDiscovery, NatSocket,
    };
    let (server, other) = (sa("198.51.100.1:3478"), sa("198.51.100.2:3479"));
    let (local_m, local_f) = (sa("10.0.0.2:4000"), sa("10.0.0.2:4001"));
    for hairpin in [true, false] {
        let now = base_instant();
        let mut conf = NatConfig::new(vec![server]);
        conf.hairpin = hairpin;
        let mut d = NatDiscovery::new(conf, 5);
        d.start(now, local_m, local_f);
        let r = loop {
            let t = d.poll_transmit().expect("a request to answer");
            let msg = decode(&t.payload).unwrap();
            assert_eq!(msg.class, Class::Request);
            assert!(t.dest != local_m, "no hairpin probe without a NAT");
            let change = msg.attributes.iter().find_map(|a| match a {
                Attribute::ChangeRequest {
                    change_ip,
                    change_port,
                } => Some((*change_ip, *change_port)),
                _ => None,
            });
            let mapped = match t.socket {
                NatSocket::Mapping => local_m,
                NatSocket::Filtering => local_f,
            };
            let from = match change {
                Some((true, _)) => other,
                Some((false, true)) => sa("198.51.100.1:3479"),
                _ => t.dest,
            };
            let mut ok = Message::new(Class::Success, Method::Binding, msg.transaction_id);
            ok.attributes.push(Attribute::XorMappedAddress(mapped));
            ok.attributes.push(Attribute::OtherAddress(other));
            if change.is_some() {
                ok.attributes.push(Attribute::ResponseOrigin(from));
            }
            d.handle_datagram(now, t.socket, from, &ok.encode());
            if let Some(r) = d.poll_result() {
                break r.unwrap();
            }
        };
        assert_eq!(r.class, NatClass::OpenInternet);
        assert_eq!(
            r.hairpin,
            hairpin.then_some(true),
            "hairpin asked for: {hairpin}"
        );
    }
}

/// A datagram the OS refused (`drop_transmit`) leaves `out_bytes` at what is still queued; a
/// closed pipe stays `Closing` while a datagram is left, and is forgotten once none is.
/// Kills: `engine/mod.rs` `Engine::drop_transmit` `-=` with `+=` (`out_bytes`), and
/// `Engine::after_write` `&&` with `||` (`done && state == Closing`).
#[test]
fn a_dropped_transmit_leaves_the_queued_byte_count_and_a_closing_pipe_closing() {
    use pipe_core::State;
    let (mut e, now) = engine();
    let u = e
        .open_udp(
            now,
            sa("10.0.0.1:5"),
            Some(sa("10.0.0.2:5")),
            Conf::default(),
            false,
        )
        .unwrap();
    e.send(now, u, b"one", None).unwrap();
    e.send(now, u, b"three", None).unwrap();
    assert_eq!(e.out_bytes(u), 8);
    e.drop_transmit(now, u);
    assert_eq!(e.out_bytes(u), 5);
    assert_eq!(e.stats(u).unwrap().send_failed, 1);
    e.send(now, u, b"four", None).unwrap();
    e.close(now, u);
    assert_eq!(e.state(u), Some(State::Closing));
    e.drop_transmit(now, u);
    assert_eq!(e.out_bytes(u), 4);
    assert_eq!(e.state(u), Some(State::Closing), "a datagram is left");
    e.drop_transmit(now, u);
    assert_eq!(e.state(u), None, "flushed: forgotten");
}

/// `within_caps` allows one event past the queue's cap for each reliable send still waiting
/// for its outcome (its timer), on top of a few lifecycle events per pipe.
/// Kills: `engine/mod.rs` `Engine::within_caps` `+` with `-` before `self.timers.len()`.
#[test]
fn within_caps_allows_an_outcome_event_per_outstanding_reliable_send() {
    let (mut e, now) = engine();
    let from: SocketAddr = sa("10.0.0.2:80");
    let r = e
        .open_udp(
            now,
            sa("10.0.0.1:6"),
            Some(from),
            Conf {
                reliable_udp: true,
                ..Conf::default()
            },
            false,
        )
        .unwrap();
    let conf = Conf {
        max_callback_jobs: 1 << 20,
        max_callback_bytes: 1 << 30,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(from), conf, true)
        .unwrap();
    for i in 0..pipe_core::MAX_EVENTS {
        e.handle_datagram(now, p, from, &(i as u32).to_be_bytes());
    }
    for _ in 0..10 {
        e.send_reliable(now, r, b"ack me", None).unwrap();
    }
    assert!(e.within_caps());
    assert_eq!(evs(&mut e).len(), pipe_core::MAX_EVENTS);
}

/// `within_caps` allows a few lifecycle events per known pipe past the event queue's cap:
/// a listener's accepted connections each bring an `Accepted` and an `Up`.
/// Kills: `engine/mod.rs` `Engine::within_caps` `*` with `+` in `4 * self.pipes.len()`.
#[test]
fn within_caps_allows_lifecycle_events_of_every_known_pipe_past_the_cap() {
    let (mut e, now) = engine();
    let from: SocketAddr = sa("10.0.0.2:80");
    let conf = Conf {
        max_callback_jobs: 1 << 20,
        max_callback_bytes: 1 << 30,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(from), conf, true)
        .unwrap();
    for i in 0..pipe_core::MAX_EVENTS {
        e.handle_datagram(now, p, from, &(i as u32).to_be_bytes());
    }
    let listen = sa("10.0.0.1:80");
    let l = e
        .open_listener(now, listen, Conf::default(), false)
        .unwrap();
    for port in 1..=8 {
        e.handle_accepted(now, l, listen, sa(&format!("10.0.0.3:{port}")))
            .unwrap();
    }
    assert_eq!(e.pipe_count(), 10);
    assert!(e.within_caps());
    assert_eq!(evs(&mut e).len(), pipe_core::MAX_EVENTS + 17);
}

/// A self-signed certificate and key for `name` (rcgen), as in `engine_tls.rs`.
fn tls_pair(name: &str) -> (pipe_core::Tls, pipe_core::Tls) {
    use pipe_core::rustls_types::{PrivateKeyDer, ServerName};
    use pipe_core::{TlsClient, TlsServer};
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let server = TlsServer::new(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .build()
    .unwrap();
    let client = TlsClient::with_roots([cert.der().clone()])
        .server_name(ServerName::try_from(name.to_string()).unwrap())
        .build()
        .unwrap();
    (server, client)
}

/// Once its handshake is done, a TLS connection is not ended by the handshake deadline
/// (`Conf::ssl_handshake`): both ends are still open long after it. A server `Tls` equals its
/// clone; `Debug` of a `Tls` names its kind and the server name, not the key material; the
/// engine's `Debug` shows each TLS session's state (handshaking, then not).
/// Kills: `tls.rs` `TlsSession::is_handshaking` with `true`, `<impl PartialEq for Tls>::eq`
/// delete match arm `(Tls::Server, Tls::Server)`, `<impl Debug for Tls>::fmt` and
/// `<impl Debug for TlsSession>::fmt` (357:9 on d9b3df5) with `Ok(Default::default())`.
#[test]
fn a_tls_connection_outlives_its_handshake_deadline() {
    use pipe_core::State;
    let (server, client) = tls_pair("pipes.test");
    assert_eq!(server, server.clone());
    assert!(format!("{server:?}").starts_with("Tls::Server"));
    let shown = format!("{client:?}");
    assert!(
        shown.starts_with("Tls::Client") && shown.contains("pipes.test"),
        "{shown}"
    );
    let (mut e, now) = engine();
    let listen = sa("10.0.0.1:443");
    let conf = |tls| Conf {
        tls: Some(tls),
        ..Conf::default()
    };
    let l = e.open_listener(now, listen, conf(server), false).unwrap();
    let c = e
        .open_tcp(now, sa("10.0.0.2:5000"), listen, conf(client), false)
        .unwrap();
    let a = e
        .handle_accepted(now, l, listen, sa("10.0.0.2:5000"))
        .unwrap();
    e.pop_accepted(l).unwrap();
    let session = |e: &Engine, handshaking: bool| {
        format!("{e:?}")
            .matches(&format!(
                "TlsSession {{ handshaking: {handshaking}, peer_closed: false }}"
            ))
            .count()
    };
    assert_eq!(session(&e, true), 2, "both ends before the handshake");
    loop {
        let mut moved = false;
        for (from, to) in [(c, a), (a, c)] {
            while let Some(t) = e.poll_transmit_for(from) {
                moved = true;
                e.handle_stream(now, to, &t.payload);
            }
        }
        if !moved {
            break;
        }
    }
    while e.poll_event().is_some() {}
    assert_eq!(session(&e, false), 2, "both ends after it");
    let later = now + Conf::default().ssl_handshake * 3;
    e.handle_timeout(later);
    assert_eq!(e.state(c), Some(State::Open));
    assert_eq!(e.state(a), Some(State::Open));
}

/// `external_links` lists a pipe's links to other engines' pipes with their tokens (what a
/// driver pairs), not its local links.
/// Kills: `engine/half.rs` `Engine::external_links` with `vec![]`.
#[test]
fn external_links_lists_the_links_to_other_engines_with_their_tokens() {
    use pipe_core::{Kind, LinkTarget};
    let (mut e, now) = engine();
    let open = |e: &mut Engine, port: u16| {
        e.open_udp(
            now,
            sa(&format!("10.0.0.1:{port}")),
            None,
            Conf::default(),
            false,
        )
        .unwrap()
    };
    let (a, b) = (open(&mut e, 1), open(&mut e, 2));
    let ext = LinkTarget::External {
        kind: Kind::Udp,
        open: true,
    };
    let l1 = e.link(a, ext, None, None).unwrap();
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    let l3 = e.link(a, ext, Some(sa("10.0.0.7:7")), None).unwrap();
    assert_eq!(
        e.external_links(a),
        [
            (l1, e.link_token(a, l1).unwrap()),
            (l3, e.link_token(a, l3).unwrap())
        ]
    );
    assert!(e.external_links(b).is_empty());
}

/// A listener served by `accept()` from the start (`Engine::serve_by_accept`, which a driver
/// calls for a listener without message or end callbacks): a connection whose request and
/// FIN came before the first `accept()` call stays writable for the user who takes it. On a
/// listener without the call, nothing may answer such a connection, and P2PD's rule ends it
/// at the FIN. The call does nothing to a pipe that is not a listener.
/// Kills: `engine/mod.rs` `Engine::serve_by_accept` with `()`, and `==` with `!=` in it.
#[test]
fn serve_by_accept_keeps_a_connection_whose_fin_came_before_the_first_accept() {
    let (mut e, now) = engine();
    let fin_before_accept = |e: &mut Engine, l: PipeId, port: u16| {
        let local = e.local_addr(l).unwrap();
        let c = e
            .handle_accepted(now, l, local, sa(&format!("10.0.0.2:{port}")))
            .unwrap();
        e.handle_stream(now, c, b"question");
        e.handle_peer_closed(now, c, false);
        c
    };
    let ends = |e: &mut Engine| -> Vec<PipeId> {
        evs(e)
            .into_iter()
            .filter_map(|ev| match ev {
                Event::End { pipe, .. } => Some(pipe),
                _ => None,
            })
            .collect()
    };

    let served = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    e.serve_by_accept(served);
    let c = fin_before_accept(&mut e, served, 5000);
    assert_eq!(ends(&mut e), [], "its user may still answer");
    assert_eq!(e.pop_accepted(served).unwrap(), Some(c));
    e.send(now, c, b"answer", None).unwrap();
    let (buf, _) = e.peek_transmit(c).unwrap();
    assert_eq!(&buf[..], b"answer");

    let plain = e
        .open_listener(now, sa("10.0.0.1:81"), Conf::default(), false)
        .unwrap();
    let c = fin_before_accept(&mut e, plain, 5001);
    assert_eq!(ends(&mut e), [c], "nothing may answer: P2PD's rule");

    // Not a listener: nothing changes (and nothing panics).
    let client = e
        .open_tcp(
            now,
            sa("10.0.0.1:5002"),
            sa("10.0.0.3:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    e.serve_by_accept(client);
    e.handle_peer_closed(now, client, false);
    assert_eq!(ends(&mut e), [client], "a client's FIN ends it as before");
}

/// A relay upstream as `engine_splice.rs` makes it: a TCP client to `10.0.0.2:80`, its
/// `SubId::ALL` dropped, one link to another engine's pipe (with `from`), paired.
fn splice_upstream(from: Option<SocketAddr>) -> (Engine, Instant, PipeId, pipe_core::LinkId) {
    use pipe_core::{Kind, LinkTarget};
    let (mut e, now) = engine();
    let p = e
        .open_tcp(
            now,
            sa("10.0.0.1:5"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    e.unsubscribe(p, SubId::ALL).unwrap();
    let ext = LinkTarget::External {
        kind: Kind::TcpClient,
        open: true,
    };
    let l = e.link(p, ext, None, from).unwrap();
    assert!(e.set_link_paired(p, l));
    evs(&mut e);
    (e, now, p, l)
}

/// A link's `from` filter keeps a pipe splice-eligible only when it lets every byte of the
/// peer through (the kernel copy cannot filter): none, the peer's IP with port 0, or the
/// peer's own address. The peer's IP with another port, or another IP, keeps it copying.
/// Kills: `engine/splice.rs` `Engine::splice_source` `==` with `!=` in `f.port() == d.port()`
/// (56:58 on d9b3df5).
#[test]
fn a_link_from_another_port_of_the_peer_keeps_the_pipe_off_the_splice_path() {
    for (from, eligible) in [
        (None, true),
        (Some("10.0.0.2:0"), true),
        (Some("10.0.0.2:80"), true),
        (Some("[::ffff:10.0.0.2]:80"), true),
        (Some("10.0.0.2:81"), false),
        (Some("10.0.0.3:80"), false),
    ] {
        let (e, _, p, l) = splice_upstream(from.map(sa));
        assert_eq!(
            e.splice_source(p).map(|(link, _)| link),
            eligible.then_some(l),
            "from {from:?}"
        );
    }
}

/// `splice_end` with bytes the driver could not deliver counts them in `unsent_dropped` of a
/// pipe that is still known (`engine_splice.rs` checks only a released one, whose stats are
/// gone); output queued during the reservation is reported to the driver again afterwards
/// (`poll_dirty`: the pipe was reported once while reserved, when nothing could be written);
/// each reservation counts as one message sent.
/// Kills: `engine/splice.rs` `Engine::splice_end` `>` with `<` / `==` in `unsent > 0`
/// (149:19 on d9b3df5), delete `!` in `if !p.in_dirty` (158:16), and `+=` with `*=` on `sent`
/// (155:22).
#[test]
fn splice_end_counts_unsent_bytes_and_reports_the_output_queued_meanwhile() {
    let (mut e, now, t, _) = splice_upstream(None);
    assert!(e.splice_begin(now, t));
    e.send(now, t, b"after", None).unwrap();
    assert_eq!(e.poll_dirty(), Some(t), "queued: reported once");
    assert!(e.peek_transmit(t).is_none(), "held while reserved");
    assert_eq!(e.poll_dirty(), None);
    e.handle_spliced_out(now, t, 100);
    e.splice_end(now, t, 5);
    let s = e.stats(t).unwrap();
    assert_eq!((s.unsent_dropped, s.spliced_out), (5, 100));
    assert_eq!(s.sent, 2, "the send, and the spliced chunk as one message");
    assert_eq!(e.poll_dirty(), Some(t), "the held output is writable now");
    assert_eq!(&e.peek_transmit(t).unwrap().0[..], b"after");
    // A reservation that ends with everything delivered counts nothing.
    e.advance_transmit(now, t, 5);
    assert!(e.splice_begin(now, t));
    e.splice_end(now, t, 0);
    let s = e.stats(t).unwrap();
    assert_eq!((s.unsent_dropped, s.sent), (5, 3));
    assert_eq!(e.poll_dirty(), None, "nothing queued, nothing to report");
}

/// A listener's `conn_totals` add up the spliced bytes of its connections, live and
/// forgotten.
/// Kills: `engine/state.rs` `ConnTotals::add` `+=` with `-=` on `spliced_in` (170:25 on
/// d9b3df5; with `-=` the sum underflows) and the same on `spliced_out`.
#[test]
fn conn_totals_add_up_spliced_bytes_of_live_and_forgotten_connections() {
    use pipe_core::{Kind, LinkTarget};
    let (mut e, now) = engine();
    let listen = sa("10.0.0.1:80");
    let l = e
        .open_listener(now, listen, Conf::default(), false)
        .unwrap();
    let c = e.handle_accepted(now, l, listen, sa("10.0.0.2:9")).unwrap();
    let ext = LinkTarget::External {
        kind: Kind::TcpClient,
        open: true,
    };
    let link = e.link(c, ext, None, None).unwrap();
    assert!(e.set_link_paired(c, link));
    evs(&mut e);
    assert!(e.splice_source(c).is_some());
    e.handle_spliced(now, c, link, 1000);
    assert!(e.splice_begin(now, c));
    e.handle_spliced_out(now, c, 300);
    e.splice_end(now, c, 0);
    let t = e.conn_totals(l).unwrap();
    assert_eq!((t.accepted, t.spliced_in, t.spliced_out), (1, 1000, 300));
    // Taken and closed, so forgotten: its figures stay in the listener's totals.
    assert_eq!(e.pop_accepted(l).unwrap(), Some(c));
    e.close(now, c);
    evs(&mut e);
    assert_eq!(e.state(c), None, "forgotten");
    let t = e.conn_totals(l).unwrap();
    assert_eq!((t.ended, t.spliced_in, t.spliced_out), (1, 1000, 300));
}

/// A message that arrives while an earlier one still waits for callbacks, on a pipe whose
/// callbacks were turned off meanwhile and with no subscription, is counted `unclaimed` (it
/// waits in the held list for its turn, but nothing will take it).
/// Kills: `engine/subs.rs` `Engine::subscriptions_step` `+=` with `-=` (89:42 on d9b3df5;
/// with `-=` the counter underflows).
#[test]
fn a_message_behind_a_held_one_with_no_taker_is_unclaimed() {
    let (mut e, now) = engine();
    let from = sa("10.0.0.2:80");
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), None, Conf::default(), true)
        .unwrap();
    evs(&mut e);
    e.handle_datagram(now, p, from, b"first");
    assert_eq!(e.stats(p).unwrap().unclaimed, 0, "the callbacks took it");
    e.set_callbacks(p, false);
    e.handle_datagram(now, p, from, b"second");
    assert_eq!(e.stats(p).unwrap().unclaimed, 1);
    e.handle_callback_done(p, 5);
    let st = e.stats(p).unwrap();
    assert_eq!((st.received, st.queued, st.unclaimed), (2, 0, 1));
}

/// Messages handed to a handler subscription (`Event::SubMessage`) count against the pipe's
/// `max_callback_bytes` until the driver reports the handler done: past the cap the pipe
/// pauses, and resumes once they are done.
/// Kills: `engine/subs.rs` `Engine::offer` `+=` with `*=` on `held_bytes` (167:36 on
/// d9b3df5).
#[test]
fn handler_messages_count_against_the_callback_byte_cap() {
    let (mut e, now) = engine();
    let from = sa("10.0.0.2:80");
    let conf = Conf {
        max_callback_bytes: 100,
        max_callback_jobs: 1000,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), None, conf, false)
        .unwrap();
    let s = e.subscribe_handler(p, Filter::all()).unwrap();
    evs(&mut e);
    let pauses = |ev: &[Event]| {
        ev.iter()
            .filter(|ev| matches!(ev, Event::Pause { .. }))
            .count()
    };
    e.handle_datagram(now, p, from, &[1; 60]);
    let ev = evs(&mut e);
    assert!(ev
        .iter()
        .any(|ev| matches!(ev, Event::SubMessage { sub, .. } if *sub == s)));
    assert_eq!(pauses(&ev), 0, "60 of 100 bytes");
    e.handle_datagram(now, p, from, &[2; 60]);
    assert_eq!(pauses(&evs(&mut e)), 1, "120 of 100 bytes");
    e.handle_handler_done(p, 60);
    assert_eq!(
        evs(&mut e),
        [Event::Resume { pipe: p }],
        "60 of 100 bytes again"
    );
    assert_eq!(e.stats(p).unwrap().paused, 1);
}

/// `Event::SubMessage`s past the engine's event queue cap are dropped and counted in
/// `events_dropped`, like message events.
/// Kills: `engine/subs.rs` `Engine::offer` `+=` with `*=` on `events_dropped` (178:51 on
/// d9b3df5).
#[test]
fn handler_messages_past_the_event_queue_cap_count_as_events_dropped() {
    let (mut e, now) = engine();
    let from = sa("10.0.0.2:80");
    let conf = Conf {
        max_callback_jobs: 1 << 20,
        max_callback_bytes: 1 << 30,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), None, conf, false)
        .unwrap();
    e.subscribe_handler(p, Filter::all()).unwrap();
    // The Up event is queued: MAX_EVENTS - 1 handler messages fit.
    let cap = pipe_core::MAX_EVENTS;
    for i in 0..cap + 9 {
        e.handle_datagram(now, p, from, &(i as u32).to_be_bytes());
    }
    let st = e.stats(p).unwrap();
    assert_eq!((st.received, st.events_dropped), ((cap + 9) as u64, 10));
    let ev = evs(&mut e);
    let handed = ev
        .iter()
        .filter(|ev| matches!(ev, Event::SubMessage { .. }))
        .count();
    assert_eq!(handed, cap - 1);
}

/// Crossing the server budget pauses every connection that holds bytes, also when the
/// crossing comes through `handle_stream_bytes` (the plain raw read path that takes the
/// driver's buffer), and reading one queue back under it resumes them all.
/// Kills: `engine/mod.rs` `Engine::settle` `held != old` with `==` before `budget_changed`
/// (1407:17 on d9b3df5; also killed by
/// `draining_under_the_server_budget_resumes_every_paused_connection_at_once`).
#[test]
fn a_budget_crossing_on_the_single_settle_read_path_pauses_every_holder() {
    let (mut e, now) = engine();
    let conf = Conf {
        max_server_bytes: 10_000,
        ..Conf::default()
    };
    let listen = sa("10.0.0.1:80");
    let l = e.open_listener(now, listen, conf, false).unwrap();
    let a = e.handle_accepted(now, l, listen, sa("10.0.0.2:1")).unwrap();
    let b = e.handle_accepted(now, l, listen, sa("10.0.0.2:2")).unwrap();
    for c in [a, b] {
        assert_eq!(e.subscribe(c, Filter::all()), Ok(SubId::ALL));
    }
    evs(&mut e);
    let changed = |e: &mut Engine, resume: bool| -> std::collections::BTreeSet<PipeId> {
        evs(e)
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Pause { pipe } if !resume => Some(pipe),
                Event::Resume { pipe } if resume => Some(pipe),
                _ => None,
            })
            .collect()
    };
    e.handle_stream_bytes(now, a, Bytes::from(vec![1; 6000]));
    assert!(changed(&mut e, false).is_empty(), "6,000 of 10,000");
    e.handle_stream_bytes(now, b, Bytes::from(vec![2; 4000]));
    assert_eq!(changed(&mut e, false), [a, b].into_iter().collect());
    assert_eq!(e.recv(b, SubId::ALL).unwrap().unwrap().data.len(), 4000);
    assert_eq!(changed(&mut e, true), [a, b].into_iter().collect());
}

/// A reliable-UDP sequence number exactly `2^32` below a counting sender's highest is the
/// first that counts as far (a random P2PD number, delivered once), not too old; one less is
/// too old.
/// Kills: `dedup.rs` `RecvWindow::check` `<` with `<=` in `down < NEAR` (388:17), and `&&` with
/// `||` in `down < NEAR && w.sequential` (388:24).
#[test]
fn a_reliable_sequence_number_two_to_the_32_below_the_highest_is_far_not_too_old() {
    let (mut e, now, p) = seeded_reliable(1);
    let from = sa("10.0.0.2:5");
    let data = |e: &mut Engine, seq: u64, m: &[u8]| {
        e.handle_datagram(
            now,
            p,
            from,
            &pipe_core::rudp::encode(seq, pipe_core::rudp::FLAG_DATA, m),
        );
    };
    let high = 1u64 << 40;
    data(&mut e, high - 1, b"a");
    data(&mut e, high, b"b");
    data(&mut e, high - (1 << 32) + 1, b"too old");
    data(&mut e, high - (1 << 32), b"far");
    evs(&mut e);
    let got: Vec<Bytes> =
        std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data)).collect();
    assert_eq!(got, [&b"a"[..], b"b", b"far"]);
    assert_eq!(e.stats(p).unwrap().reliable_too_old, 1);
}

/// With a dedup window of one id (`max_msg_ids` = 1, the smallest allowed), repeating one
/// message keeps the window's touch log within its bound (`2 × cap + 16`), which
/// `Engine::within_caps` checks.
/// Kills: `dedup.rs` `Lru::touch` `*` with `+` in `2 * self.cap + 16` (62:33: the log is then
/// compacted only past `cap + 18` = 19 entries, over the bound of 18 at cap 1).
#[test]
fn a_one_id_dedup_window_keeps_its_touch_log_bounded() {
    let (mut e, now) = engine();
    let from = sa("10.0.0.2:80");
    let conf = Conf {
        enable_msg_ids: true,
        max_msg_ids: 1,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(from), conf, false)
        .unwrap();
    for i in 0..40 {
        e.handle_datagram(now, p, from, b"same");
        assert!(e.within_caps(), "after {} copies", i + 1);
    }
    e.handle_datagram(now, p, from, b"other");
    assert!(e.within_caps());
    let st = e.stats(p).unwrap();
    assert_eq!((st.received, st.queued), (41, 2));
}

/// `poll_transmit` gives pipes' transmits in the order the pipes queued them: a pipe whose
/// queue it emptied goes to the back when it queues again, behind a pipe that queued in the
/// meantime.
/// Kills: `engine/mod.rs` `Engine::poll_transmit` `&&` with `||` in `!p.out.is_empty() &&
/// !p.in_dirty` (934:42 on d9b3df5: the emptied pipe stayed at the front of the list).
#[test]
fn a_pipe_whose_queue_was_emptied_queues_behind_the_others() {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:80");
    let open = |e: &mut Engine, port: u16| {
        e.open_udp(
            now,
            sa(&format!("10.0.0.1:{port}")),
            Some(peer),
            Conf::default(),
            false,
        )
        .unwrap()
    };
    let (a, b) = (open(&mut e, 1), open(&mut e, 2));
    evs(&mut e);
    e.send(now, a, b"a1", None).unwrap();
    let t = e.poll_transmit().unwrap();
    assert_eq!((t.pipe, &t.payload[..]), (a, &b"a1"[..]));
    // (No further `poll_transmit` here: it would pop the mutant's stale entry.)
    e.send(now, b, b"b1", None).unwrap();
    e.send(now, a, b"a2", None).unwrap();
    let order: Vec<(PipeId, Bytes)> = std::iter::from_fn(|| e.poll_transmit())
        .map(|t| (t.pipe, t.payload))
        .collect();
    assert_eq!(
        order,
        [
            (b, Bytes::from_static(b"b1")),
            (a, Bytes::from_static(b"a2"))
        ]
    );
    assert_eq!(e.poll_dirty(), None);
}

/// `local_addr` is the address a pipe was opened on (a listener's accepted connection: the
/// local address the driver reported), `None` once the pipe is forgotten.
/// Kills: `engine/mod.rs` `Engine::local_addr` with `None` (1092:9 on d9b3df5).
#[test]
fn local_addr_is_the_address_a_pipe_was_opened_on() {
    let (mut e, now) = engine();
    let u = e
        .open_udp(now, sa("10.0.0.1:5"), None, Conf::default(), false)
        .unwrap();
    let l = e
        .open_listener(now, sa("0.0.0.0:80"), Conf::default(), false)
        .unwrap();
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.2:9"))
        .unwrap();
    assert_eq!(e.local_addr(u), Some(sa("10.0.0.1:5")));
    assert_eq!(e.local_addr(l), Some(sa("0.0.0.0:80")));
    assert_eq!(e.local_addr(c), Some(sa("10.0.0.1:80")));
    e.close(now, u);
    evs(&mut e);
    assert_eq!(e.local_addr(u), None, "forgotten");
}

/// `Stats::bytes_in` counts the bytes of every read: datagrams, stream reads through
/// `handle_stream_bytes` (the plain raw path that takes the driver's buffer) and through
/// `handle_stream`.
/// Kills: `engine/inbound.rs` `+=` with `*=` on `bytes_in` in `Engine::handle_datagram`
/// (38:26 on d9b3df5) and `Engine::handle_stream_bytes` (200:38).
#[test]
fn bytes_in_counts_every_read_on_each_path() {
    let (mut e, now) = engine();
    let peer = sa("10.0.0.2:80");
    let u = e
        .open_udp(now, sa("10.0.0.1:5"), Some(peer), Conf::default(), false)
        .unwrap();
    e.handle_datagram(now, u, peer, &[1; 10]);
    e.handle_datagram(now, u, peer, &[2; 5]);
    let st = e.stats(u).unwrap();
    assert_eq!((st.received, st.bytes_in), (2, 15));

    let t = e
        .open_tcp(now, sa("10.0.0.1:6"), peer, Conf::default(), false)
        .unwrap();
    e.handle_stream_bytes(now, t, Bytes::from_static(&[3; 7]));
    e.handle_stream_bytes(now, t, Bytes::from_static(&[4; 4]));
    e.handle_stream(now, t, &[5; 3]);
    let st = e.stats(t).unwrap();
    assert_eq!((st.received, st.bytes_in), (3, 14));
}

/// A message for a link to another engine's pipe, arriving while the engine's event queue is
/// full (`MAX_EVENTS`), cannot be handed to the driver (`Event::Forward`): it counts in
/// `events_dropped` and `forward_failed`; once the driver drains the queue, forwards resume.
/// Kills: `engine/inbound.rs` `Engine::sinks` `+=` with `*=` on `events_dropped` of an
/// external forward (346:59 on d9b3df5).
#[test]
fn an_external_forward_past_the_event_queue_cap_counts_as_dropped_and_failed() {
    use pipe_core::{Kind, LinkTarget};
    let (mut e, now) = engine();
    let from = sa("10.0.0.2:80");
    let conf = Conf {
        max_callback_jobs: 1 << 20,
        max_callback_bytes: 1 << 30,
        ..Conf::default()
    };
    let filler = e
        .open_udp(now, sa("10.0.0.1:5"), Some(from), conf, true)
        .unwrap();
    let p = e
        .open_udp(now, sa("10.0.0.1:6"), Some(from), Conf::default(), false)
        .unwrap();
    let ext = LinkTarget::External {
        kind: Kind::Udp,
        open: true,
    };
    let l = e.link(p, ext, None, None).unwrap();
    for i in 0..pipe_core::MAX_EVENTS {
        e.handle_datagram(now, filler, from, &(i as u32).to_be_bytes());
    }
    e.handle_datagram(now, p, from, b"x");
    let st = e.stats(p).unwrap();
    assert_eq!(
        (st.received, st.events_dropped, st.forward_failed),
        (1, 1, 1)
    );
    evs(&mut e);
    e.handle_datagram(now, p, from, b"y");
    let forwards: Vec<Bytes> = evs(&mut e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Forward {
                from, link, data, ..
            } if from == p && link == l => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(forwards, [Bytes::from_static(b"y")]);
    let st = e.stats(p).unwrap();
    assert_eq!((st.events_dropped, st.forward_failed), (1, 1));
}

/// `is_read_closed` is false for an open pipe whose peer has not closed (TCP or UDP), true
/// after the peer's FIN, and true for a pipe the engine no longer holds.
/// Kills: `engine/half.rs` `Engine::is_read_closed` delete `!` in `|| !p.is_open()` (98:51 on
/// d9b3df5).
#[test]
fn is_read_closed_only_after_the_peers_fin() {
    let (mut e, now) = engine();
    let t = e
        .open_tcp(
            now,
            sa("10.0.0.1:5"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    assert!(!e.is_read_closed(t), "open, nothing from the peer yet");
    e.handle_stream(now, t, b"data");
    assert!(!e.is_read_closed(t));
    e.handle_peer_closed(now, t, false);
    assert!(e.is_read_closed(t));
    let u = e
        .open_udp(now, sa("10.0.0.1:6"), None, Conf::default(), false)
        .unwrap();
    assert!(!e.is_read_closed(u), "an open UDP pipe");
    e.close(now, u);
    evs(&mut e);
    assert_eq!(e.state(u), None);
    assert!(e.is_read_closed(u), "a forgotten pipe");
}

/// A reliable-UDP sequence number exactly `2^32` above a counting sender's highest is far (a
/// random P2PD number: delivered, the sender's window stays where it was), not a jump of the
/// window: the sender's next number in sequence is still delivered.
/// Kills: `dedup.rs` `RecvWindow::check` `<` with `<=` in `up < NEAR` (374:15 on d9b3df5:
/// the window moved up by `2^32` and the next number in sequence was too old).
#[test]
fn a_reliable_sequence_number_two_to_the_32_above_the_highest_is_far_not_a_jump() {
    let (mut e, now, p) = seeded_reliable(1);
    let from = sa("10.0.0.2:5");
    let data = |e: &mut Engine, seq: u64, m: &[u8]| {
        e.handle_datagram(
            now,
            p,
            from,
            &pipe_core::rudp::encode(seq, pipe_core::rudp::FLAG_DATA, m),
        );
    };
    let high = 1u64 << 40;
    data(&mut e, high - 1, b"a");
    data(&mut e, high, b"b");
    data(&mut e, high + (1 << 32), b"far");
    data(&mut e, high + 1, b"c");
    evs(&mut e);
    let got: Vec<Bytes> =
        std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data)).collect();
    assert_eq!(got, [&b"a"[..], b"b", b"far", b"c"]);
    assert_eq!(e.stats(p).unwrap().reliable_too_old, 0);
}

/// With a large `max_out_bytes`, engine-made transmits fill up to their hard cap
/// (`4 × max_out_bytes + MAX_UDP_V6`), and `within_caps` allows it: its bound on queued bytes
/// is that cap plus the user's own `max_out_bytes` (and a little slack), not less.
/// Kills: `engine/mod.rs` `Engine::within_caps` `+` with `-` in `internal_cap +
/// p.conf.max_out_bytes` (1154:52 on d9b3df5: a bound below the hard cap once `max_out_bytes`
/// exceeds the slack, here 1,000).
#[test]
fn within_caps_allows_engine_made_transmits_up_to_their_hard_cap_with_a_large_buffer() {
    let max_out = 1000;
    let cap = 4 * max_out + pipe_core::MAX_UDP_V6;
    let fit = cap / 9; // an ACK is 9 bytes
    let (e, p) = unacked_data_frames(max_out, fit + 3);
    assert_eq!(e.out_bytes(p), fit * 9);
    assert_eq!(e.stats(p).unwrap().out_dropped, 3);
    assert!(e.within_caps());
}

/// A deadline that fires for an ended pipe before its close deadline (here a `recv_wait`
/// deadline) leaves its queued output alone: it is discarded only at the close deadline.
/// Kills: `engine/mod.rs` `Engine::fire_deadline` `&&` with `||` in `!p.out_idle() &&
/// passed(p.t.ended, Some(c.close_timeout))` (1330:33 on d9b3df5).
#[test]
fn an_early_deadline_of_a_closing_pipe_keeps_its_output_until_the_close_deadline() {
    use pipe_core::State;
    use std::time::Duration;
    let (mut e, now) = engine();
    let t = e
        .open_tcp(
            now,
            sa("10.0.0.1:5"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    e.send(now, t, b"last words", None).unwrap();
    e.close(now, t);
    assert_eq!(e.state(t), Some(State::Closing));
    let close = Conf::default().close_timeout;
    let early = now + close / 2;
    e.recv_wait(t, early);
    e.handle_timeout(early);
    let ev = std::iter::from_fn(|| e.poll_event()).collect::<Vec<_>>();
    assert!(ev.contains(&Event::RecvDue { pipe: t }));
    assert!(
        !ev.iter().any(|ev| matches!(ev, Event::Released { .. })),
        "{ev:?}"
    );
    assert_eq!(e.state(t), Some(State::Closing));
    assert_eq!(&e.peek_transmit(t).unwrap().0[..], b"last words");
    e.handle_timeout(now + close + Duration::from_millis(1));
    let ev = std::iter::from_fn(|| e.poll_event()).collect::<Vec<_>>();
    assert!(
        ev.iter()
            .any(|ev| matches!(ev, Event::Released { pipe, unsent: 10 } if *pipe == t)),
        "{ev:?}"
    );
}

/// An accepted connection whose holdings do not change but whose callback jobs reach
/// `max_callback_jobs` pauses: a zero-length frame adds a callback job and no bytes.
/// Kills: `engine/mod.rs` `Engine::settle` `==` with `!=` in the early return's `own ==
/// p.t.paused` (1392:31 on d9b3df5: the early return then skipped exactly this pipe).
#[test]
fn a_callback_job_without_bytes_past_the_job_cap_pauses_a_connection() {
    let (mut e, now) = engine();
    let conf = Conf {
        framing: pipe_core::Framing::LengthPrefixed { max: 100 },
        max_callback_jobs: 1,
        ..Conf::default()
    };
    let listen = sa("10.0.0.1:80");
    let l = e.open_listener(now, listen, conf, true).unwrap();
    let c = e.handle_accepted(now, l, listen, sa("10.0.0.2:9")).unwrap();
    evs(&mut e);
    e.handle_stream(now, c, &[0, 0, 0, 0]);
    let ev = evs(&mut e);
    assert!(
        ev.iter().any(
            |ev| matches!(ev, Event::Message { pipe, msg } if *pipe == c && msg.data.is_empty())
        ),
        "{ev:?}"
    );
    assert!(ev.contains(&Event::Pause { pipe: c }), "{ev:?}");
    e.handle_callback_done(c, 0);
    assert!(evs(&mut e).contains(&Event::Resume { pipe: c }));
}

/// A delimited frame found too large ends the pipe with the deframer still holding what it
/// buffered, up to `max + delim.len()` bytes; `within_caps` allows that (here with a one-byte
/// delimiter, the pipe kept by a message still queued).
/// Kills: `framing.rs` `Deframer::max_buffered` `+` with `*` in `max +
/// delim.len()` (101:54: `max × 1` is one byte short).
#[test]
fn within_caps_allows_a_delimited_buffer_left_by_an_oversize_frame() {
    use pipe_core::{EndReason, Framing};
    let (mut e, now) = engine();
    let max = 50;
    let conf = Conf {
        framing: Framing::Delimited {
            delim: Bytes::from_static(b"\n"),
            max,
        },
        ..Conf::default()
    };
    let t = e
        .open_tcp(now, sa("10.0.0.1:5"), sa("10.0.0.2:80"), conf, false)
        .unwrap();
    evs(&mut e);
    e.handle_stream(now, t, b"a\nb");
    assert!(e.within_caps());
    e.handle_stream(now, t, &[b'x'; 60]);
    let ev = evs(&mut e);
    assert!(
        ev.iter().any(|ev| matches!(
            ev,
            Event::End {
                reason: EndReason::FrameTooLarge { .. },
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(
        e.queue_len(t, SubId::ALL),
        Some(1),
        "kept by the queued \"a\""
    );
    assert!(e.within_caps());
}

/// A link with a `from` filter forwards only that sender's messages: with a port, only that
/// port; with port 0, any port of that IP.
/// Kills: `engine/inbound.rs` `Engine::sinks` `==` with `!=` in `f.port() == from.port()`
/// (308:82 on d9b3df5).
#[test]
fn a_link_from_filter_with_a_port_forwards_only_that_port() {
    use pipe_core::{Kind, LinkTarget};
    let (mut e, now) = engine();
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), None, Conf::default(), false)
        .unwrap();
    let ext = LinkTarget::External {
        kind: Kind::Udp,
        open: true,
    };
    let one = e.link(p, ext, None, Some(sa("10.0.0.2:7"))).unwrap();
    let any = e.link(p, ext, None, Some(sa("10.0.0.2:0"))).unwrap();
    evs(&mut e);
    let forwards = |e: &mut Engine, from: &str| -> Vec<pipe_core::LinkId> {
        e.handle_datagram(now, p, sa(from), b"m");
        evs(e)
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Forward { link, .. } => Some(link),
                _ => None,
            })
            .collect()
    };
    assert_eq!(forwards(&mut e, "10.0.0.2:7"), [one, any]);
    assert_eq!(forwards(&mut e, "10.0.0.2:8"), [any]);
    assert_eq!(forwards(&mut e, "10.0.0.3:7"), []);
}

/// An accepted connection still waiting for `accept()` pauses once its fallback queue could
/// not take one more read of 16 KiB (one TLS record's plaintext), even when `reader_limit` is
/// smaller.
/// Kills: `engine/state.rs` `PipeState::fallback_full` `<<` with `>>` in `1 << 14` (484:49 on
/// d9b3df5: the read was then taken as `reader_limit` alone).
#[test]
fn a_waiting_connections_fallback_pauses_a_tls_record_before_its_byte_cap() {
    let (mut e, now) = engine();
    let conf = Conf {
        reader_limit: 512,
        max_queue_bytes: 20_000,
        max_qsize: 1000,
        ..Conf::default()
    };
    let listen = sa("10.0.0.1:80");
    let l = e.open_listener(now, listen, conf, false).unwrap();
    let c = e.handle_accepted(now, l, listen, sa("10.0.0.2:9")).unwrap();
    evs(&mut e);
    e.handle_stream(now, c, &[1; 3000]);
    assert!(
        !evs(&mut e).contains(&Event::Pause { pipe: c }),
        "3,000 + 16 KiB fit"
    );
    e.handle_stream(now, c, &[2; 1000]);
    assert!(
        evs(&mut e).contains(&Event::Pause { pipe: c }),
        "4,000 + 16 KiB do not fit in 20,000"
    );
}

/// A connection's bytes leave its server's budget as soon as they are read (`recv`) or
/// written (the driver takes the transmit), so another connection's read that fits beside
/// what is still held pauses nobody.
/// Kills: `engine/state.rs` `PipeState::settled` `delete !` (503:9 on 22adaa8: a connection
/// not paused would skip `settle` after `recv` and `after_write`, leaving its bytes counted).
#[test]
fn a_connections_bytes_leave_the_server_budget_once_read_or_written() {
    let (mut e, now) = engine();
    let conf = Conf {
        max_server_bytes: 10_000,
        ..Conf::default()
    };
    let listen = sa("10.0.0.1:80");
    let l = e.open_listener(now, listen, conf, false).unwrap();
    let a = e.handle_accepted(now, l, listen, sa("10.0.0.2:1")).unwrap();
    let b = e.handle_accepted(now, l, listen, sa("10.0.0.2:2")).unwrap();
    for c in [a, b] {
        assert_eq!(e.subscribe(c, Filter::all()), Ok(SubId::ALL));
    }
    evs(&mut e);
    let pauses = |e: &mut Engine| {
        evs(e)
            .into_iter()
            .filter(|ev| matches!(ev, Event::Pause { .. }))
            .count()
    };
    // Read: a's 6,000 bytes are gone before b's 6,000 arrive.
    e.handle_stream(now, a, &[1; 6000]);
    assert_eq!(e.recv(a, SubId::ALL).unwrap().unwrap().data.len(), 6000);
    e.handle_stream(now, b, &[2; 6000]);
    assert_eq!(pauses(&mut e), 0, "6,000 of 10,000 held");
    assert_eq!(e.recv(b, SubId::ALL).unwrap().unwrap().data.len(), 6000);
    // Written: a's 6,000 queued bytes leave with the transmit (`evs` takes it).
    e.send(now, a, &[3; 6000], None).unwrap();
    assert_eq!(e.out_bytes(a), 6000);
    assert_eq!(pauses(&mut e), 0);
    assert_eq!(e.out_bytes(a), 0);
    e.handle_stream(now, b, &[4; 6000]);
    assert_eq!(pauses(&mut e), 0, "6,000 of 10,000 held");
    assert!(e.within_caps());
}

/// Messages waiting for their callbacks keep their place and order when lists come from and
/// go to the engine's spare: one message through, then six waiting at once (a list of eight
/// places, too large to be kept as the spare), then their callbacks done one by one.
/// Kills: `engine/subs.rs` `push_held` `held.capacity() == 0` with `!=` (215:24 on 22adaa8:
/// a waiting list was replaced by the spare, losing what waited), and in
/// `Engine::callbacks_finished` `<=` with `>` (142:36) and `&&` with `||` (142:50): the
/// engine then kept a spare over `SPARE_HELD` places (`Engine::within_caps`).
#[test]
fn messages_waiting_for_callbacks_keep_their_place_through_the_spare_list() {
    let (mut e, now) = engine();
    let from = sa("10.0.0.2:5");
    let p = e
        .open_udp(now, sa("10.0.0.1:5"), Some(from), Conf::default(), false)
        .unwrap();
    e.set_callbacks(p, true);
    evs(&mut e);
    let arrive = |e: &mut Engine, n: u8| {
        e.handle_datagram(now, p, from, &[n]);
        let got: Vec<u8> = evs(e)
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Message { msg, .. } => Some(msg.data[0]),
                _ => None,
            })
            .collect();
        assert_eq!(got, [n], "the callback event of {n}");
        assert!(e.within_caps());
    };
    let read = |e: &mut Engine| -> Vec<u8> {
        std::iter::from_fn(|| e.recv(p, SubId::ALL).unwrap())
            .map(|m| m.data[0])
            .collect()
    };
    arrive(&mut e, 1);
    assert_eq!(read(&mut e), [] as [u8; 0], "1 waits for its callback");
    e.handle_callback_done(p, 1);
    assert_eq!(read(&mut e), [1]);
    assert!(e.within_caps());
    for n in 2..=7 {
        arrive(&mut e, n);
    }
    assert_eq!(read(&mut e), [] as [u8; 0]);
    let mut got = Vec::new();
    for _ in 2..=7 {
        e.handle_callback_done(p, 1);
        assert!(e.within_caps());
        got.extend(read(&mut e));
    }
    assert_eq!(got, [2, 3, 4, 5, 6, 7]);
}
