//! One test per rule of pipe-core, each P2PD bug of `reference/p2pd-pipes.md` turned the right
//! way round. Engines are driven directly (no world) so each rule is visible in a few lines.
//! One file on purpose (over the usual length): short independent tests, grouped by area.

mod world;

use std::net::{SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pipe_core::conf::MAX_FRAME;
use pipe_core::{
    AcceptError, Conf, ConfError, DedupKey, Dest, DestError, EndReason, Engine, Event, Family,
    Filter, Framing, Kind, LinkError, LinkTarget, MessageId, Outcome, PipeId, Proto, RecvError,
    SendError, State, SubId, SubscribeError, Transmit, MAX_UDP_V4, MAX_UDP_V6,
};
use world::{base_instant, sa};

const MS: Duration = Duration::from_millis(1);

fn engine() -> (Engine, Instant) {
    (Engine::new(7), base_instant())
}

fn txs(e: &mut Engine) -> Vec<Transmit> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn evs(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// Drain transmits and events, returning the events.
fn drain(e: &mut Engine) -> Vec<Event> {
    txs(e);
    evs(e)
}

fn recv_all(e: &mut Engine, p: PipeId, s: SubId) -> Vec<Bytes> {
    std::iter::from_fn(|| e.recv(p, s).ok().flatten().map(|m| m.data)).collect()
}

fn udp(e: &mut Engine, now: Instant, local: &str, dest: Option<&str>, conf: Conf) -> PipeId {
    e.open_udp(now, sa(local), dest.map(sa), conf, false)
        .unwrap()
}

/// A UDP pipe without a destination (a server) subscribed to everything.
fn udp_server(e: &mut Engine, now: Instant, local: &str, conf: Conf) -> PipeId {
    let p = udp(e, now, local, None, conf);
    assert_eq!(e.subscribe(p, Filter::all()), Ok(SubId::ALL));
    p
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

fn ups(events: &[Event]) -> Vec<PipeId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Up { pipe } => Some(*pipe),
            _ => None,
        })
        .collect()
}

fn reliable(events: &[Event]) -> Vec<(MessageId, Outcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reliable { id, outcome, .. } => Some((*id, *outcome)),
            _ => None,
        })
        .collect()
}

/// A listener on 10.0.0.1:80 and `n` accepted connections from 10.0.0.2:5000+i.
fn server(e: &mut Engine, now: Instant, conf: Conf, n: u16) -> (PipeId, Vec<PipeId>) {
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), conf, false)
        .unwrap();
    let conns = (0..n)
        .map(|i| {
            e.handle_accepted(
                now,
                l,
                sa("10.0.0.1:80"),
                SocketAddr::from(([10, 0, 0, 2], 5000 + i)),
            )
            .unwrap()
        })
        .collect();
    (l, conns)
}

fn rconf() -> Conf {
    Conf {
        reliable_udp: true,
        retry_interval: 100 * MS,
        ..Conf::default()
    }
}

// ---- addressing ---------------------------------------------------------------------

#[test]
fn dest_port_zero_is_rejected() {
    // P2PD: port 0 made pipe_open return None for TCP, and UDP did not validate ports at all.
    assert_eq!(Dest::new("10.0.0.1", 0), Err(DestError::PortZero));
    assert_eq!(Dest::parse("10.0.0.1:0"), Err(DestError::PortZero));
    assert_eq!(Dest::try_from(sa("10.0.0.1:0")), Err(DestError::PortZero));
    assert_eq!(Dest::try_from(sa("[::1]:0")), Err(DestError::PortZero));
    assert!(matches!(
        Dest::parse("10.0.0.1:70000"),
        Err(DestError::BadPort(_))
    ));
    assert!(matches!(
        Dest::parse("10.0.0.1:-1"),
        Err(DestError::BadPort(_))
    ));
    assert_eq!(Dest::new("10.0.0.1", 1).unwrap().port(), 1);
}

#[test]
fn ipv6_compressed_and_exploded_are_one_value() {
    // P2PD compared exploded text, so `::1` was never loopback and unsubscribe failed.
    let a = Dest::new("::1", 80).unwrap();
    assert_eq!(a, Dest::new("0:0:0:0:0:0:0:1", 80).unwrap());
    assert_eq!(
        a,
        Dest::new("0000:0000:0000:0000:0000:0000:0000:0001", 80).unwrap()
    );
    assert_eq!(a, Dest::parse("[::1]:80").unwrap());
    assert_eq!(a, Dest::try_from(sa("[0:0:0:0:0:0:0:1]:80")).unwrap());
    assert_eq!(a.socket_addr(), Some(sa("[::1]:80")));
    assert_eq!(a.to_string(), "[::1]:80");
}

#[test]
fn ipv6_scope_id_is_kept() {
    // P2PD stripped `%scope`, so UDP to link-local destinations failed.
    let d = Dest::new("fe80::1%3", 80).unwrap();
    assert_eq!(d.scope_id(), 3);
    let SocketAddr::V6(v6) = d.socket_addr().unwrap() else {
        panic!("v6")
    };
    assert_eq!(v6.scope_id(), 3);
    assert_eq!(Dest::parse("[fe80::1%3]:80").unwrap(), d);
    assert_eq!(d.to_string(), "[fe80::1%3]:80");
    let from_sock = Dest::try_from(SocketAddr::V6(SocketAddrV6::new(
        "fe80::1".parse().unwrap(),
        80,
        0,
        7,
    )))
    .unwrap();
    assert_eq!(from_sock.scope_id(), 7);
    assert!(matches!(
        Dest::new("10.0.0.1%3", 80),
        Err(DestError::BadScope(_))
    ));
    assert!(matches!(
        Dest::new("fe80::1%eth0", 80),
        Err(DestError::BadScope(_))
    ));

    // The engine sends to the scoped address as given.
    let (mut e, now) = engine();
    let local = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 1000, 0, 3));
    let dest = SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().unwrap(), 2000, 0, 3));
    let p = e
        .open_udp(now, local, Some(dest), Conf::default(), false)
        .unwrap();
    e.send(now, p, b"x", None).unwrap();
    let t = txs(&mut e).pop().unwrap();
    let SocketAddr::V6(dst) = t.dst else {
        panic!("v6")
    };
    assert_eq!(dst.scope_id(), 3);
}

#[test]
fn ipv4_mapped_matches_ipv4_in_subscriptions_and_dedup() {
    let (mut e, now) = engine();
    let conf = Conf {
        enable_msg_ids: true,
        dedup_key: DedupKey::IpPort,
        ..Conf::default()
    };
    let p = udp(&mut e, now, "[::]:1000", None, conf);
    let by_v4 = e.subscribe(p, Filter::from_addr(sa("10.0.0.2:0"))).unwrap();
    let by_mapped = e
        .subscribe(p, Filter::from_addr(sa("[::ffff:10.0.0.2]:0")))
        .unwrap();
    assert_eq!(by_v4, by_mapped, "a mapped address is the same filter");
    e.handle_datagram(now, p, sa("[::ffff:10.0.0.2]:5"), b"one");
    assert_eq!(
        e.queue_len(p, by_v4),
        Some(1),
        "a v4 filter matches a mapped sender"
    );
    e.handle_datagram(now, p, sa("10.0.0.2:5"), b"one");
    assert_eq!(
        e.stats(p).unwrap().duplicates,
        1,
        "a mapped sender is the same sender for dedup"
    );
    assert_eq!(e.queue_len(p, by_v4), Some(1));
}

#[test]
fn unsubscribe_works_with_compressed_ipv6() {
    // P2PD: subscribe normalised the address but unsubscribe did not, so `::1` never unsubscribed.
    let (mut e, now) = engine();
    let p = udp(&mut e, now, "[::1]:1000", None, Conf::default());
    let s = e
        .subscribe(p, Filter::from_addr(sa("[0:0:0:0:0:0:0:1]:5")))
        .unwrap();
    let found = e.find_subscription(p, &Filter::from_addr(sa("[::1]:5")));
    assert_eq!(found, Some(s));
    assert_eq!(e.unsubscribe(p, found.unwrap()), Ok(()));
    assert_eq!(e.recv(p, s), Err(RecvError::NotSubscribed));
}

// ---- Conf -----------------------------------------------------------------------------

#[test]
fn default_conf_is_p2pds_except_max_qsize() {
    let c = Conf::default();
    assert_eq!(c.dns_timeout, Duration::from_secs(2));
    assert_eq!(c.recv_timeout, Duration::from_secs(2));
    assert_eq!(c.con_timeout, Duration::from_secs(2));
    assert_eq!(c.ssl_handshake, Duration::from_secs(4));
    assert_eq!(c.max_msg_ids, 1000);
    assert_eq!(c.reader_limit, 65_536);
    assert_eq!(c.send_retry, 2);
    assert!(c.do_close);
    assert_eq!(c.linger, None);
    assert!(!c.use_ssl && !c.enable_msg_ids && !c.reuse_addr && !c.broadcast && !c.sock_only);
    assert_eq!(c.sock_proto, 0);
    // P2PD's RUDP worker waited 3 s between tries, hard-coded.
    assert_eq!(c.retry_interval, Duration::from_secs(3));
    assert_eq!(c.reliable_tries(), 3);
    // The one deliberate difference: P2PD's 0 (unbounded) became 1024.
    assert_eq!(c.max_qsize, 1024);
    assert_eq!(c.framing, Framing::Raw);
    assert_eq!(c.dedup_key, DedupKey::Ip);
    assert_eq!(c.validate(), Ok(()));
}

