//! Rules of stamped relaying (`Conf::relay_stamp`: origin, message id, hop limit) and of the
//! reliable-UDP receive window (per-sender sliding window, FIFO set for random sequence
//! numbers, sender table cap). Engines are driven directly.

mod world;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pipe_core::relay::{self, Stamp};
use pipe_core::{
    rudp, sender_cap, Conf, ConfError, Engine, Event, Filter, Framing, LinkTarget, PipeId, SubId,
    Transmit, MAX_RELIABLE_SENDERS,
};
use world::{base_instant, sa};

fn engine() -> (Engine, Instant) {
    (Engine::new(7), base_instant())
}

fn txs(e: &mut Engine) -> Vec<Transmit> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn evs(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn recv_all(e: &mut Engine, p: PipeId) -> Vec<Bytes> {
    std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data)).collect()
}

fn stamped() -> Conf {
    Conf {
        relay_stamp: true,
        ..Conf::default()
    }
}

/// A stamping relay: `input` (10.0.0.1:1000, subscribed to all) linked to `out`
/// (10.0.0.1:2000 → 10.0.0.9:9).
struct Relay {
    e: Engine,
    now: Instant,
    input: PipeId,
    out: PipeId,
}

fn relay(conf: Conf) -> Relay {
    relay_in(Engine::new(7), conf)
}

fn relay_in(mut e: Engine, conf: Conf) -> Relay {
    let now = base_instant();
    let input = e
        .open_udp(now, sa("10.0.0.1:1000"), None, conf.clone(), false)
        .unwrap();
    e.subscribe(input, Filter::all()).unwrap();
    let out = e
        .open_udp(now, sa("10.0.0.1:2000"), Some(sa("10.0.0.9:9")), conf, true)
        .unwrap();
    e.link(input, LinkTarget::Local(out), None, None).unwrap();
    txs(&mut e);
    evs(&mut e);
    Relay { e, now, input, out }
}

impl Relay {
    /// Hand `data` to the relay's input from `from`; return what it forwarded, decoded.
    fn feed(&mut self, from: &str, data: &[u8]) -> Vec<(Stamp, Bytes)> {
        self.e.handle_datagram(self.now, self.input, sa(from), data);
        txs(&mut self.e)
            .into_iter()
            .map(|t| {
                assert_eq!(t.pipe, self.out);
                let (s, body) = relay::decode(&t.payload)
                    .expect("well formed")
                    .expect("forwards carry the stamp");
                (s, Bytes::copy_from_slice(body))
            })
            .collect()
    }

    fn delivered(&mut self) -> Vec<Bytes> {
        recv_all(&mut self.e, self.input)
    }

    fn stats(&self) -> pipe_core::Stats {
        self.e.stats(self.input).unwrap()
    }
}

fn stamp(origin: u64, id: u64, hops: u8) -> Stamp {
    Stamp { origin, id, hops }
}

// ---- the stamp header ---------------------------------------------------------------------

#[test]
fn header_round_trip_through_a_relay() {
    let mut r = relay(stamped());
    let s = stamp(0xAB, 42, 5);
    let fwd = r.feed("10.0.0.5:5", &relay::encode(s, b"payload"));
    assert_eq!(
        fwd,
        [(stamp(0xAB, 42, 4), Bytes::from_static(b"payload"))],
        "same origin and id, one hop less"
    );
    assert_eq!(
        r.delivered(),
        ["payload"],
        "local sinks get the payload alone"
    );
    // An empty payload is a message too.
    let fwd = r.feed("10.0.0.5:5", &relay::encode(stamp(0xAB, 43, 5), b""));
    assert_eq!(fwd, [(stamp(0xAB, 43, 4), Bytes::new())]);
    assert_eq!(r.delivered(), [""]);
    let st = r.stats();
    assert_eq!((st.received, st.forwarded, st.malformed), (2, 2, 0));
}

