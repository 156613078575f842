//! Zero-copy relaying, the engine's rule (`engine/splice.rs`): which pipes may hand their bytes
//! to the kernel (`splice_source`), when a target may take spliced bytes (`splice_begin`), and
//! that a reservation holds sends, the FIN and the release back until it ends.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pipe_core::rustls_types::ServerName;
use pipe_core::{
    Conf, Engine, Event, Filter, Framing, Kind, LinkTarget, PipeId, State, SubId, TlsClient,
};

#[allow(clippy::disallowed_methods)] // one real Instant as the epoch; time is an argument after
fn epoch() -> Instant {
    Instant::now()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const EXT: LinkTarget = LinkTarget::External {
    kind: Kind::TcpClient,
    open: true,
};

/// A relay's upstream as the relay makes it: a TCP client, its `SubId::ALL` dropped, linked
/// to another engine's pipe and paired.
fn upstream(conf: Conf, now: Instant) -> (Engine, PipeId) {
    let mut e = Engine::new(1);
    let p = e.open_tcp(now, addr(1), addr(2), conf, false).unwrap();
    e.unsubscribe(p, SubId::ALL).unwrap();
    let l = e.link(p, EXT, None, None).unwrap();
    assert!(e.set_link_paired(p, l));
    (e, p)
}

fn drain(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

#[test]
fn a_raw_paired_upstream_may_splice_and_anything_that_needs_the_bytes_stops_it() {
    let now = epoch();
    let (mut e, p) = upstream(Conf::default(), now);
    let (link, _token) = e
        .splice_source(p)
        .expect("raw, unsubscribed, paired: eligible");

    // A subscription would take the bytes: copy.
    e.subscribe(p, Filter::all()).unwrap();
    assert_eq!(e.splice_source(p), None, "subscribed");
    e.unsubscribe(p, SubId::ALL).unwrap();
    assert!(e.splice_source(p).is_some());

    // Message callbacks would see the bytes: copy.
    e.set_callbacks(p, true);
    assert_eq!(e.splice_source(p), None, "callbacks");
    e.set_callbacks(p, false);
    assert!(e.splice_source(p).is_some());

    // Bytes spliced count as a forwarded read.
    e.handle_spliced(now, p, link, 1000);
    let s = e.stats(p).unwrap();
    assert_eq!(
        (s.bytes_in, s.spliced_in, s.forwarded, s.received),
        (1000, 1000, 1, 1)
    );

    // A second link: one kernel pipe cannot feed two targets.
    e.link(p, EXT, None, None).unwrap();
    assert_eq!(e.splice_source(p), None, "two links");

    // After the peer's FIN nothing more is read.
    let (mut e, p) = upstream(Conf::default(), now);
    e.handle_peer_closed(now, p, false);
    assert_eq!(e.splice_source(p), None, "read side closed");
}

#[test]
fn not_eligible_without_a_pair_or_with_framing_tls_dedup_or_zero_copy_off() {
    let now = epoch();
    // Linked one way only: not a relay pair.
    let mut e = Engine::new(1);
    let p = e
        .open_tcp(now, addr(1), addr(2), Conf::default(), false)
        .unwrap();
    e.unsubscribe(p, SubId::ALL).unwrap();
    e.link(p, EXT, None, None).unwrap();
    assert_eq!(e.splice_source(p), None, "unpaired");

    let framed = Conf {
        framing: Framing::LengthPrefixed { max: 1 << 16 },
        ..Conf::default()
    };
    let (e, p) = upstream(framed, now);
    assert_eq!(e.splice_source(p), None, "framed");
    let dedup = Conf {
        enable_msg_ids: true,
        ..Conf::default()
    };
    let (e, p) = upstream(dedup, now);
    assert_eq!(e.splice_source(p), None, "dedup");
    let off = Conf {
        zero_copy: false,
        ..Conf::default()
    };
    let (mut e, p) = upstream(off, now);
    assert_eq!(e.splice_source(p), None, "zero_copy off");
    assert!(
        !e.splice_begin(now, p),
        "zero_copy off: not a target either"
    );

    let tls = TlsClient::with_roots([])
        .dangerous_accept_any_certificate()
        .server_name(ServerName::try_from("example.com".to_string()).unwrap())
        .build()
        .unwrap();
    let conf = Conf {
        tls: Some(tls),
        ..Conf::default()
    };
    let (mut e, p) = upstream(conf, now);
    assert_eq!(e.splice_source(p), None, "TLS");
    assert!(!e.splice_begin(now, p), "TLS target");
}

#[test]
fn an_accepted_connection_with_only_its_fallback_may_splice_until_its_listener_has_callbacks() {
    let now = epoch();
    let mut e = Engine::new(1);
    let l = e
        .open_listener(now, addr(1), Conf::default(), false)
        .unwrap();
    let c = e.handle_accepted(now, l, addr(1), addr(9)).unwrap();
    let link = e.link(c, EXT, None, None).unwrap();
    assert_eq!(e.splice_source(c), None, "not paired yet");
    e.set_link_paired(c, link);
    assert!(
        e.splice_source(c).is_some(),
        "the fallback takes nothing a link took"
    );
    e.set_callbacks(l, true);
    assert_eq!(
        e.splice_source(c),
        None,
        "the listener's callbacks see every message"
    );
    e.set_callbacks(l, false);
    assert!(e.splice_source(c).is_some());
    // `subscribe(all)` makes the fallback an ordinary subscription: it would take copies.
    e.subscribe(c, Filter::all()).unwrap();
    assert_eq!(e.splice_source(c), None, "subscribed");
}

#[test]
fn a_target_takes_spliced_bytes_only_with_an_empty_queue_and_holds_sends_meanwhile() {
    let now = epoch();
    let (mut e, t) = upstream(Conf::default(), now);
    drain(&mut e);
    // Something queued first: not yet (order is kept).
    e.send(now, t, b"queued first", None).unwrap();
    assert!(!e.splice_begin(now, t), "queue not empty");
    let (buf, _) = e.peek_transmit(t).unwrap();
    let n = buf.len();
    e.advance_transmit(now, t, n);

    assert!(e.splice_begin(now, t));
    assert!(e.is_splicing(t));
    assert!(!e.splice_begin(now, t), "reserved already");
    // A send meanwhile queues, and is not written inside the spliced bytes.
    assert_eq!(e.can_send_direct(t, 5, None), Ok(None));
    e.send(now, t, b"after", None).unwrap();
    assert!(
        !e.send_waits_for_direct(t, pipe_core::DIRECT_MIN),
        "the socket is the splice's: a sender could not flush the queue, so it does not wait"
    );
    assert!(
        e.peek_transmit(t).is_none(),
        "held while spliced bytes are in flight"
    );
    e.handle_spliced_out(now, t, 4096);
    e.splice_end(now, t, 0);
    assert!(!e.is_splicing(t));
    assert_eq!(&e.peek_transmit(t).unwrap().0[..], b"after");
    let s = e.stats(t).unwrap();
    assert_eq!((s.bytes_out, s.spliced_out), (n as u64 + 4096, 4096));
}

#[test]
fn the_fin_and_the_release_wait_for_the_spliced_bytes() {
    let now = epoch();
    let (mut e, t) = upstream(Conf::default(), now);
    drain(&mut e);
    assert!(e.splice_begin(now, t));
    // The partner's FIN arrives while spliced bytes are in the kernel pipe.
    e.shutdown_write(now, t).unwrap();
    assert!(
        !drain(&mut e).contains(&Event::WriteShut { pipe: t }),
        "FIN before the spliced bytes"
    );
    e.splice_end(now, t, 0);
    assert!(drain(&mut e).contains(&Event::WriteShut { pipe: t }));

    // A close while reserved: released only once the reservation ends; unsent bytes count.
    let (mut e, t) = upstream(Conf::default(), now);
    drain(&mut e);
    assert!(e.splice_begin(now, t));
    e.close(now, t);
    assert!(!drain(&mut e)
        .iter()
        .any(|ev| matches!(ev, Event::Released { .. })));
    e.splice_end(now, t, 77);
    assert!(drain(&mut e)
        .iter()
        .any(|ev| matches!(ev, Event::Released { pipe, .. } if *pipe == t)));
    assert_eq!(e.stats(t).map_or(77, |s| s.unsent_dropped), 77);
}

#[test]
fn a_reservation_without_progress_is_a_write_stall_and_the_close_deadline_ends_it() {
    let now = epoch();
    let conf = Conf {
        write_stall_timeout: Some(Duration::from_secs(5)),
        ..Conf::default()
    };
    let (mut e, t) = upstream(conf, now);
    drain(&mut e);
    assert!(e.splice_begin(now, t));
    assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(5)));
    e.handle_timeout(now + Duration::from_secs(5));
    let evs = drain(&mut e);
    assert!(evs.iter().any(|ev| matches!(ev, Event::End { .. })));
    assert!(evs.iter().any(|ev| matches!(ev, Event::Released { .. })));
    assert!(!e.is_splicing(t));

    // Ended while reserved: the close deadline releases it.
    let (mut e, t) = upstream(Conf::default(), now);
    drain(&mut e);
    assert!(e.splice_begin(now, t));
    e.close(now, t);
    assert_eq!(e.state(t), Some(State::Closing));
    drain(&mut e);
    let at = e.poll_timeout().expect("the close deadline");
    e.handle_timeout(at);
    assert!(drain(&mut e)
        .iter()
        .any(|ev| matches!(ev, Event::Released { .. })));
}