/// The shared default conf (what the drivers' builders start from) is the default, valid
/// for both protocols, and recognised only by identity: an equal conf made apart, or the
/// shared one changed through `Arc::make_mut`, is validated like any other, so a bad
/// conf cannot pass as the default.
#[test]
fn shared_default_conf_is_known_valid_and_only_itself() {
    use std::sync::Arc;
    let shared = Conf::shared_default();
    assert!(Conf::is_shared_default(&shared));
    assert!(Arc::ptr_eq(&shared, &Conf::shared_default()));
    assert_eq!(format!("{:?}", *shared), format!("{:?}", Conf::default()));
    assert_eq!(shared.validate_for(Proto::Tcp), Ok(()));
    assert_eq!(shared.validate_for(Proto::Udp), Ok(()));
    assert!(!Conf::is_shared_default(&Arc::new(Conf::default())));
    let mut changed = Conf::shared_default();
    Arc::make_mut(&mut changed).max_qsize = 7;
    assert!(!Conf::is_shared_default(&changed));
    assert_eq!(Conf::shared_default().max_qsize, 1024);

    // The engine validates every other conf it is given, shared or not.
    let (mut e, now) = engine();
    let bad = Arc::new(Conf {
        reader_limit: 1,
        ..Conf::default()
    });
    let err = e.open_tcp(
        now,
        sa("127.0.0.1:1"),
        sa("127.0.0.1:2"),
        Arc::clone(&bad),
        false,
    );
    assert!(
        matches!(
            err,
            Err(ConfError::OutOfRange {
                key: "reader_limit",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(e
        .open_tcp(now, sa("127.0.0.1:1"), sa("127.0.0.1:2"), shared, false)
        .is_ok());
}

#[test]
fn every_conf_validation_error() {
    let hour = Duration::from_secs(3600);
    let d = Conf::default;
    let mut cases: Vec<(Conf, ConfError)> = Vec::new();
    type Set = fn(&mut Conf, Duration);
    let durations: [(&str, Set); 5] = [
        ("dns_timeout", |c, v| c.dns_timeout = v),
        ("ssl_handshake", |c, v| c.ssl_handshake = v),
        ("recv_timeout", |c, v| c.recv_timeout = v),
        ("con_timeout", |c, v| c.con_timeout = v),
        ("retry_interval", |c, v| c.retry_interval = v),
    ];
    for (key, set) in durations {
        let mut c = d();
        set(&mut c, Duration::ZERO);
        cases.push((c, ConfError::ZeroDuration { key }));
        let mut c = d();
        set(&mut c, hour + Duration::from_nanos(1));
        cases.push((c, ConfError::DurationTooLong { key, max: hour }));
        let mut c = d();
        set(&mut c, hour);
        assert_eq!(c.validate(), Ok(()), "{key} = 1 h is allowed");
    }
    cases.push((
        Conf {
            linger: Some(Duration::from_secs(65_536)),
            ..d()
        },
        ConfError::DurationTooLong {
            key: "linger",
            max: Duration::from_secs(65_535),
        },
    ));
    let oor = |key, value: i64, min: i64, max: i64| ConfError::OutOfRange {
        key,
        value,
        min,
        max,
    };
    let mb16 = 16i64 << 20;
    cases.extend([
        (
            Conf {
                sock_proto: -1,
                ..d()
            },
            oor("sock_proto", -1, 0, 255),
        ),
        (
            Conf {
                sock_proto: 256,
                ..d()
            },
            oor("sock_proto", 256, 0, 255),
        ),
        (
            Conf {
                reader_limit: 511,
                ..d()
            },
            oor("reader_limit", 511, 512, mb16),
        ),
        (
            Conf {
                reader_limit: (16 << 20) + 1,
                ..d()
            },
            oor("reader_limit", mb16 + 1, 512, mb16),
        ),
        (
            Conf {
                max_msg_ids: 0,
                ..d()
            },
            oor("max_msg_ids", 0, 1, 1 << 24),
        ),
        (
            Conf {
                max_msg_ids: (1 << 24) + 1,
                ..d()
            },
            oor("max_msg_ids", (1 << 24) + 1, 1, 1 << 24),
        ),
        (
            Conf {
                send_retry: 101,
                ..d()
            },
            oor("send_retry", 101, 0, 100),
        ),
        (
            Conf {
                max_reliable_outstanding: 0,
                ..d()
            },
            oor("max_reliable_outstanding", 0, 1, 1 << 20),
        ),
        (
            Conf {
                reliable_window: 0,
                ..d()
            },
            oor("reliable_window", 0, 1, 1 << 20),
        ),
        (
            Conf {
                max_connections: 0,
                ..d()
            },
            oor("max_connections", 0, 1, 1 << 24),
        ),
        (
            Conf {
                accept_backlog: 0,
                ..d()
            },
            oor("accept_backlog", 0, 1, 1 << 20),
        ),
        (
            Conf {
                max_out_bytes: 0,
                ..d()
            },
            oor("max_out_bytes", 0, 1, 1 << 30),
        ),
        (
            Conf {
                framing: Framing::LengthPrefixed { max: 0 },
                ..d()
            },
            oor("framing.max", 0, 1, MAX_FRAME as i64),
        ),
        (
            Conf {
                framing: Framing::LengthPrefixed { max: MAX_FRAME + 1 },
                ..d()
            },
            oor("framing.max", MAX_FRAME as i64 + 1, 1, MAX_FRAME as i64),
        ),
        (
            Conf {
                framing: Framing::Delimited {
                    delim: Bytes::new(),
                    max: 10,
                },
                ..d()
            },
            ConfError::EmptyDelimiter,
        ),
        (
            Conf {
                framing: Framing::Delimited {
                    delim: Bytes::from(vec![b'x'; 65]),
                    max: 10,
                },
                ..d()
            },
            oor("framing.delim", 65, 1, 64),
        ),
        (
            Conf {
                framing: Framing::Delimited {
                    delim: Bytes::from_static(b"\n"),
                    max: 0,
                },
                ..d()
            },
            oor("framing.max", 0, 1, MAX_FRAME as i64),
        ),
    ]);
    let (mut e, now) = engine();
    for (conf, want) in &cases {
        assert_eq!(conf.validate().as_ref(), Err(want));
        assert_eq!(
            e.open_udp(now, sa("10.0.0.1:1"), None, conf.clone(), false)
                .err()
                .as_ref(),
            Some(want)
        );
        assert_eq!(
            e.open_tcp(now, sa("10.0.0.1:1"), sa("10.0.0.2:2"), conf.clone(), false)
                .err()
                .as_ref(),
            Some(want)
        );
        assert_eq!(
            e.open_listener(now, sa("10.0.0.1:1"), conf.clone(), false)
                .err()
                .as_ref(),
            Some(want)
        );
    }
    let ssl = Conf {
        use_ssl: true,
        ..d()
    };
    // use_ssl with no TLS configuration (pipe-io fills one in for clients).
    assert!(matches!(
        ssl.validate(),
        Err(ConfError::Incompatible { key: "use_ssl", .. })
    ));
    assert_eq!(e.pipe_count(), 0, "no pipe opened with a bad conf");
    // The edges of every range are accepted.
    let edges = Conf {
        sock_proto: 255,
        reader_limit: 512,
        max_msg_ids: 1,
        send_retry: 100,
        max_reliable_outstanding: 1,
        reliable_window: 1,
        max_connections: 1,
        accept_backlog: 1,
        max_out_bytes: 1,
        linger: Some(Duration::from_secs(65_535)),
        framing: Framing::Delimited {
            delim: Bytes::from(vec![b'x'; 64]),
            max: MAX_FRAME,
        },
        max_qsize: 0,
        max_queue_bytes: 0,
        ..d()
    };
    assert_eq!(edges.validate(), Ok(()));
}

// ---- subscriptions and queues -----------------------------------------------------------

#[test]
fn max_qsize_is_per_pipe_and_drops_oldest() {
    // P2PD: q0..q4 into a size-2 queue leaves [q3, q4], but only via the global NET_CONF.
    let (mut e, now) = engine();
    let small = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.2:2000"),
        Conf {
            max_qsize: 2,
            ..Conf::default()
        },
    );
    let big = udp(
        &mut e,
        now,
        "10.0.0.1:1001",
        Some("10.0.0.2:2000"),
        Conf::default(),
    );
    let unbounded = udp(
        &mut e,
        now,
        "10.0.0.1:1002",
        Some("10.0.0.2:2000"),
        Conf {
            max_qsize: 0,
            ..Conf::default()
        },
    );
    for p in [small, big] {
        for i in 0..5 {
            e.handle_datagram(now, p, sa("10.0.0.2:2000"), format!("q{i}").as_bytes());
        }
    }
    assert_eq!(recv_all(&mut e, small, SubId::ALL), ["q3", "q4"]);
    assert_eq!(e.stats(small).unwrap().queue_dropped, 3);
    assert_eq!(recv_all(&mut e, big, SubId::ALL).len(), 5);
    assert_eq!(e.stats(big).unwrap().queue_dropped, 0);
    for i in 0..3000u32 {
        e.handle_datagram(now, unbounded, sa("10.0.0.2:2000"), &i.to_be_bytes());
    }
    assert_eq!(
        e.queue_len(unbounded, SubId::ALL),
        Some(3000),
        "max_qsize 0 opts into unbounded"
    );
    assert!(e.within_caps());
}

#[test]
fn queue_byte_cap_drops_oldest_and_oversize() {
    let (mut e, now) = engine();
    let conf = Conf {
        max_queue_bytes: 10,
        ..Conf::default()
    };
    let p = udp(&mut e, now, "10.0.0.1:1000", Some("10.0.0.2:2000"), conf);
    for m in ["aaaa", "bbbb", "cccc"] {
        e.handle_datagram(now, p, sa("10.0.0.2:2000"), m.as_bytes());
    }
    e.handle_datagram(now, p, sa("10.0.0.2:2000"), b"0123456789A");
    assert_eq!(
        e.stats(p).unwrap().queue_dropped,
        2,
        "one evicted for bytes, one too large to ever fit"
    );
    assert!(e.within_caps());
    assert_eq!(recv_all(&mut e, p, SubId::ALL), ["bbbb", "cccc"]);
}

#[test]
fn regex_searches_anywhere_unless_anchored() {
    let (mut e, now) = engine();
    let p = udp(&mut e, now, "10.0.0.1:1000", None, Conf::default());
    let subs: Vec<(SubId, bool)> = [
        ("b", true),
        ("^a", true),
        ("c$", true),
        ("^b", false),
        ("a$", false),
        ("b.", true),
    ]
    .into_iter()
    .map(|(pat, hit)| (e.subscribe(p, Filter::pattern(pat).unwrap()).unwrap(), hit))
    .collect();
    e.handle_datagram(now, p, sa("10.0.0.2:1"), b"abc");
    for (s, hit) in subs {
        assert_eq!(e.queue_len(p, s), Some(usize::from(hit)));
    }
    assert!(matches!(
        Filter::pattern("("),
        Err(SubscribeError::BadPattern(_))
    ));
    // Byte regexes work on non-UTF-8 payloads.
    let bin = e
        .subscribe(p, Filter::pattern(r"(?-u)\xff\x00").unwrap())
        .unwrap();
    e.handle_datagram(now, p, sa("10.0.0.2:1"), &[1, 0xff, 0, 2]);
    assert_eq!(e.queue_len(p, bin), Some(1));
}

#[test]
fn address_filter_port_zero_means_any_port() {
    let (mut e, now) = engine();
    let p = udp(&mut e, now, "10.0.0.1:1000", None, Conf::default());
    let any = e.subscribe(p, Filter::from_addr(sa("10.0.0.2:0"))).unwrap();
    let exact = e.subscribe(p, Filter::from_addr(sa("10.0.0.2:5"))).unwrap();
    let other = e.subscribe(p, Filter::from_addr(sa("10.0.0.3:0"))).unwrap();
    let both = e
        .subscribe(p, Filter::pattern("x").unwrap().with_addr(sa("10.0.0.2:6")))
        .unwrap();
    for (from, data) in [
        ("10.0.0.2:5", "x"),
        ("10.0.0.2:6", "x"),
        ("10.0.0.2:6", "y"),
    ] {
        e.handle_datagram(now, p, sa(from), data.as_bytes());
    }
    assert_eq!(e.queue_len(p, any), Some(3));
    assert_eq!(e.queue_len(p, exact), Some(1));
    assert_eq!(e.queue_len(p, other), Some(0));
    assert_eq!(e.queue_len(p, both), Some(1));
}

#[test]
fn fan_out_to_every_matching_subscription() {
    let (mut e, now) = engine();
    let p = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.2:2000"),
        Conf::default(),
    );
    let a = e.subscribe(p, Filter::pattern("he").unwrap()).unwrap();
    let b = e.subscribe(p, Filter::from_addr(sa("10.0.0.2:0"))).unwrap();
    let c = e.subscribe(p, Filter::pattern("nomatch").unwrap()).unwrap();
    e.handle_datagram(now, p, sa("10.0.0.2:2000"), b"hello");
    for s in [SubId::ALL, a, b] {
        assert_eq!(recv_all(&mut e, p, s), ["hello"]);
    }
    assert_eq!(e.queue_len(p, c), Some(0));
    assert_eq!(e.stats(p).unwrap().queued, 3);
}

#[test]
fn equal_filters_are_one_subscription() {
    // P2PD: an additive hash key; `[b"", None]` and SUB_ALL were two queues that both got every message.
    let (mut e, now) = engine();
    let p = udp(&mut e, now, "10.0.0.1:1000", None, Conf::default());
    let x1 = e.subscribe(p, Filter::pattern("x").unwrap()).unwrap();
    let x2 = e.subscribe(p, Filter::pattern("x").unwrap()).unwrap();
    assert_eq!(x1, x2);
    let y = e.subscribe(p, Filter::pattern("y").unwrap()).unwrap();
    assert_ne!(x1, y);
    let xa = e
        .subscribe(p, Filter::pattern("x").unwrap().with_addr(sa("10.0.0.2:1")))
        .unwrap();
    assert_ne!(xa, x1);
    assert_eq!(e.subscribe(p, Filter::all()), Ok(SubId::ALL));
    assert_eq!(e.subscribe(p, Filter::pattern("").unwrap()), Ok(SubId::ALL));
    e.handle_datagram(now, p, sa("10.0.0.2:1"), b"z");
    assert_eq!(
        e.queue_len(p, SubId::ALL),
        Some(1),
        "queued once, not twice"
    );
    assert_eq!(e.stats(p).unwrap().queued, 1);
}

#[test]
fn sub_all_by_default_only_for_pipes_with_a_dest_and_no_callbacks() {
    let (mut e, now) = engine();
    let client = e
        .open_udp(
            now,
            sa("10.0.0.1:1"),
            Some(sa("10.0.0.2:2")),
            Conf::default(),
            false,
        )
        .unwrap();
    let client_cb = e
        .open_udp(
            now,
            sa("10.0.0.1:2"),
            Some(sa("10.0.0.2:2")),
            Conf::default(),
            true,
        )
        .unwrap();
    let udp_server = e
        .open_udp(now, sa("10.0.0.1:3"), None, Conf::default(), false)
        .unwrap();
    let tcp = e
        .open_tcp(
            now,
            sa("10.0.0.1:4"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    let tcp_cb = e
        .open_tcp(
            now,
            sa("10.0.0.1:5"),
            sa("10.0.0.2:80"),
            Conf::default(),
            true,
        )
        .unwrap();
    let (l, conns) = server(&mut e, now, Conf::default(), 1);
    // An accepted connection of a listener without callbacks has the fallback subscription
    // (what nothing else takes waits for `accept()`: issue 11).
    for p in [client, tcp, conns[0]] {
        assert_eq!(e.recv(p, SubId::ALL), Ok(None), "{p} starts subscribed");
    }
    for p in [client_cb, udp_server, tcp_cb, l] {
        assert_eq!(
            e.recv(p, SubId::ALL),
            Err(RecvError::NotSubscribed),
            "{p} starts unsubscribed"
        );
    }
    assert_eq!(
        e.subscribe(l, Filter::all()),
        Err(SubscribeError::WrongKind("TCP listener"))
    );
    // Unsubscribed messages are counted, not lost silently.
    e.handle_datagram(now, udp_server, sa("10.0.0.9:9"), b"x");
    assert_eq!(e.stats(udp_server).unwrap().unclaimed, 1);
}

#[test]
fn recv_on_unknown_subscription_is_not_subscribed() {
    // P2PD returned None at once (aionetiface raises LookupError): indistinguishable from a timeout.
    let (mut e, now) = engine();
    let p = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.2:2000"),
        Conf::default(),
    );
    let s = e.subscribe(p, Filter::pattern("x").unwrap()).unwrap();
    e.unsubscribe(p, s).unwrap();
    assert_eq!(e.recv(p, s), Err(RecvError::NotSubscribed));
    assert_eq!(e.unsubscribe(p, s), Err(RecvError::NotSubscribed));
    assert_eq!(e.recv(p, SubId::ALL), Ok(None));
}

#[test]
fn recv_after_close_drains_then_closed() {
    let (mut e, now) = engine();
    let p = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.2:2000"),
        Conf::default(),
    );
    e.handle_datagram(now, p, sa("10.0.0.2:2000"), b"a");
    e.handle_datagram(now, p, sa("10.0.0.2:2000"), b"b");
    e.close(now, p);
    e.handle_datagram(now, p, sa("10.0.0.2:2000"), b"late");
    assert_eq!(e.recv(p, SubId::ALL).unwrap().unwrap().data, "a");
    assert_eq!(e.recv(p, SubId::ALL).unwrap().unwrap().data, "b");
    assert_eq!(e.recv(p, SubId::ALL), Err(RecvError::Closed));
    assert_eq!(e.recv(p, SubId::ALL), Err(RecvError::Closed));
    assert_eq!(e.pipe_count(), 0, "a drained, closed pipe is forgotten");
    // The same after the peer closes a TCP connection.
    let t = e
        .open_tcp(
            now,
            sa("10.0.0.1:4"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    e.handle_stream(now, t, b"tail");
    e.handle_peer_closed(now, t, false);
    assert_eq!(e.recv(t, SubId::ALL).unwrap().unwrap().data, "tail");
    assert_eq!(e.recv(t, SubId::ALL), Err(RecvError::Closed));
}

// ---- lifecycle ----------------------------------------------------------------------------

#[test]
fn up_and_end_exactly_once_per_pipe() {
    // P2PD: no up_cb for UDP, no end for the listener; aionetiface: no end on local close.
    let (mut e, now) = engine();
    let u = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    let c = e
        .open_tcp(
            now,
            sa("10.0.0.1:2"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    let (l, conns) = server(&mut e, now, Conf::default(), 2);
    let mut all = evs(&mut e);
    assert_eq!(ups(&all), [u, c, l, conns[0], conns[1]]);
    e.close(now, u);
    e.close(now, u);
    e.handle_peer_closed(now, c, false);
    e.handle_peer_closed(now, c, true);
    e.close(now, c);
    e.handle_peer_closed(now, conns[0], true);
    e.close(now, conns[0]);
    e.close(now, l);
    e.close(now, l);
    e.handle_peer_closed(now, conns[1], false);
    e.handle_error(now, u, "late".into());
    all.extend(drain(&mut e));
    assert_eq!(ups(&all).len(), 5);
    let mut ended: Vec<PipeId> = ends(&all).into_iter().map(|(p, _)| p).collect();
    ended.sort();
    let mut want = vec![u, c, l, conns[0], conns[1]];
    want.sort();
    assert_eq!(ended, want, "one End per pipe");
}

#[test]
fn end_reasons() {
    let (mut e, now) = engine();
    let u = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    let fin = e
        .open_tcp(
            now,
            sa("10.0.0.1:2"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    let rst = e
        .open_tcp(
            now,
            sa("10.0.0.1:3"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    let err = udp(
        &mut e,
        now,
        "10.0.0.1:4",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    let (l, conns) = server(&mut e, now, Conf::default(), 1);
    drain(&mut e);
    e.close(now, u);
    e.handle_peer_closed(now, fin, false);
    e.handle_peer_closed(now, rst, true);
    e.handle_error(now, err, "EBADF".into());
    e.close(now, l);
    assert_eq!(
        ends(&drain(&mut e)),
        [
            (u, EndReason::Local),
            (fin, EndReason::PeerClosed),
            (rst, EndReason::Reset),
            (err, EndReason::Error("EBADF".into())),
            (conns[0], EndReason::ServerClosed),
            (l, EndReason::Local),
        ]
    );
}

#[test]
fn closing_a_listener_ends_its_connections_first() {
    let (mut e, now) = engine();
    let (l, conns) = server(&mut e, now, Conf::default(), 3);
    e.handle_peer_closed(now, conns[1], true); // a reset: a FIN leaves an accept()-served connection writable
    drain(&mut e);
    e.close(now, l);
    let got = ends(&drain(&mut e));
    assert_eq!(
        got,
        [
            (conns[0], EndReason::ServerClosed),
            (conns[2], EndReason::ServerClosed),
            (l, EndReason::Local)
        ]
    );
    assert!(e.connections(l).is_empty());
    assert_eq!(
        e.handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.3:1")),
        Err(AcceptError::Closed)
    );
}

#[test]
fn send_after_close_is_closed() {
    // P2PD: send returned 1 after close, after the peer closed, and for a dead transport.
    let (mut e, now) = engine();
    let u = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    let c = e
        .open_tcp(
            now,
            sa("10.0.0.1:2"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    let (l, conns) = server(&mut e, now, Conf::default(), 2);
    let r = udp(&mut e, now, "10.0.0.1:3", Some("10.0.0.2:2"), rconf());
    e.close(now, u);
    e.handle_peer_closed(now, c, false);
    e.handle_peer_closed(now, conns[0], true);
    e.close(now, l);
    e.close(now, r);
    for p in [u, c, conns[0], conns[1]] {
        assert_eq!(e.send(now, p, b"x", None), Err(SendError::Closed), "{p}");
    }
    assert_eq!(e.send_reliable(now, r, b"x", None), Err(SendError::Closed));
    assert!(txs(&mut e).is_empty());
}

// ---- sending ----------------------------------------------------------------------------

#[test]
fn udp_size_limits() {
    // P2PD: a 70,000-byte datagram "sent" with result 1.
    let (mut e, now) = engine();
    let v4 = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    let v6 = udp(&mut e, now, "[::1]:1", Some("[::1]:2"), Conf::default());
    let big = vec![0u8; 70_000];
    assert_eq!(e.send(now, v4, &big[..MAX_UDP_V4], None), Ok(()));
    assert_eq!(
        e.send(now, v4, &big[..MAX_UDP_V4 + 1], None),
        Err(SendError::TooLarge {
            len: 65_508,
            max: 65_507
        })
    );
    assert_eq!(e.send(now, v6, &big[..MAX_UDP_V6], None), Ok(()));
    assert_eq!(
        e.send(now, v6, &big[..MAX_UDP_V6 + 1], None),
        Err(SendError::TooLarge {
            len: 65_528,
            max: 65_527
        })
    );
    assert_eq!((MAX_UDP_V4, MAX_UDP_V6), (65_507, 65_527));
    // Reliable pipes lose the 9-byte header, for plain and reliable sends alike.
    let r4 = udp(&mut e, now, "10.0.0.1:3", Some("10.0.0.2:2"), rconf());
    let r6 = udp(&mut e, now, "[::1]:3", Some("[::1]:2"), rconf());
    for (p, max) in [(r4, MAX_UDP_V4 - 9), (r6, MAX_UDP_V6 - 9)] {
        assert_eq!(e.send(now, p, &big[..max], None), Ok(()));
        assert_eq!(
            e.send_reliable(now, p, &big[..max], None).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            e.send(now, p, &big[..max + 1], None),
            Err(SendError::TooLarge { len: max + 1, max })
        );
        assert_eq!(
            e.send_reliable(now, p, &big[..max + 1], None),
            Err(SendError::TooLarge { len: max + 1, max })
        );
    }
    for t in txs(&mut e) {
        let max = if t.dst.is_ipv4() {
            MAX_UDP_V4
        } else {
            MAX_UDP_V6
        };
        assert!(t.payload.len() <= max);
    }
}

#[test]
fn udp_server_send_without_dest_is_no_destination_and_pipe_lives() {
    // P2PD: send() with no dest on a UDP server fatally closed the transport.
    let (mut e, now) = engine();
    let s = udp_server(&mut e, now, "10.0.0.1:1000", Conf::default());
    assert_eq!(e.send(now, s, b"x", None), Err(SendError::NoDestination));
    assert_eq!(
        e.send(now, s, b"x", Some(sa("10.0.0.2:0"))),
        Err(SendError::PortZero)
    );
    assert_eq!(e.state(s), Some(State::Open));
    e.handle_datagram(now, s, sa("10.0.0.2:5"), b"still alive");
    assert_eq!(recv_all(&mut e, s, SubId::ALL), ["still alive"]);
    assert_eq!(e.send(now, s, b"reply", Some(sa("10.0.0.2:5"))), Ok(()));
    let t = txs(&mut e).pop().unwrap();
    assert_eq!(
        (t.proto, t.src, t.dst, &t.payload[..]),
        (
            Proto::Udp,
            sa("10.0.0.1:1000"),
            sa("10.0.0.2:5"),
            &b"reply"[..]
        )
    );
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    assert_eq!(
        e.send(now, l, b"x", None),
        Err(SendError::WrongKind("TCP listener"))
    );
}

#[test]
fn family_mismatch_is_refused() {
    let (mut e, now) = engine();
    let v4 = udp(&mut e, now, "10.0.0.1:1", None, Conf::default());
    let v6 = udp(&mut e, now, "[::1]:1", None, Conf::default());
    assert_eq!(
        e.send(now, v4, b"x", Some(sa("[::1]:2"))),
        Err(SendError::FamilyMismatch {
            local: Family::V4,
            dest: Family::V6
        })
    );
    assert_eq!(
        e.send(now, v6, b"x", Some(sa("10.0.0.2:2"))),
        Err(SendError::FamilyMismatch {
            local: Family::V6,
            dest: Family::V4
        })
    );
    // A v6 socket reaches v4 peers through mapped addresses.
    assert_eq!(
        e.send(now, v6, b"x", Some(sa("[::ffff:10.0.0.2]:2"))),
        Ok(())
    );
}

#[test]
fn tcp_sends_only_to_its_peer() {
    let (mut e, now) = engine();
    let c = e
        .open_tcp(
            now,
            sa("10.0.0.1:2"),
            sa("10.0.0.2:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    assert_eq!(
        e.send(now, c, b"x", Some(sa("10.0.0.3:80"))),
        Err(SendError::NotConnectedTo(sa("10.0.0.3:80")))
    );
    assert_eq!(
        e.send(now, c, b"x", Some(sa("10.0.0.2:81"))),
        Err(SendError::NotConnectedTo(sa("10.0.0.2:81")))
    );
    assert_eq!(e.send(now, c, b"a", Some(sa("10.0.0.2:80"))), Ok(()));
    assert_eq!(
        e.send(now, c, b"b", Some(sa("[::ffff:10.0.0.2]:80"))),
        Ok(())
    );
    assert_eq!(e.send(now, c, b"c", None), Ok(()));
    let t = txs(&mut e);
    assert_eq!(
        t.iter().map(|t| &t.payload[..]).collect::<Vec<_>>(),
        [b"a", b"b", b"c"]
    );
    assert!(t
        .iter()
        .all(|t| t.proto == Proto::Tcp && t.dst == sa("10.0.0.2:80")));
    assert_eq!(
        e.send_reliable(now, c, b"x", None),
        Err(SendError::NotReliable)
    );
}

#[test]
fn outbound_buffer_is_capped() {
    let (mut e, now) = engine();
    let p = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf {
            max_out_bytes: 10,
            ..Conf::default()
        },
    );
    assert_eq!(e.send(now, p, b"0123456789", None), Ok(()));
    assert_eq!(e.send(now, p, b"x", None), Err(SendError::WouldBlock));
    assert_eq!(txs(&mut e).len(), 1);
    assert_eq!(e.send(now, p, b"x", None), Ok(()));
}

// ---- dedup ------------------------------------------------------------------------------

#[test]
fn dedup_keyed_by_ip_or_ip_and_port() {
    // P2PD keyed on IP only (the same payload from two sockets of one host is a duplicate).
    let (mut e, now) = engine();
    let ip = udp_server(
        &mut e,
        now,
        "10.0.0.1:1",
        Conf {
            enable_msg_ids: true,
            ..Conf::default()
        },
    );
    let ipp = udp_server(
        &mut e,
        now,
        "10.0.0.1:2",
        Conf {
            enable_msg_ids: true,
            dedup_key: DedupKey::IpPort,
            ..Conf::default()
        },
    );
    let off = udp_server(&mut e, now, "10.0.0.1:3", Conf::default());
    for p in [ip, ipp, off] {
        for from in ["10.0.0.2:1", "10.0.0.2:2", "10.0.0.2:1", "10.0.0.3:1"] {
            e.handle_datagram(now, p, sa(from), b"x");
        }
    }
    assert_eq!(e.queue_len(ip, SubId::ALL), Some(2));
    assert_eq!(e.stats(ip).unwrap().duplicates, 2);
    assert_eq!(e.queue_len(ipp, SubId::ALL), Some(3));
    assert_eq!(e.queue_len(off, SubId::ALL), Some(4));
}

#[test]
fn dedup_window_is_lru_not_clear_all() {
    // P2PD cleared its whole set past max and re-delivered "a" here.
    let (mut e, now) = engine();
    let p = udp_server(
        &mut e,
        now,
        "10.0.0.1:1",
        Conf {
            enable_msg_ids: true,
            max_msg_ids: 2,
            ..Conf::default()
        },
    );
    for m in ["a", "b", "a", "c", "a"] {
        e.handle_datagram(now, p, sa("10.0.0.2:1"), m.as_bytes());
    }
    assert_eq!(recv_all(&mut e, p, SubId::ALL), ["a", "b", "c"]);
    // P2PD's own sequence (max 3) still delivers what it did.
    let q = udp_server(
        &mut e,
        now,
        "10.0.0.1:2",
        Conf {
            enable_msg_ids: true,
            max_msg_ids: 3,
            ..Conf::default()
        },
    );
    for m in ["a", "a", "b", "a", "c", "d", "e", "a"] {
        e.handle_datagram(now, q, sa("10.0.0.2:1"), m.as_bytes());
    }
    assert_eq!(
        recv_all(&mut e, q, SubId::ALL),
        ["a", "b", "c", "d", "e", "a"]
    );
}

#[test]
fn dedup_applies_to_tcp_frames_per_connection() {
    let (mut e, now) = engine();
    let conf = Conf {
        enable_msg_ids: true,
        framing: Framing::LengthPrefixed { max: 100 },
        ..Conf::default()
    };
    let (_, conns) = server(&mut e, now, conf, 2);
    let mut wire = Vec::new();
    for m in ["ping", "ping", "pong", "ping"] {
        wire.extend_from_slice(&(m.len() as u32).to_be_bytes());
        wire.extend_from_slice(m.as_bytes());
    }
    for c in &conns {
        e.subscribe(*c, Filter::all()).unwrap();
        e.handle_stream(now, *c, &wire);
    }
    // Each accepted connection has its own window.
    for c in conns {
        assert_eq!(recv_all(&mut e, c, SubId::ALL), ["ping", "pong"]);
        assert_eq!(e.stats(c).unwrap().duplicates, 2);
    }
    // Raw framing: one read is one message, and dedup sees reads.
    let raw = e
        .open_tcp(
            now,
            sa("10.0.0.1:9"),
            sa("10.0.0.2:9"),
            Conf {
                enable_msg_ids: true,
                ..Conf::default()
            },
            false,
        )
        .unwrap();
    for _ in 0..3 {
        e.handle_stream(now, raw, b"ping");
    }
    assert_eq!(recv_all(&mut e, raw, SubId::ALL), ["ping"]);
}

// ---- reliable UDP -------------------------------------------------------------------------

fn frame(seq: u64, flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.push(flag);
    v.extend_from_slice(payload);
    v
}

#[test]
fn reliable_wire_format_tries_spacing_and_unconfirmed() {
    for send_retry in [0u32, 2, 5] {
        let (mut e, t0) = engine();
        let conf = Conf {
            send_retry,
            ..rconf()
        };
        let a = udp(&mut e, t0, "10.0.0.1:1000", Some("10.0.0.2:2000"), conf);
        drain(&mut e);
        let id = e.send_reliable(t0, a, b"hi", None).unwrap();
        let first = txs(&mut e);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].payload[..],
            frame(id.0, 0, b"hi")[..],
            "seq BE | 0 | payload"
        );
        assert_eq!(first[0].dst, sa("10.0.0.2:2000"));
        let mut sent_at = vec![t0];
        let mut now = t0;
        let mut outcome = None;
        for _ in 0..20 {
            let next = e.poll_timeout().expect("a deadline while unconfirmed");
            assert!(next > now);
            // Nothing happens just before the deadline.
            e.handle_timeout(next - MS);
            assert!(txs(&mut e).is_empty() && evs(&mut e).is_empty());
            now = next;
            e.handle_timeout(now);
            for t in txs(&mut e) {
                assert_eq!(
                    t.payload, first[0].payload,
                    "a retransmission is the same frame"
                );
                sent_at.push(now);
            }
            if let Some(o) = reliable(&evs(&mut e)).pop() {
                outcome = Some((o, now));
                break;
            }
        }
        let tries = 1 + send_retry as usize;
        assert_eq!(sent_at.len(), tries, "tries = 1 + send_retry");
        for (i, at) in sent_at.iter().enumerate() {
            assert_eq!(*at - t0, 100 * MS * i as u32, "spacing = retry_interval");
        }
        let ((got, o), at) = outcome.expect("ended");
        assert_eq!((got, o), (id, Outcome::Unconfirmed));
        assert_eq!(
            at - t0,
            100 * MS * tries as u32,
            "Unconfirmed one interval after the last try"
        );
        assert_eq!(e.stats(a).unwrap().retransmits, u64::from(send_retry));
        assert_eq!(e.stats(a).unwrap().unconfirmed, 1);
        assert_eq!(e.poll_timeout(), None);
    }
}

#[test]
fn reliable_ack_is_nine_bytes_and_acks_every_copy_but_delivers_once() {
    let (mut e, now) = engine();
    let a = udp(&mut e, now, "10.0.0.1:1000", Some("10.0.0.2:2000"), rconf());
    let b = udp(&mut e, now, "10.0.0.2:2000", Some("10.0.0.1:1000"), rconf());
    drain(&mut e);
    let id = e.send_reliable(now, a, b"hello", None).unwrap();
    let data = txs(&mut e).pop().unwrap();
    for _ in 0..3 {
        e.handle_datagram(now, b, data.src, &data.payload);
    }
    let acks = txs(&mut e);
    assert_eq!(
        acks.len(),
        3,
        "every copy is acked: the first ACK may be lost"
    );
    for ack in &acks {
        assert_eq!(ack.payload[..], frame(id.0, 1, b"")[..]);
        assert_eq!(ack.payload.len(), 9);
        assert_eq!(
            (ack.src, ack.dst),
            (sa("10.0.0.2:2000"), sa("10.0.0.1:1000"))
        );
    }
    assert_eq!(recv_all(&mut e, b, SubId::ALL), ["hello"], "delivered once");
    assert_eq!(e.stats(b).unwrap().reliable_repeats, 2);
    e.handle_datagram(now, a, acks[0].src, &acks[0].payload);
    e.handle_datagram(now, a, acks[1].src, &acks[1].payload);
    assert_eq!(reliable(&evs(&mut e)), [(id, Outcome::Acked)]);
    assert_eq!(e.stats(a).unwrap().acked, 1);
    assert_eq!(e.stats(a).unwrap().stray_acks, 1, "a second ACK is stray");
    assert_eq!(e.poll_timeout(), None, "no retransmission left");
    assert!(
        recv_all(&mut e, a, SubId::ALL).is_empty(),
        "ACKs are never delivered"
    );
}

#[test]
fn reliable_late_ack_within_the_last_interval_counts() {
    // P2PD's worker stopped waiting after its last send, ignoring a late ACK.
    let (mut e, now) = engine();
    let a = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.2:2000"),
        Conf {
            send_retry: 0,
            ..rconf()
        },
    );
    let id = e.send_reliable(now, a, b"x", None).unwrap();
    drain(&mut e);
    e.handle_datagram(now + 99 * MS, a, sa("10.0.0.2:2000"), &frame(id.0, 1, b""));
    assert_eq!(reliable(&evs(&mut e)), [(id, Outcome::Acked)]);
}

#[test]
fn plain_send_on_a_reliable_pipe_is_flag_2_and_arrives_intact() {
    // P2PD: a plain send on an RUDP pipe was unframed, and the peer cut its first 9 bytes
    // (`plain-short` arrived as `rt`) or swallowed it as an ACK when byte 9 was 0x01.
    let (mut e, now) = engine();
    let a = udp(&mut e, now, "10.0.0.1:1000", Some("10.0.0.2:2000"), rconf());
    let b = udp(&mut e, now, "10.0.0.2:2000", Some("10.0.0.1:1000"), rconf());
    let tricky = b"12345678\x01tail";
    for m in [&b"plain-short"[..], tricky, b""] {
        e.send(now, a, m, None).unwrap();
        let t = txs(&mut e).pop().unwrap();
        assert_eq!(
            t.payload[..],
            frame(0, 2, m)[..],
            "seq 0 | flag 2 | payload"
        );
        e.handle_datagram(now, b, t.src, &t.payload);
        assert_eq!(recv_all(&mut e, b, SubId::ALL), [m]);
        assert!(txs(&mut e).is_empty(), "plain data is not acked");
    }
}

#[test]
fn reliable_drops_malformed_frames_and_counts_them() {
    let (mut e, now) = engine();
    let a = udp(&mut e, now, "10.0.0.1:1000", Some("10.0.0.2:2000"), rconf());
    let id = e.send_reliable(now, a, b"x", None).unwrap();
    drain(&mut e);
    // An ACK carrying a payload is not an ACK (and not data).
    e.handle_datagram(now, a, sa("10.0.0.2:2000"), &frame(id.0, 1, b"xx"));
    for len in 0..9 {
        e.handle_datagram(now, a, sa("10.0.0.2:2000"), &vec![0u8; len]);
    }
    e.handle_datagram(now, a, sa("10.0.0.2:2000"), &frame(5, 3, b"unknown flag"));
    assert!(evs(&mut e).is_empty(), "not acked, nothing delivered");
    assert!(txs(&mut e).is_empty(), "nothing acked back");
    assert_eq!(e.stats(a).unwrap().malformed, 11);
    assert_eq!(e.queue_len(a, SubId::ALL), Some(0));
    e.handle_datagram(now, a, sa("10.0.0.2:2000"), &frame(id.0, 1, b""));
    assert_eq!(reliable(&evs(&mut e)), [(id, Outcome::Acked)]);
}

#[test]
fn reliable_ack_from_the_wrong_address_is_ignored() {
    let (mut e, now) = engine();
    let a = udp(&mut e, now, "10.0.0.1:1000", Some("10.0.0.2:2000"), rconf());
    let id = e.send_reliable(now, a, b"x", None).unwrap();
    drain(&mut e);
    let ack = frame(id.0, 1, b"");
    e.handle_datagram(now, a, sa("10.0.0.3:2000"), &ack);
    e.handle_datagram(now, a, sa("10.0.0.2:2001"), &ack);
    e.handle_datagram(now, a, sa("10.0.0.2:2000"), &frame(id.0 ^ 1, 1, b""));
    assert!(evs(&mut e).is_empty());
    assert_eq!(e.stats(a).unwrap().stray_acks, 3);
    e.handle_datagram(now, a, sa("10.0.0.2:2000"), &ack);
    assert_eq!(reliable(&evs(&mut e)), [(id, Outcome::Acked)]);
}

#[test]
fn reliable_outstanding_cap() {
    let (mut e, now) = engine();
    let a = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.2:2000"),
        Conf {
            max_reliable_outstanding: 2,
            ..rconf()
        },
    );
    let first = e.send_reliable(now, a, b"1", None).unwrap();
    let second = e.send_reliable(now, a, b"2", None).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        e.send_reliable(now, a, b"3", None),
        Err(SendError::TooManyOutstanding(2))
    );
    drain(&mut e);
    e.handle_datagram(now, a, sa("10.0.0.2:2000"), &frame(first.0, 1, b""));
    // An outcome nobody took yet still holds its slot: waiters never lose it.
    assert_eq!(
        e.send_reliable(now, a, b"3", None),
        Err(SendError::TooManyOutstanding(2))
    );
    assert_eq!(e.take_outcome(a, first), Some(Outcome::Acked));
    assert_eq!(e.take_outcome(a, first), None, "taken once");
    assert!(e.send_reliable(now, a, b"3", None).is_ok());
    let plain = udp(
        &mut e,
        now,
        "10.0.0.1:1001",
        Some("10.0.0.2:2000"),
        Conf::default(),
    );
    assert_eq!(
        e.send_reliable(now, plain, b"x", None),
        Err(SendError::NotReliable)
    );
}

#[test]
fn close_ends_outstanding_reliable_sends_unconfirmed() {
    let (mut e, now) = engine();
    let a = udp(&mut e, now, "10.0.0.1:1000", Some("10.0.0.2:2000"), rconf());
    let id = e.send_reliable(now, a, b"x", None).unwrap();
    e.close(now, a);
    let events = drain(&mut e);
    assert_eq!(reliable(&events), [(id, Outcome::Unconfirmed)]);
    assert_eq!(e.poll_timeout(), None, "no timer outlives its pipe");
}

// ---- linking ----------------------------------------------------------------------------

#[test]
fn link_forwards_through_the_target_to_its_default_dest_udp_and_tcp() {
    // P2PD: linking to a UDP pipe raised in getpeername and the source also lost the message.
    let (mut e, now) = engine();
    let a = udp_server(&mut e, now, "10.0.0.1:1000", Conf::default());
    let b = udp(
        &mut e,
        now,
        "10.0.0.1:2000",
        Some("10.0.0.9:9000"),
        Conf::default(),
    );
    let c = e
        .open_tcp(
            now,
            sa("10.0.0.1:3000"),
            sa("10.0.0.8:80"),
            Conf::default(),
            false,
        )
        .unwrap();
    let (_, conns) = server(&mut e, now, Conf::default(), 1);
    let conn = conns[0];
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    e.link(a, LinkTarget::Local(c), None, None).unwrap();
    e.link(conn, LinkTarget::Local(b), None, None).unwrap();
    drain(&mut e);

    e.handle_datagram(now, a, sa("10.0.0.5:5"), b"from udp");
    let t = txs(&mut e);
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].pipe, t[0].proto, t[0].src, t[0].dst, &t[0].payload[..]),
        (
            b,
            Proto::Udp,
            sa("10.0.0.1:2000"),
            sa("10.0.0.9:9000"),
            &b"from udp"[..]
        )
    );
    assert_eq!(
        (t[1].pipe, t[1].proto, t[1].dst, &t[1].payload[..]),
        (c, Proto::Tcp, sa("10.0.0.8:80"), &b"from udp"[..])
    );
    assert_eq!(
        recv_all(&mut e, a, SubId::ALL),
        ["from udp"],
        "A still delivers locally"
    );
    assert_eq!(e.stats(a).unwrap().forwarded, 2);

    e.handle_stream(now, conn, b"from tcp");
    let t = txs(&mut e);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].pipe, t[0].dst, &t[0].payload[..]),
        (b, sa("10.0.0.9:9000"), &b"from tcp"[..])
    );
}

#[test]
fn link_to_an_external_target_emits_forward() {
    let (mut e, now) = engine();
    let a = udp_server(&mut e, now, "10.0.0.1:1000", Conf::default());
    let ext = LinkTarget::External {
        kind: Kind::Udp,
        open: true,
    };
    let l1 = e.link(a, ext, None, None).unwrap();
    let l2 = e.link(a, ext, Some(sa("10.0.0.7:7")), None).unwrap();
    let (t1, t2) = (e.link_token(a, l1).unwrap(), e.link_token(a, l2).unwrap());
    assert_ne!(t1, t2, "each external link has its own token");
    drain(&mut e);
    e.handle_datagram(now, a, sa("10.0.0.5:5"), b"m");
    let fwd: Vec<_> = evs(&mut e)
        .into_iter()
        .filter_map(|e| match e {
            Event::Forward {
                from,
                link,
                target,
                dest,
                data,
            } => Some((from, link, target, dest, data)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fwd,
        [
            (a, l1, t1, None, Bytes::from_static(b"m")),
            (a, l2, t2, Some(sa("10.0.0.7:7")), Bytes::from_static(b"m"))
        ]
    );
    assert_eq!(recv_all(&mut e, a, SubId::ALL), ["m"]);
}

#[test]
fn link_dest_override() {
    let (mut e, now) = engine();
    let a = udp_server(&mut e, now, "10.0.0.1:1000", Conf::default());
    let b = udp(&mut e, now, "10.0.0.1:2000", None, Conf::default());
    e.link(a, LinkTarget::Local(b), Some(sa("10.0.0.7:7")), None)
        .unwrap();
    e.handle_datagram(now, a, sa("10.0.0.5:5"), b"m");
    let t = txs(&mut e);
    assert_eq!((t.len(), t[0].dst), (1, sa("10.0.0.7:7")));
}

#[test]
fn failed_forward_never_stops_local_delivery_and_dead_target_is_unlinked() {
    // P2PD: a raising forward skipped the source's callbacks and queues; a dead child stayed linked.
    let (mut e, now) = engine();
    let a = udp_server(&mut e, now, "10.0.0.1:1000", Conf::default());
    let dead = udp(
        &mut e,
        now,
        "10.0.0.1:2000",
        Some("10.0.0.9:9"),
        Conf::default(),
    );
    let nodest = udp(&mut e, now, "10.0.0.1:3000", None, Conf::default());
    let l_dead = e.link(a, LinkTarget::Local(dead), None, None).unwrap();
    let l_nodest = e.link(a, LinkTarget::Local(nodest), None, None).unwrap();
    e.close(now, dead);
    drain(&mut e);
    e.handle_datagram(now, a, sa("10.0.0.5:5"), b"one");
    e.handle_datagram(now, a, sa("10.0.0.5:5"), b"two");
    assert!(txs(&mut e).is_empty());
    assert_eq!(recv_all(&mut e, a, SubId::ALL), ["one", "two"]);
    let s = e.stats(a).unwrap();
    assert_eq!(
        s.forward_failed, 3,
        "dead once (then unlinked), no-destination twice"
    );
    assert_eq!(
        e.unlink(a, l_dead),
        Err(LinkError::NotLinked),
        "the dead target was unlinked"
    );
    assert_eq!(e.unlink(a, l_nodest), Ok(()), "a live target stays linked");
    assert_eq!(
        e.link(a, LinkTarget::Local(dead), None, None),
        Err(LinkError::Closed)
    );
}

#[test]
fn accepted_connection_that_dies_is_unlinked() {
    let (mut e, now) = engine();
    let (_, conns) = server(&mut e, now, Conf::default(), 2);
    let (src, sink) = (conns[0], conns[1]);
    e.subscribe(src, Filter::all()).unwrap();
    let link = e.link(src, LinkTarget::Local(sink), None, None).unwrap();
    e.handle_stream(now, src, b"1");
    assert_eq!(txs(&mut e).len(), 1);
    e.handle_peer_closed(now, sink, true);
    e.handle_stream(now, src, b"2");
    assert!(txs(&mut e).is_empty());
    assert_eq!(recv_all(&mut e, src, SubId::ALL), ["1", "2"]);
    assert_eq!(e.unlink(src, link), Err(LinkError::NotLinked));
}

#[test]
fn self_link_refused_and_from_filter() {
    let (mut e, now) = engine();
    let a = udp_server(&mut e, now, "10.0.0.1:1000", Conf::default());
    let b = udp(
        &mut e,
        now,
        "10.0.0.1:2000",
        Some("10.0.0.9:9"),
        Conf::default(),
    );
    assert_eq!(
        e.link(a, LinkTarget::Local(a), None, None),
        Err(LinkError::SelfLink)
    );
    e.link(a, LinkTarget::Local(b), None, Some(sa("10.0.0.5:0")))
        .unwrap();
    e.link(
        a,
        LinkTarget::External {
            kind: Kind::Udp,
            open: true,
        },
        None,
        Some(sa("10.0.0.6:6")),
    )
    .unwrap();
    drain(&mut e);
    for from in [
        "10.0.0.5:1",
        "10.0.0.5:2",
        "10.0.0.6:6",
        "10.0.0.6:7",
        "10.0.0.7:1",
    ] {
        e.handle_datagram(now, a, sa(from), from.as_bytes());
    }
    let t = txs(&mut e);
    assert_eq!(
        t.iter().map(|t| &t.payload[..]).collect::<Vec<_>>(),
        [&b"10.0.0.5:1"[..], b"10.0.0.5:2"]
    );
    let fwd = evs(&mut e)
        .into_iter()
        .filter(|e| matches!(e, Event::Forward { .. }))
        .count();
    assert_eq!(fwd, 1);
    assert_eq!(recv_all(&mut e, a, SubId::ALL).len(), 5);
}

#[test]
fn links_both_ways_do_not_loop_locally() {
    let (mut e, now) = engine();
    let a = udp(
        &mut e,
        now,
        "10.0.0.1:1000",
        Some("10.0.0.8:8"),
        Conf::default(),
    );
    let b = udp(
        &mut e,
        now,
        "10.0.0.1:2000",
        Some("10.0.0.9:9"),
        Conf::default(),
    );
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    e.link(b, LinkTarget::Local(a), None, None).unwrap();
    drain(&mut e);
    e.handle_datagram(now, a, sa("10.0.0.5:5"), b"to b");
    e.handle_datagram(now, b, sa("10.0.0.5:5"), b"to a");
    let t = txs(&mut e);
    assert_eq!(t.len(), 2, "exactly one forward each way");
    assert_eq!(
        (t[0].pipe, t[0].dst, &t[0].payload[..]),
        (b, sa("10.0.0.9:9"), &b"to b"[..])
    );
    assert_eq!(
        (t[1].pipe, t[1].dst, &t[1].payload[..]),
        (a, sa("10.0.0.8:8"), &b"to a"[..])
    );
    evs(&mut e);
    assert_eq!(e.poll_timeout(), None, "nothing else pending");
    assert_eq!(recv_all(&mut e, a, SubId::ALL), ["to b"]);
    assert_eq!(recv_all(&mut e, b, SubId::ALL), ["to a"]);
}

// ---- framing ------------------------------------------------------------------------------

#[test]
fn length_prefix_over_limit_ends_the_connection_before_buffering() {
    let conf = Conf {
        framing: Framing::LengthPrefixed { max: 10 },
        ..Conf::default()
    };
    let (mut e, now) = engine();
    let (_, conns) = server(&mut e, now, conf, 2);
    for c in &conns {
        e.subscribe(*c, Filter::all()).unwrap();
    }
    drain(&mut e);
    let mut wire = vec![0, 0, 0, 2];
    wire.extend_from_slice(b"ok");
    wire.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'x']);
    e.handle_stream(now, conns[0], &wire);
    assert_eq!(
        ends(&evs(&mut e)),
        [(
            conns[0],
            EndReason::FrameTooLarge {
                len: u32::MAX as usize,
                max: 10
            }
        )]
    );
    assert!(e.within_caps());
    assert_eq!(
        recv_all(&mut e, conns[0], SubId::ALL),
        ["ok"],
        "frames before the bad one are delivered"
    );
    assert_eq!(e.send(now, conns[0], b"x", None), Err(SendError::Closed));
    // One byte at a time: it ends on the 4th header byte.
    for (i, b) in [0u8, 0, 0, 11].iter().enumerate() {
        e.handle_stream(now, conns[1], &[*b]);
        assert_eq!(ends(&evs(&mut e)).len(), usize::from(i == 3));
    }
    assert!(e.within_caps());
    // The send side refuses what the peer would refuse.
    let c = e
        .open_tcp(
            now,
            sa("10.0.0.1:9"),
            sa("10.0.0.2:9"),
            Conf {
                framing: Framing::LengthPrefixed { max: 10 },
                ..Conf::default()
            },
            false,
        )
        .unwrap();
    assert_eq!(
        e.send(now, c, &[0; 11], None),
        Err(SendError::TooLarge { len: 11, max: 10 })
    );
    e.send(now, c, b"hi", None).unwrap();
    assert_eq!(
        txs(&mut e).pop().unwrap().payload[..],
        [0, 0, 0, 2, b'h', b'i']
    );
}

#[test]
fn delimiter_over_limit_ends_the_connection() {
    let conf = Conf {
        framing: Framing::Delimited {
            delim: Bytes::from_static(b"\n"),
            max: 5,
        },
        ..Conf::default()
    };
    let (mut e, now) = engine();
    let (_, conns) = server(&mut e, now, conf.clone(), 1);
    e.subscribe(conns[0], Filter::all()).unwrap();
    drain(&mut e);
    e.handle_stream(now, conns[0], b"12345\nab");
    e.handle_stream(now, conns[0], b"cd");
    assert!(ends(&evs(&mut e)).is_empty());
    e.handle_stream(now, conns[0], b"ef");
    assert_eq!(
        ends(&evs(&mut e)),
        [(conns[0], EndReason::FrameTooLarge { len: 6, max: 5 })]
    );
    assert_eq!(recv_all(&mut e, conns[0], SubId::ALL), ["12345"]);
    let c = e
        .open_tcp(now, sa("10.0.0.1:9"), sa("10.0.0.2:9"), conf, false)
        .unwrap();
    assert_eq!(
        e.send(now, c, b"a\nb", None),
        Err(SendError::ContainsDelimiter)
    );
    assert_eq!(
        e.send(now, c, b"123456", None),
        Err(SendError::TooLarge { len: 6, max: 5 })
    );
    e.send(now, c, b"ab", None).unwrap();
    assert_eq!(txs(&mut e).pop().unwrap().payload[..], *b"ab\n");
}

// ---- accepting ----------------------------------------------------------------------------

#[test]
fn accept_order_with_departures() {
    // P2PD: awaiting before clients connected returned the first child twice; a child that left
    // before being awaited raised KeyError.
    let (mut e, now) = engine();
    let l = e
        .open_listener(now, sa("10.0.0.1:80"), Conf::default(), false)
        .unwrap();
    assert_eq!(e.pop_accepted(l), Ok(None));
    let acc = |e: &mut Engine, port| {
        e.handle_accepted(
            now,
            l,
            sa("10.0.0.1:80"),
            SocketAddr::from(([10, 0, 0, 2], port)),
        )
        .unwrap()
    };
    let a = acc(&mut e, 1);
    let b = acc(&mut e, 2);
    assert_eq!(e.pop_accepted(l), Ok(Some(a)));
    assert_eq!(e.pop_accepted(l), Ok(Some(b)));
    assert_eq!(e.pop_accepted(l), Ok(None));
    let c = acc(&mut e, 3);
    e.handle_peer_closed(now, c, true); // a reset: a FIN leaves an accept()-served connection writable
    let d = acc(&mut e, 4);
    assert_eq!(
        e.pop_accepted(l),
        Ok(Some(c)),
        "a connection that left is still handed out, once"
    );
    assert_eq!(e.send(now, c, b"x", None), Err(SendError::Closed));
    assert_eq!(e.pop_accepted(l), Ok(Some(d)));
    assert_eq!(e.pop_accepted(l), Ok(None));
    assert_eq!(e.connections(l), [a, b, d]);
    let accepted: Vec<_> = evs(&mut e)
        .into_iter()
        .filter_map(|e| match e {
            Event::Accepted { listener, conn } => Some((listener, conn)),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, [(l, a), (l, b), (l, c), (l, d)]);
    assert_eq!(e.kind(a), Some(Kind::TcpConn { listener: l }));
    assert_eq!(e.dest(a), Some(sa("10.0.0.2:1")));
    e.close(now, l);
    assert_eq!(e.pop_accepted(l), Err(RecvError::Closed));
}

#[test]
fn accept_backlog_drops_oldest_from_the_queue_and_counts() {
    let (mut e, now) = engine();
    let (l, conns) = server(
        &mut e,
        now,
        Conf {
            accept_backlog: 2,
            ..Conf::default()
        },
        3,
    );
    assert_eq!(e.stats(l).unwrap().accept_dropped, 1);
    assert_eq!(e.pop_accepted(l), Ok(Some(conns[1])));
    assert_eq!(e.pop_accepted(l), Ok(Some(conns[2])));
    assert_eq!(e.pop_accepted(l), Ok(None));
    assert_eq!(e.connections(l), conns, "the dropped one is still served");
    assert!(e.within_caps());
}

#[test]
fn max_connections() {
    let (mut e, now) = engine();
    let (l, conns) = server(
        &mut e,
        now,
        Conf {
            max_connections: 2,
            ..Conf::default()
        },
        2,
    );
    let peer = |p| SocketAddr::from(([10, 0, 0, 3], p));
    assert_eq!(
        e.handle_accepted(now, l, sa("10.0.0.1:80"), peer(1)),
        Err(AcceptError::TooManyConnections(2))
    );
    // A connection accepted, handed out, then gone frees its slot.
    assert_eq!(e.pop_accepted(l), Ok(Some(conns[0])));
    e.handle_peer_closed(now, conns[0], true); // a reset: a FIN leaves an accept()-served connection writable
    let c = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), peer(2))
        .unwrap();
    assert_eq!(
        e.handle_accepted(now, l, sa("10.0.0.1:80"), peer(3)),
        Err(AcceptError::TooManyConnections(2))
    );
    // So does one that left before it was handed out, once it is.
    e.handle_peer_closed(now, conns[1], true); // a reset: a FIN leaves an accept()-served connection writable
    assert_eq!(e.pop_accepted(l), Ok(Some(conns[1])));
    assert!(e
        .handle_accepted(now, l, sa("10.0.0.1:80"), peer(4))
        .is_ok());
    assert_eq!(e.connections(l).len(), 2);
    assert!(e.connections(l).contains(&c));
}

// ---- callbacks and readiness --------------------------------------------------------------

#[test]
fn message_events_only_with_callbacks_and_not_aliased_between_connections() {
    // P2PD: accepted children shared the server's callback lists, so a callback added on one
    // child fired for its siblings.
    let (mut e, now) = engine();
    let (l, conns) = server(&mut e, now, Conf::default(), 2);
    drain(&mut e);
    let messages = |e: &mut Engine| -> Vec<PipeId> {
        evs(e)
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Message { pipe, .. } => Some(pipe),
                _ => None,
            })
            .collect()
    };
    e.handle_stream(now, conns[0], b"x");
    assert!(messages(&mut e).is_empty());
    e.set_callbacks(conns[0], true);
    e.handle_stream(now, conns[0], b"x");
    e.handle_stream(now, conns[1], b"x");
    assert_eq!(messages(&mut e), [conns[0]]);
    e.set_callbacks(conns[0], false);
    e.set_callbacks(l, true);
    e.handle_stream(now, conns[0], b"x");
    e.handle_stream(now, conns[1], b"x");
    assert_eq!(
        messages(&mut e),
        [conns[0], conns[1]],
        "a listener's callbacks cover its connections"
    );
    let later = e
        .handle_accepted(now, l, sa("10.0.0.1:80"), sa("10.0.0.4:4"))
        .unwrap();
    e.handle_stream(now, later, b"x");
    assert_eq!(messages(&mut e), [later]);
}