#[test]
fn header_round_trip_through_callbacks_and_external_links() {
    let (mut e, now) = engine();
    let input = e
        .open_udp(now, sa("10.0.0.1:1000"), None, stamped(), true)
        .unwrap();
    let link = e
        .link(
            input,
            LinkTarget::External {
                kind: pipe_core::Kind::Udp,
                open: true,
            },
            None,
            None,
        )
        .unwrap();
    evs(&mut e);
    e.handle_datagram(now, input, sa("10.0.0.5:5"), b"original");
    let events = evs(&mut e);
    let forwarded: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Forward { link: l, data, .. } if *l == link => Some(data.clone()),
            _ => None,
        })
        .collect();
    let messages: Vec<_> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Message { msg, .. } => Some(msg.data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        ["original"],
        "the callback gets the payload alone"
    );
    assert_eq!(forwarded.len(), 1);
    let (s, body) = relay::decode(&forwarded[0]).unwrap().unwrap();
    assert_eq!((s.id, s.hops, body), (0, 7, &b"original"[..]));
}

#[test]
fn malformed_header_is_dropped_and_counted() {
    let mut r = relay(stamped());
    for len in [4, 5, relay::HEADER - 1] {
        let mut m = b"PRS1".to_vec();
        m.resize(len, 0xEE);
        assert!(
            r.feed("10.0.0.5:5", &m).is_empty(),
            "{len} bytes: not forwarded"
        );
    }
    assert!(r.delivered().is_empty(), "nor delivered");
    let st = r.stats();
    assert_eq!((st.received, st.malformed, st.forwarded), (3, 3, 0));
    // "PRS" alone is not the magic: an original.
    assert_eq!(r.feed("10.0.0.5:5", b"PRS").len(), 1);
    assert_eq!(r.delivered(), ["PRS"]);
}

#[test]
fn without_relay_stamp_the_header_is_just_bytes() {
    // P2PD parity: a pipe that does not stamp neither strips, drops nor adds anything.
    let (mut e, now) = engine();
    let input = e
        .open_udp(now, sa("10.0.0.1:1000"), None, Conf::default(), false)
        .unwrap();
    e.subscribe(input, Filter::all()).unwrap();
    let out = e
        .open_udp(
            now,
            sa("10.0.0.1:2000"),
            Some(sa("10.0.0.9:9")),
            Conf::default(),
            true,
        )
        .unwrap();
    e.link(input, LinkTarget::Local(out), None, None).unwrap();
    txs(&mut e);
    let stamped = relay::encode(stamp(1, 2, 1), b"x");
    for m in [&stamped[..], b"PRS1", b"plain"] {
        e.handle_datagram(now, input, sa("10.0.0.5:5"), m);
        let fwd = txs(&mut e);
        assert_eq!(fwd.len(), 1);
        assert_eq!(&fwd[0].payload[..], m, "forwarded as it came");
    }
    assert_eq!(
        recv_all(&mut e, input),
        [&stamped[..], b"PRS1", b"plain"],
        "delivered as it came"
    );
    assert_eq!(e.stats(input).unwrap().malformed, 0);
}

// ---- hop limit ----------------------------------------------------------------------------

#[test]
fn hop_limit_is_exactly_eight() {
    let mut r = relay(stamped());
    // An original gets hops 8 here and leaves with 7: it may reach 7 more relays.
    let fwd = r.feed("10.0.0.5:5", b"original");
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].0.hops, 7);
    // Follow it along a chain of relays: received with 8, 7, ..., 1; the last forwards nothing.
    let mut received_with = vec![8];
    let mut msg = relay::encode(fwd[0].0, &fwd[0].1);
    for i in 0.. {
        let mut next = relay(stamped());
        let (s, _) = relay::decode(&msg).unwrap().unwrap();
        received_with.push(s.hops);
        let out = next.feed("10.0.0.5:5", &msg);
        assert_eq!(next.delivered(), ["original"], "relay {i} delivers");
        match out.as_slice() {
            [] => {
                assert_eq!(next.stats().hop_limited, 1);
                break;
            }
            [(s, body)] => msg = relay::encode(*s, body),
            _ => unreachable!(),
        }
    }
    assert_eq!(received_with, [8, 7, 6, 5, 4, 3, 2, 1]);
}