/// Random driver steps on a target pipe: sends, partial writes, reservations, spliced bytes,
/// shutdown, close, time. After each step: nothing of the queue is handed out while reserved,
/// no FIN and no release while reserved, a reservation only over an empty queue, `WriteShut`
/// and `Released` at most once and only once the queue is written, and every byte out counted
/// exactly once.
mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Send(usize),
        Write(usize),
        Begin,
        Out(usize),
        End(usize),
        Shutdown,
        Close,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1usize..5000).prop_map(Op::Send),
            3 => (0usize..6000).prop_map(Op::Write),
            3 => Just(Op::Begin),
            3 => (0usize..70_000).prop_map(Op::Out),
            2 => (0usize..3).prop_map(Op::End),
            1 => Just(Op::Shutdown),
            1 => Just(Op::Close),
            2 => (1u64..4000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn a_reservation_holds_the_queue_the_fin_and_the_release(ops in proptest::collection::vec(op(), 1..60)) {
            let epoch = epoch();
            let mut now = epoch;
            let conf = Conf {
                write_stall_timeout: Some(Duration::from_secs(5)),
                ..Conf::default()
            };
            let (mut e, t) = upstream(conf, now);
            drain(&mut e);
            let (mut fins, mut releases) = (0, 0);
            let (mut written, mut spliced) = (0u64, 0u64);
            for op in ops {
                let busy = e.is_splicing(t);
                match op {
                    Op::Send(n) => {
                        let _ = e.send(now, t, &vec![1u8; n], None);
                    }
                    Op::Write(n) => {
                        if let Some((buf, _)) = e.peek_transmit(t) {
                            prop_assert!(!busy, "queue handed out while reserved");
                            let n = n.min(buf.len());
                            e.advance_transmit(now, t, n);
                            written += n as u64;
                        }
                    }
                    Op::Begin => {
                        let empty = e.out_bytes(t) == 0;
                        let ok = e.splice_begin(now, t);
                        prop_assert!(!ok || (empty && !busy), "reserved over a queue, or twice");
                    }
                    Op::Out(n) => {
                        e.handle_spliced_out(now, t, n);
                        if busy {
                            spliced += n as u64;
                        }
                    }
                    Op::End(unsent) => e.splice_end(now, t, unsent),
                    Op::Shutdown => {
                        let _ = e.shutdown_write(now, t);
                    }
                    Op::Close => e.close(now, t),
                    Op::Advance(ms) => {
                        now += Duration::from_millis(ms);
                        e.handle_timeout(now);
                    }
                }
                let busy = e.is_splicing(t);
                if busy {
                    prop_assert!(e.peek_transmit(t).is_none());
                    prop_assert!(!matches!(e.can_send_direct(t, 1, None), Ok(Some(_))));
                }
                for ev in drain(&mut e) {
                    match ev {
                        Event::WriteShut { .. } => {
                            prop_assert!(!busy && e.out_bytes(t) == 0, "FIN before the bytes");
                            fins += 1;
                        }
                        Event::Released { .. } => {
                            prop_assert!(!busy, "released while reserved");
                            releases += 1;
                        }
                        _ => {}
                    }
                }
                prop_assert!(fins <= 1 && releases <= 1);
                if let Some(s) = e.stats(t) {
                    prop_assert_eq!(s.bytes_out, written + spliced);
                    prop_assert_eq!(s.spliced_out, spliced);
                }
            }
            // Closing and letting time pass always releases the pipe in the end.
            e.close(now, t);
            e.handle_timeout(now + Duration::from_secs(60));
            for ev in drain(&mut e) {
                if matches!(ev, Event::Released { .. }) {
                    releases += 1;
                }
            }
            prop_assert_eq!(releases, 1, "released exactly once");
        }
    }
}