#[test]
fn readable_once_until_polled() {
    let (mut e, now) = engine();
    let p = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    drain(&mut e);
    e.handle_datagram(now, p, sa("10.0.0.2:2"), b"1");
    e.handle_datagram(now, p, sa("10.0.0.2:2"), b"2");
    assert_eq!(evs(&mut e), [Event::Readable { pipe: p }]);
    e.handle_datagram(now, p, sa("10.0.0.2:2"), b"3");
    assert_eq!(evs(&mut e), [Event::Readable { pipe: p }]);
}

// ---- poll_timeout -------------------------------------------------------------------------

#[test]
fn poll_timeout_is_now_while_output_is_queued_then_the_deadline_and_always_advances() {
    let (mut e, t0) = engine();
    assert_eq!(e.poll_timeout(), None);
    let a = udp(
        &mut e,
        t0,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf {
            send_retry: 3,
            ..rconf()
        },
    );
    let b = udp(
        &mut e,
        t0,
        "10.0.0.1:2",
        Some("10.0.0.2:2"),
        Conf {
            send_retry: 1,
            ..rconf()
        },
    );
    assert_eq!(e.poll_timeout(), Some(t0), "Up events queued");
    evs(&mut e);
    assert_eq!(e.poll_timeout(), None);
    e.send(t0, a, b"x", None).unwrap();
    assert_eq!(e.poll_timeout(), Some(t0), "a transmit queued");
    txs(&mut e);
    assert_eq!(e.poll_timeout(), None);

    e.send_reliable(t0, a, b"r", None).unwrap();
    e.send_reliable(t0 + 30 * MS, b, b"r", None).unwrap();
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + 30 * MS),
        "the latest now while output is queued"
    );
    txs(&mut e);
    assert_eq!(
        e.poll_timeout(),
        Some(t0 + 100 * MS),
        "then the earliest retransmission deadline"
    );
    let mut last = t0 + 30 * MS;
    let mut rounds = 0;
    while let Some(t) = e.poll_timeout() {
        rounds += 1;
        assert!(rounds < 50, "poll_timeout never went quiet");
        assert!(
            t > last,
            "poll_timeout went back or stayed: {:?} after {:?}",
            t - t0,
            last - t0
        );
        e.handle_timeout(t);
        if e.poll_timeout() == Some(t) {
            // Output was queued by the timeout: drained, the next deadline must be later.
            drain(&mut e);
        }
        if let Some(next) = e.poll_timeout() {
            assert!(next > t, "poll_timeout stuck at {:?}", next - t0);
        }
        last = t;
    }
    assert_eq!(
        e.stats(a).unwrap().unconfirmed + e.stats(b).unwrap().unconfirmed,
        2
    );
}