#[test]
fn hops_left_one_is_delivered_locally_but_not_forwarded() {
    let mut r = relay(stamped());
    assert!(r
        .feed("10.0.0.5:5", &relay::encode(stamp(9, 1, 1), b"last"))
        .is_empty());
    assert_eq!(r.delivered(), ["last"]);
    // Hops 0 (never sent by this project) is treated the same.
    assert!(r
        .feed("10.0.0.5:5", &relay::encode(stamp(9, 2, 0), b"zero"))
        .is_empty());
    assert_eq!(r.delivered(), ["zero"]);
    // Hops 2 still goes one relay further.
    let fwd = r.feed("10.0.0.5:5", &relay::encode(stamp(9, 3, 2), b"two"));
    assert_eq!(fwd, [(stamp(9, 3, 1), Bytes::from_static(b"two"))]);
    let st = r.stats();
    assert_eq!((st.hop_limited, st.forwarded, st.unclaimed), (2, 1, 0));
}

#[test]
fn relay_hops_sets_the_originals_budget_and_is_validated() {
    let mut r = relay(Conf {
        relay_hops: 1,
        ..stamped()
    });
    assert!(r.feed("10.0.0.5:5", b"x").is_empty(), "hops 1: no forward");
    assert_eq!(r.delivered(), ["x"]);
    let mut r = relay(Conf {
        relay_hops: 64,
        ..stamped()
    });
    assert_eq!(r.feed("10.0.0.5:5", b"x")[0].0.hops, 63);
    for bad in [0u8, 65, 255] {
        let c = Conf {
            relay_hops: bad,
            ..stamped()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfError::OutOfRange {
                key: "relay_hops",
                ..
            })
        ));
    }
}

// ---- dedup on (origin, id) ----------------------------------------------------------------

#[test]
fn stamps_dedup_across_last_hops_whatever_enable_msg_ids_says() {
    for msg_ids in [false, true] {
        let mut r = relay(Conf {
            enable_msg_ids: msg_ids,
            ..stamped()
        });
        let m = relay::encode(stamp(5, 1, 8), b"same");
        assert_eq!(r.feed("10.0.0.5:5", &m).len(), 1);
        assert!(r.feed("10.0.0.6:6", &m).is_empty(), "another relay's copy");
        assert!(r.feed("10.0.0.5:7", &m).is_empty(), "another port's copy");
        let fewer_hops = relay::encode(stamp(5, 1, 3), b"same");
        assert!(
            r.feed("10.0.0.7:7", &fewer_hops).is_empty(),
            "hops are no part of the id"
        );
        assert_eq!(r.delivered(), ["same"]);
        assert_eq!(r.stats().duplicates, 3);
        // Another id, or another origin, is another message (same payload, new last hop).
        let fwd = r.feed("10.0.0.8:8", &relay::encode(stamp(5, 2, 8), b"same"));
        assert_eq!(fwd.len(), 1);
        let fwd = r.feed("10.0.0.9:8", &relay::encode(stamp(6, 1, 8), b"same"));
        assert_eq!(fwd.len(), 1);
        assert_eq!(r.delivered(), ["same", "same"]);
    }
}

#[test]
fn stamp_window_is_lru_and_capped_by_max_msg_ids() {
    let mut r = relay(Conf {
        max_msg_ids: 2,
        ..stamped()
    });
    let m = |id| relay::encode(stamp(1, id, 8), b"m");
    assert_eq!(r.feed("10.0.0.5:5", &m(1)).len(), 1);
    assert_eq!(r.feed("10.0.0.5:5", &m(2)).len(), 1);
    assert!(r.feed("10.0.0.5:5", &m(1)).is_empty(), "1 seen, refreshed");
    assert_eq!(r.feed("10.0.0.5:5", &m(3)).len(), 1, "evicts 2");
    assert!(r.feed("10.0.0.5:5", &m(1)).is_empty(), "1 kept");
    assert_eq!(r.feed("10.0.0.5:5", &m(2)).len(), 1, "2 forgotten");
    assert!(r.e.within_caps());
}

#[test]
fn an_original_is_recorded_so_its_echo_is_dropped() {
    let mut r = relay(stamped());
    let fwd = r.feed("10.0.0.5:5", b"hello");
    assert_eq!(fwd.len(), 1);
    let (s, body) = &fwd[0];
    // Its copy comes back around a cycle, through another relay, with fewer hops.
    let echo = relay::encode(Stamp { hops: 5, ..*s }, body);
    assert!(r.feed("10.0.0.6:6", &echo).is_empty());
    assert_eq!(r.delivered(), ["hello"]);
    assert_eq!(r.stats().duplicates, 1);
    // The same payload sent again is a new original, with the next id of this engine.
    let again = r.feed("10.0.0.5:5", b"hello");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].0.origin, again[0].0.id),
        (s.origin, s.id + 1),
        "one origin per engine, ids count"
    );
}

#[test]
fn one_origin_per_engine_shared_by_its_pipes() {
    let (mut e, now) = engine();
    let mut origins = Vec::new();
    let mut ids = Vec::new();
    for port in [1000, 1001] {
        let input = e
            .open_udp(
                now,
                SocketAddr::from(([10, 0, 0, 1], port)),
                None,
                stamped(),
                false,
            )
            .unwrap();
        let out = e
            .open_udp(
                now,
                SocketAddr::from(([10, 0, 0, 1], port + 1000)),
                Some(sa("10.0.0.9:9")),
                stamped(),
                true,
            )
            .unwrap();
        e.link(input, LinkTarget::Local(out), None, None).unwrap();
        txs(&mut e);
        e.handle_datagram(now, input, sa("10.0.0.5:5"), b"o");
        let t = txs(&mut e).pop().unwrap();
        let (s, _) = relay::decode(&t.payload).unwrap().unwrap();
        origins.push(s.origin);
        ids.push(s.id);
    }
    assert_eq!(origins[0], origins[1]);
    assert_eq!(ids, [0, 1]);
    // Another engine (another seed) has another origin.
    let mut other = relay_in(Engine::new(8), stamped());
    let s = other.feed("10.0.0.5:5", b"o")[0].0;
    assert_ne!(s.origin, origins[0]);
}

// ---- TCP ----------------------------------------------------------------------------------

#[test]
fn relay_stamp_with_raw_tcp_is_refused() {
    let (mut e, now) = engine();
    let refused = |r: Result<PipeId, ConfError>| {
        assert!(
            matches!(
                r,
                Err(ConfError::Incompatible {
                    key: "relay_stamp",
                    ..
                })
            ),
            "{r:?}"
        );
    };
    refused(e.open_tcp(now, sa("10.0.0.1:1"), sa("10.0.0.2:80"), stamped(), false));
    refused(e.open_listener(now, sa("10.0.0.1:80"), stamped(), false));
    assert_eq!(e.pipe_count(), 0);
    let msg = stamped()
        .validate_for(pipe_core::Proto::Tcp)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("framing"), "{msg}");
    // UDP has message boundaries; framed TCP too.
    assert!(stamped().validate_for(pipe_core::Proto::Udp).is_ok());
    let framed = Conf {
        framing: Framing::LengthPrefixed { max: 1000 },
        ..stamped()
    };
    e.open_tcp(
        now,
        sa("10.0.0.1:1"),
        sa("10.0.0.2:80"),
        framed.clone(),
        false,
    )
    .unwrap();
    e.open_listener(now, sa("10.0.0.1:80"), framed, false)
        .unwrap();
}