#[test]
fn poll_timeout_advances_when_handle_timeout_is_late() {
    let (mut e, t0) = engine();
    let a = udp(
        &mut e,
        t0,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf {
            send_retry: 2,
            ..rconf()
        },
    );
    for _ in 0..5 {
        e.send_reliable(t0, a, b"x", None).unwrap();
    }
    drain(&mut e);
    // A driver that wakes up very late handles every due deadline at once.
    e.handle_timeout(t0 + Duration::from_secs(10));
    drain(&mut e);
    let next = e.poll_timeout().unwrap();
    assert!(next > t0 + Duration::from_secs(10));
}

// ---- engine bookkeeping -------------------------------------------------------------------

#[test]
fn a_driver_using_only_poll_transmit_for_keeps_the_engine_within_caps() {
    let (mut e, now) = engine();
    let p = udp(
        &mut e,
        now,
        "10.0.0.1:1",
        Some("10.0.0.2:2"),
        Conf::default(),
    );
    e.send(now, p, b"x", None).unwrap();
    assert!(e.poll_transmit_for(p).is_some());
    e.close(now, p);
    evs(&mut e);
    assert_eq!(e.pipe_count(), 0);
    assert!(e.within_caps());
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn a_pipe_whose_peer_closed_is_forgotten_once_its_output_drains() {
    let (mut e, now) = engine();
    let c = e
        .open_tcp(
            now,
            sa("10.0.0.1:1"),
            sa("10.0.0.2:2"),
            Conf::default(),
            false,
        )
        .unwrap();
    e.send(now, c, b"x", None).unwrap();
    e.handle_peer_closed(now, c, false);
    drain(&mut e);
    assert_eq!(e.pipe_count(), 0, "nothing left to read or send");
    assert_eq!(e.recv(c, SubId::ALL), Err(RecvError::Closed));
}

#[test]
fn hostile_stream_and_datagram_input_never_panics() {
    let (mut e, now) = engine();
    let conf = Conf {
        framing: Framing::LengthPrefixed { max: 64 },
        enable_msg_ids: true,
        ..Conf::default()
    };
    let (l, conns) = server(&mut e, now, conf, 1);
    let r = udp(&mut e, now, "10.0.0.1:1", Some("10.0.0.2:2"), rconf());
    let mut rng = pipe_core::rng::Rng::new(1);
    for i in 0..2000 {
        let mut buf = vec![0u8; rng.below(40) as usize];
        rng.fill(&mut buf);
        match i % 3 {
            0 => e.handle_stream(now, conns[0], &buf),
            1 => e.handle_datagram(now, r, sa("10.0.0.2:2"), &buf),
            _ => e.handle_stream(now, l, &buf),
        }
        drain(&mut e);
        assert!(e.within_caps());
    }
}

#[test]
fn one_read_of_empty_frames_cannot_flood_events_or_transmits() {
    // 64 KiB of zero-length frames is 16,384 messages from one read; with links each becomes a
    // forward. Events and transmits must stay within their count caps, not just byte caps.
    let (mut e, now) = engine();
    let conf = Conf {
        framing: Framing::LengthPrefixed { max: 16 },
        ..Conf::default()
    };
    let (_, conns) = server(&mut e, now, conf, 1);
    let sink = udp(
        &mut e,
        now,
        "10.0.0.1:2000",
        Some("10.0.0.9:9"),
        Conf::default(),
    );
    for _ in 0..8 {
        let ext = LinkTarget::External {
            kind: Kind::Udp,
            open: true,
        };
        e.link(conns[0], ext, None, None).unwrap();
    }
    for _ in 0..8 {
        e.link(conns[0], LinkTarget::Local(sink), None, None)
            .unwrap();
    }
    drain(&mut e);
    let zeros = vec![0u8; 65_536];
    e.handle_stream(now, conns[0], &zeros);
    assert!(e.within_caps());
    let t = txs(&mut e).len();
    let events = evs(&mut e);
    let ev = events.len();
    assert!(
        t <= pipe_core::MAX_EVENTS,
        "{t} transmits queued by one read"
    );
    assert!(
        ev <= pipe_core::MAX_EVENTS + 8,
        "{ev} events queued by one read"
    );
    // External forwards count once the driver reports them; none was reported here.
    let pending = events
        .iter()
        .filter(|e| matches!(e, Event::Forward { .. }))
        .count() as u64;
    let s = e.stats(conns[0]).unwrap();
    assert_eq!(s.received, 16_384);
    assert_eq!(s.forwarded + s.forward_failed + pending, 16_384 * 16);
}