#[test]
fn framed_tcp_relay_stamps_frames() {
    // A framed TCP connection linked to a UDP pipe: frames in, stamped datagrams out, and a
    // stamped frame coming back is unstamped and dropped as seen.
    let (mut e, now) = engine();
    let framed = Conf {
        framing: Framing::LengthPrefixed { max: 1000 },
        ..stamped()
    };
    let tcp = e
        .open_tcp(now, sa("10.0.0.1:1"), sa("10.0.0.2:80"), framed, false)
        .unwrap();
    let out = e
        .open_udp(
            now,
            sa("10.0.0.1:2000"),
            Some(sa("10.0.0.9:9")),
            stamped(),
            true,
        )
        .unwrap();
    e.link(tcp, LinkTarget::Local(out), None, None).unwrap();
    txs(&mut e);
    let frame = |m: &[u8]| {
        let mut v = (m.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    };
    e.handle_stream(now, tcp, &frame(b"over tcp"));
    let t = txs(&mut e);
    assert_eq!(t.len(), 1);
    let (s, body) = relay::decode(&t[0].payload).unwrap().unwrap();
    assert_eq!((s.hops, body), (7, &b"over tcp"[..]));
    assert_eq!(recv_all(&mut e, tcp), ["over tcp"]);
    e.handle_stream(
        now,
        tcp,
        &frame(&relay::encode(Stamp { hops: 3, ..s }, body)),
    );
    assert!(txs(&mut e).is_empty());
    assert!(recv_all(&mut e, tcp).is_empty());
    assert_eq!(e.stats(tcp).unwrap().duplicates, 1);
}

// ---- reliable-UDP receive window ------------------------------------------------------------

fn rconf() -> Conf {
    Conf {
        reliable_udp: true,
        max_qsize: 0,
        ..Conf::default()
    }
}

/// A reliable pipe at 10.0.0.2:2000 subscribed to all.
fn receiver() -> (Engine, Instant, PipeId) {
    let (mut e, now) = engine();
    let b = e
        .open_udp(now, sa("10.0.0.2:2000"), None, rconf(), false)
        .unwrap();
    e.subscribe(b, Filter::all()).unwrap();
    evs(&mut e);
    (e, now, b)
}

/// Feed a data frame; return the ACKed seqs.
fn data(e: &mut Engine, now: Instant, b: PipeId, from: SocketAddr, seq: u64, m: &[u8]) -> Vec<u64> {
    e.handle_datagram(now, b, from, &rudp::encode(seq, rudp::FLAG_DATA, m));
    txs(e)
        .into_iter()
        .map(|t| match rudp::decode(&t.payload) {
            Ok(rudp::Frame::Ack { seq }) => {
                assert_eq!(t.dst, from);
                seq
            }
            other => panic!("not an ACK: {other:?}"),
        })
        .collect()
}

#[test]
fn window_drops_in_window_repeats_and_acks_them() {
    let (mut e, now, b) = receiver();
    let a = sa("10.0.0.1:1000");
    let start = 1u64 << 40;
    for i in 0..1000 {
        assert_eq!(data(&mut e, now, b, a, start + i, b"m"), [start + i]);
    }
    assert_eq!(recv_all(&mut e, b).len(), 1000);
    // 999 newer seqs arrived since start + 1; it is still inside the 1,024-wide window.
    for seq in [start + 1, start + 999, start + 500] {
        assert_eq!(data(&mut e, now, b, a, seq, b"m"), [seq], "acked again");
    }
    assert!(recv_all(&mut e, b).is_empty(), "never delivered twice");
    let st = e.stats(b).unwrap();
    assert_eq!((st.reliable_repeats, st.reliable_too_old), (3, 0));
    // Reordering inside the window: a gap filled late is delivered once.
    assert_eq!(
        data(&mut e, now, b, a, start + 1010, b"late"),
        [start + 1010]
    );
    assert_eq!(
        data(&mut e, now, b, a, start + 1005, b"gap"),
        [start + 1005]
    );
    assert_eq!(
        data(&mut e, now, b, a, start + 1005, b"gap"),
        [start + 1005]
    );
    assert_eq!(recv_all(&mut e, b), ["late", "gap"]);
}

#[test]
fn window_drops_too_old_without_an_ack() {
    let (mut e, now, b) = receiver();
    let a = sa("10.0.0.1:1000");
    let start = 77u64;
    assert_eq!(data(&mut e, now, b, a, start, b"first"), [start]);
    for i in 1..=1100 {
        data(&mut e, now, b, a, start + i, b"n");
    }
    recv_all(&mut e, b);
    // "first" again after 1,100 newer: too old. So is one never seen (start + 50).
    for seq in [start, start + 50, start + 1100 - 1024] {
        assert!(
            data(&mut e, now, b, a, seq, b"old").is_empty(),
            "{seq}: no ACK"
        );
    }
    assert!(recv_all(&mut e, b).is_empty(), "never delivered");
    // The oldest number inside the window is still answered.
    let inside = start + 1100 - 1023;
    assert_eq!(data(&mut e, now, b, a, inside, b"x"), [inside]);
    let st = e.stats(b).unwrap();
    assert_eq!((st.reliable_too_old, st.reliable_repeats), (3, 1));
    assert!(e.within_caps());
}

#[test]
fn random_p2pd_seqs_are_deduplicated_by_the_fifo_set() {
    // P2PD picks every seq at random in [1, 2^64): none is near another, so no window applies.
    let (mut e, now, b) = receiver();
    let p2pd = sa("10.0.0.3:3000");
    let mut rng = pipe_core::rng::Rng::new(99);
    let seqs: Vec<u64> = (0..1000).map(|_| rng.next_u64().max(1)).collect();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(
            data(&mut e, now, b, p2pd, *s, format!("p{i}").as_bytes()),
            [*s]
        );
    }
    for s in seqs.iter().rev() {
        assert_eq!(
            data(&mut e, now, b, p2pd, *s, b"again"),
            [*s],
            "acked again"
        );
    }
    assert_eq!(recv_all(&mut e, b).len(), 1000, "each once");
    let st = e.stats(b).unwrap();
    assert_eq!((st.reliable_repeats, st.reliable_too_old), (1000, 0));
    assert!(e.within_caps());
}

#[test]
fn sender_table_cap_evicts_the_least_recently_heard_sender() {
    assert_eq!(
        sender_cap(Conf::default().reliable_window),
        MAX_RELIABLE_SENDERS
    );
    assert_eq!(MAX_RELIABLE_SENDERS, 1024);
    let (mut e, now, b) = receiver();
    let peer = |i: usize| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7));
    let (a, x) = (sa("10.0.0.1:1000"), sa("10.0.0.9:9000"));
    // A and X count up from their starts.
    for seq in [5_000, 5_001] {
        data(&mut e, now, b, a, seq, b"a");
    }
    for seq in [9_000, 9_001] {
        data(&mut e, now, b, x, seq, b"x");
    }
    // 1,022 more senders fill the table (1,024).
    for i in 0..1022 {
        data(&mut e, now, b, peer(i), 1 << 50, b"p");
    }
    // A is heard again; X is now the least recently heard. One more sender evicts X.
    data(&mut e, now, b, a, 5_002, b"a");
    data(&mut e, now, b, peer(5000), 1 << 50, b"p");
    assert!(e.within_caps());
    recv_all(&mut e, b);
    // A kept its window: 5_001 is a repeat.
    assert_eq!(data(&mut e, now, b, a, 5_001, b"a"), [5_001]);
    assert!(recv_all(&mut e, b).is_empty());
    // X lost its window: 9_001 is news again. This is the price of a bounded table, paid by
    // the least recently heard sender.
    assert_eq!(data(&mut e, now, b, x, 9_001, b"x"), [9_001]);
    assert_eq!(recv_all(&mut e, b), ["x"]);
}
