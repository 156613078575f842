//! Deadlines (idle, first message, write stall, close flush), `Released`, `Pause`/`Resume`
//! flow control, the server memory budget and reliable outcomes kept per pipe, in virtual
//! time: one `Instant` base plus offsets, no sleeps, no sockets.
//!
//! Tests drain events after every input, as a driver does, and assert exact event sequences
//! and instants. Output is written the way a one-writer-per-socket driver writes it:
//! `poll_dirty`, then `peek_transmit` / `advance_transmit`, so the engine sees every byte's
//! progress. When a test ends, [`Sim`] checks the lifecycle rules over every event it saw.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pipe_core::rng::Rng;
use pipe_core::{
    rudp, Conf, EndReason, Engine, Event, Filter, Framing, Message, MessageId, Outcome, PipeId,
    RecvError, SendError, State, SubId,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const NONE: [Event; 0] = [];

const LOCAL: &str = "10.0.0.1:1000";
const PEER: &str = "10.0.0.2:2000";
const LISTEN: &str = "10.0.0.1:80";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn conn_peer(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 5000 + i))
}

fn message(pipe: PipeId, data: &[u8], from: SocketAddr) -> Event {
    Event::Message {
        pipe,
        msg: Message {
            data: Bytes::copy_from_slice(data),
            from,
        },
    }
}

fn end(pipe: PipeId, reason: EndReason) -> Event {
    Event::End { pipe, reason }
}

fn released(pipe: PipeId, unsent: usize) -> Event {
    Event::Released { pipe, unsent }
}

/// The virtual clock's origin; every other instant is an offset from it (tests may read the
/// clock once; the core never does).
#[allow(clippy::disallowed_methods)]
fn base_instant() -> Instant {
    Instant::now()
}

/// One engine on a virtual clock, and every event it emitted.
struct Sim {
    e: Engine,
    t0: Instant,
    log: Vec<Event>,
}

impl Sim {
    fn new() -> Self {
        Self {
            e: Engine::new(7),
            t0: base_instant(),
            log: Vec::new(),
        }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// Drain the events (transmits are left queued: tests write through peek/advance).
    fn ev(&mut self) -> Vec<Event> {
        let v: Vec<Event> = std::iter::from_fn(|| self.e.poll_event()).collect();
        self.log.extend(v.iter().cloned());
        v
    }

    /// The pipes with queued output, as a writer task learns of them: the output stays
    /// queued, and `poll_timeout` reports deadlines again instead of "now".
    fn dirty(&mut self) -> Vec<PipeId> {
        std::iter::from_fn(|| self.e.poll_dirty()).collect()
    }

    /// `handle_timeout` at `t0 + d`, then the events.
    fn fire(&mut self, d: Duration) -> Vec<Event> {
        let now = self.at(d);
        self.e.handle_timeout(now);
        self.ev()
    }

    fn udp(&mut self, conf: Conf, dest: Option<&str>) -> PipeId {
        self.e
            .open_udp(self.t0, sa(LOCAL), dest.map(sa), conf, false)
            .unwrap()
    }

    fn tcp(&mut self, conf: Conf) -> PipeId {
        self.e
            .open_tcp(self.t0, sa(LOCAL), sa(PEER), conf, false)
            .unwrap()
    }

    fn listener(&mut self, conf: Conf) -> PipeId {
        self.e
            .open_listener(self.t0, sa(LISTEN), conf, false)
            .unwrap()
    }

    /// Accept connection `i` (peer 10.0.0.2:5000+i) on `l` at `t0 + d`.
    fn accept(&mut self, l: PipeId, d: Duration, i: u16) -> PipeId {
        let now = self.at(d);
        self.e
            .handle_accepted(now, l, sa(LISTEN), conn_peer(i))
            .unwrap()
    }

    fn advance(&mut self, d: Duration, pipe: PipeId, n: usize) {
        let now = self.at(d);
        self.e.advance_transmit(now, pipe, n);
    }

    fn stream(&mut self, d: Duration, pipe: PipeId, data: &[u8]) {
        let now = self.at(d);
        self.e.handle_stream(now, pipe, data);
    }

    fn datagram(&mut self, d: Duration, pipe: PipeId, data: &[u8]) {
        let now = self.at(d);
        self.e.handle_datagram(now, pipe, sa(PEER), data);
    }

    fn send(&mut self, d: Duration, pipe: PipeId, data: &[u8]) -> Result<(), SendError> {
        let now = self.at(d);
        self.e.send(now, pipe, data, None)
    }

    fn stats(&self, pipe: PipeId) -> pipe_core::Stats {
        self.e.stats(pipe).expect("pipe still held")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.ev();
            check_lifecycle(&self.log);
        }
    }
}

/// Per pipe: one `Up` first; at most one `End`; at most one `Released`, after the `End`;
/// no `Message` after the `End`; `Pause` and `Resume` alternate, starting with `Pause`.
fn check_lifecycle(log: &[Event]) {
    if let Err(e) = lifecycle(log) {
        panic!("{e}");
    }
}

fn lifecycle(log: &[Event]) -> Result<(), String> {
    let mut up = HashSet::new();
    let mut ended = HashSet::new();
    let mut released = HashSet::new();
    let mut paused: HashMap<PipeId, bool> = HashMap::new();
    for (i, ev) in log.iter().enumerate() {
        let broken = match ev {
            Event::Up { pipe } => (!up.insert(*pipe)).then_some("second Up"),
            Event::End { pipe, .. } if !up.contains(pipe) => Some("End before Up"),
            Event::End { pipe, .. } => (!ended.insert(*pipe)).then_some("second End"),
            Event::Released { pipe, .. } if !ended.contains(pipe) => Some("Released before End"),
            Event::Released { pipe, .. } => (!released.insert(*pipe)).then_some("second Released"),
            Event::Message { pipe, .. } => ended.contains(pipe).then_some("Message after End"),
            Event::Pause { pipe } => paused
                .insert(*pipe, true)
                .unwrap_or(false)
                .then_some("Pause while paused"),
            Event::Resume { pipe } => {
                (!paused.insert(*pipe, false).unwrap_or(false)).then_some("Resume while not paused")
            }
            _ => None,
        };
        if let Some(what) = broken {
            return Err(format!("event {i} ({ev:?}): {what}"));
        }
    }
    Ok(())
}

#[test]
fn lifecycle_check_catches_broken_sequences() {
    let (p, q) = {
        let mut s = Sim::new();
        let p = s.udp(Conf::default(), None);
        let q = s.udp(Conf::default(), None);
        s.ev();
        (p, q)
    };
    let (up, ended, rel) = (
        Event::Up { pipe: p },
        end(p, EndReason::Local),
        released(p, 0),
    );
    let (pause, resume) = (Event::Pause { pipe: p }, Event::Resume { pipe: p });
    let good = [
        up.clone(),
        Event::Up { pipe: q },
        pause.clone(),
        resume.clone(),
        pause.clone(),
        ended.clone(),
        rel.clone(),
        end(q, EndReason::Local),
        released(q, 0),
    ];
    assert_eq!(lifecycle(&good), Ok(()));
    for (bad, what) in [
        (vec![up.clone(), rel.clone()], "Released before End"),
        (
            vec![up.clone(), ended.clone(), rel.clone(), rel.clone()],
            "second Released",
        ),
        (vec![up.clone(), ended.clone(), ended.clone()], "second End"),
        (vec![ended.clone()], "End before Up"),
        (
            vec![up.clone(), pause.clone(), pause.clone()],
            "Pause while paused",
        ),
        (vec![up.clone(), resume.clone()], "Resume while not paused"),
        (
            vec![up.clone(), ended.clone(), message(p, b"x", sa(PEER))],
            "Message after End",
        ),
    ] {
        let err = lifecycle(&bad).unwrap_err();
        assert!(err.ends_with(what), "{err} / {what}");
    }
}

#[test]
fn new_end_reasons_display() {
    assert_eq!(EndReason::IdleTimeout.to_string(), "idle timeout");
    assert_eq!(
        EndReason::FirstMessageTimeout.to_string(),
        "no first message in time"
    );
    assert_eq!(
        EndReason::WriteStalled { unsent: 100 }.to_string(),
        "the peer stopped reading (100 bytes unsent)"
    );
}

#[test]
fn server_conf_sets_the_three_deadlines_default_sets_none() {
    let d = Conf::default();
    assert_eq!(
        (
            d.idle_timeout,
            d.first_message_timeout,
            d.write_stall_timeout
        ),
        (None, None, None)
    );
    assert_eq!(d.close_timeout, 2 * SEC);
    assert_eq!(d.max_callback_bytes, 1 << 20);
    assert_eq!(d.max_callback_jobs, 256);
    assert_eq!(d.max_server_bytes, 32 << 20);
    let s = Conf::server();
    assert_eq!(
        (
            s.idle_timeout,
            s.first_message_timeout,
            s.write_stall_timeout
        ),
        (Some(30 * SEC), Some(10 * SEC), Some(30 * SEC))
    );
    assert_eq!(s.validate(), Ok(()));
}

// ---- 1. idle timeout ----------------------------------------------------------------

#[test]
fn idle_timeout_counts_from_the_last_input_udp_and_tcp_client() {
    for tcp in [false, true] {
        let mut s = Sim::new();
        let conf = Conf {
            idle_timeout: Some(5 * SEC),
            ..Conf::default()
        };
        let p = if tcp {
            s.tcp(conf)
        } else {
            s.udp(conf, Some(PEER))
        };
        assert_eq!(s.ev(), [Event::Up { pipe: p }]);
        assert_eq!(s.e.poll_timeout(), Some(s.at(5 * SEC)));

        if tcp {
            s.stream(3 * SEC, p, b"hi");
        } else {
            s.datagram(3 * SEC, p, b"hi");
        }
        assert_eq!(s.ev(), [Event::Readable { pipe: p }]);
        // The armed entry stays at +5 s; when it fires it finds the later deadline.
        assert_eq!(s.e.poll_timeout(), Some(s.at(5 * SEC)));
        assert_eq!(s.fire(5 * SEC), NONE, "tcp={tcp}");
        assert_eq!(s.e.state(p), Some(State::Open));
        assert_eq!(s.e.poll_timeout(), Some(s.at(8 * SEC)), "tcp={tcp}");

        assert_eq!(s.fire(8 * SEC - MS), NONE, "tcp={tcp}");
        assert_eq!(s.e.state(p), Some(State::Open));
        assert_eq!(
            s.fire(8 * SEC),
            [end(p, EndReason::IdleTimeout), released(p, 0)],
            "tcp={tcp}"
        );
        assert_eq!(s.e.poll_timeout(), None);
        // What arrived before the end is still readable; then the pipe is forgotten.
        assert_eq!(s.e.state(p), Some(State::Closed));
        let m = s.e.recv(p, SubId::ALL).unwrap().unwrap();
        assert_eq!(m.data, Bytes::from_static(b"hi"));
        assert_eq!(s.e.state(p), None);
        assert_eq!(s.e.recv(p, SubId::ALL), Err(RecvError::Closed));
    }
}

#[test]
fn without_idle_timeout_nothing_ever_ends() {
    let mut s = Sim::new();
    let u = s.udp(Conf::default(), Some(PEER));
    let t = s.tcp(Conf::default());
    let l = s.listener(Conf::default());
    let c = s.accept(l, SEC, 0);
    s.ev();
    assert_eq!(s.e.poll_timeout(), None);
    s.datagram(2 * SEC, u, b"x");
    s.stream(2 * SEC, t, b"x");
    s.ev();
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.fire(Duration::from_secs(365 * 86_400)), NONE);
    for p in [u, t, l, c] {
        assert_eq!(s.e.state(p), Some(State::Open), "{p}");
    }
}

#[test]
fn listener_never_idles_out_its_connections_do() {
    let mut s = Sim::new();
    let conf = Conf {
        idle_timeout: Some(5 * SEC),
        ..Conf::default()
    };
    let l = s.listener(conf);
    assert_eq!(s.ev(), [Event::Up { pipe: l }]);
    assert_eq!(s.e.poll_timeout(), None, "a listener has no idle deadline");

    let c = s.accept(l, SEC, 0);
    assert_eq!(
        s.ev(),
        [
            Event::Up { pipe: c },
            Event::Accepted {
                listener: l,
                conn: c
            }
        ]
    );
    assert_eq!(s.e.poll_timeout(), Some(s.at(6 * SEC)));
    assert_eq!(s.fire(6 * SEC - MS), NONE);
    assert_eq!(
        s.fire(6 * SEC),
        [end(c, EndReason::IdleTimeout), released(c, 0)]
    );
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.fire(Duration::from_secs(3600)), NONE);
    assert_eq!(s.e.state(l), Some(State::Open));
    // The ended connection waits in the accept queue; handed out, it is forgotten.
    assert_eq!(s.e.pop_accepted(l), Ok(Some(c)));
    assert_eq!(s.e.state(c), None);
    assert_eq!(s.e.pipe_count(), 1);
}

#[test]
fn write_progress_is_activity_queued_bytes_are_not() {
    let mut s = Sim::new();
    let conf = Conf {
        idle_timeout: Some(5 * SEC),
        ..Conf::default()
    };
    let p = s.tcp(conf.clone()); // its bytes are written at +4 s
    let q = s.tcp(conf); // its bytes are never written
    assert_eq!(s.ev(), [Event::Up { pipe: p }, Event::Up { pipe: q }]);
    s.send(SEC, p, b"0123456789").unwrap();
    s.send(SEC, q, b"abcdefghij").unwrap();
    assert_eq!(s.dirty(), [p, q]);
    assert_eq!(s.e.poll_timeout(), Some(s.at(5 * SEC)));

    assert_eq!(
        s.e.peek_transmit(p),
        Some((&Bytes::from_static(b"0123456789"), sa(PEER)))
    );
    s.advance(4 * SEC, p, 10);
    assert_eq!(s.ev(), NONE);
    let st = s.stats(p);
    assert_eq!((st.bytes_out, st.sent), (10, 1));
    assert_eq!(s.e.out_bytes(p), 0);

    // +5 s: q, whose bytes sat queued, idles out (and flushes until its close deadline);
    // p wrote at +4 s and re-arms to +9 s.
    assert_eq!(s.fire(5 * SEC), [end(q, EndReason::IdleTimeout)]);
    assert_eq!(s.e.state(q), Some(State::Closing));
    assert_eq!(s.e.state(p), Some(State::Open));
    assert_eq!(s.e.poll_timeout(), Some(s.at(7 * SEC)));
    assert_eq!(s.fire(7 * SEC), [released(q, 10)]);
    assert_eq!(s.e.poll_timeout(), Some(s.at(9 * SEC)));
    assert_eq!(s.fire(9 * SEC - MS), NONE);
    assert_eq!(
        s.fire(9 * SEC),
        [end(p, EndReason::IdleTimeout), released(p, 0)]
    );
    assert_eq!(s.e.pipe_count(), 0);
}

#[test]
fn direct_sends_count_as_activity_when_they_happen() {
    let mut s = Sim::new();
    let conf = Conf {
        idle_timeout: Some(5 * SEC),
        ..Conf::default()
    };
    let u = s.udp(conf, Some(PEER));
    s.ev();
    assert_eq!(s.e.can_send_direct(u, 10, None), Ok(Some(sa(PEER))));
    // The driver wrote 10 bytes itself at +2 s, and gives the engine the time of it.
    let at = s.at(2 * SEC);
    s.e.note_direct_send(u, 10, || at);
    let st = s.stats(u);
    assert_eq!((st.bytes_out, st.sent), (10, 1));
    assert_eq!(s.e.poll_timeout(), Some(s.at(5 * SEC)));
    assert_eq!(s.fire(5 * SEC), NONE);
    assert_eq!(s.e.state(u), Some(State::Open));
    // Activity at +2 s: the deadline is +7 s, not +10 s.
    assert_eq!(s.e.poll_timeout(), Some(s.at(7 * SEC)));
    assert_eq!(s.fire(7 * SEC - MS), NONE);
    assert_eq!(
        s.fire(7 * SEC),
        [end(u, EndReason::IdleTimeout), released(u, 0)]
    );
}

#[test]
fn direct_sends_read_no_clock_without_an_idle_deadline() {
    let mut s = Sim::new();
    let u = s.udp(Conf::default(), Some(PEER));
    s.ev();
    s.e.note_direct_send(u, 10, || panic!("no clock read without an idle deadline"));
    assert_eq!(s.stats(u).bytes_out, 10);
}

#[test]
fn a_zero_byte_advance_is_not_idle_activity() {
    let mut s = Sim::new();
    let p = s.tcp(Conf {
        idle_timeout: Some(5 * SEC),
        ..Conf::default()
    });
    s.ev();
    s.send(Duration::ZERO, p, &[1; 10]).unwrap();
    s.dirty();
    s.advance(4 * SEC, p, 0);
    assert_eq!(s.e.out_bytes(p), 10);
    assert_eq!(s.stats(p).bytes_out, 0);
    // No byte either way since the open: idle at +5 s.
    assert_eq!(s.fire(5 * SEC), [end(p, EndReason::IdleTimeout)]);
}

// ---- 2. first-message timeout -------------------------------------------------------

fn prefixed(first: Option<Duration>, idle: Option<Duration>) -> Conf {
    Conf {
        first_message_timeout: first,
        idle_timeout: idle,
        framing: Framing::LengthPrefixed { max: 1024 },
        ..Conf::default()
    }
}

#[test]
fn silent_connection_ends_at_exactly_the_first_message_deadline() {
    let mut s = Sim::new();
    let l = s.listener(prefixed(Some(10 * SEC), None));
    let c = s.accept(l, SEC, 0);
    assert_eq!(
        s.ev(),
        [
            Event::Up { pipe: l },
            Event::Up { pipe: c },
            Event::Accepted {
                listener: l,
                conn: c
            }
        ]
    );
    // Counted from the accept (+1 s), not from the listener's open.
    assert_eq!(s.e.poll_timeout(), Some(s.at(11 * SEC)));
    assert_eq!(s.fire(11 * SEC - MS), NONE);
    assert_eq!(s.e.state(c), Some(State::Open));
    assert_eq!(
        s.fire(11 * SEC),
        [end(c, EndReason::FirstMessageTimeout), released(c, 0)]
    );
    assert_eq!(s.e.connections(l), Vec::<PipeId>::new());
    assert_eq!(s.e.state(l), Some(State::Open));
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.e.pop_accepted(l), Ok(Some(c)));
    assert_eq!(s.e.state(c), None);
    assert_eq!(s.e.pipe_count(), 1);
}

#[test]
fn partial_frames_are_not_a_first_message() {
    let mut s = Sim::new();
    let l = s.listener(prefixed(Some(10 * SEC), None));
    let c1 = s.accept(l, Duration::ZERO, 1);
    let c2 = s.accept(l, Duration::ZERO, 2);
    let c3 = s.accept(l, Duration::ZERO, 3);
    s.ev();
    // c1: 3 of the 4 header bytes. c2: the header and 1 of 2 payload bytes.
    s.stream(5 * SEC, c1, &[0, 0, 0]);
    s.stream(5 * SEC, c2, &[0, 0, 0, 2, b'h']);
    // c3: one frame in three reads, the last 1 ms before the deadline.
    s.stream(9 * SEC, c3, &[0, 0]);
    s.stream(9 * SEC + 500 * MS, c3, &[0, 2, b'h']);
    s.stream(10 * SEC - MS, c3, b"i");
    // No callbacks: the frame waits for `accept()` in the connection's fallback queue.
    assert_eq!(s.ev(), [Event::Readable { pipe: c3 }]);
    let (st1, st2, st3) = (s.stats(c1), s.stats(c2), s.stats(c3));
    assert_eq!((st1.bytes_in, st1.received), (3, 0));
    assert_eq!((st2.bytes_in, st2.received), (5, 0));
    assert_eq!((st3.bytes_in, st3.received, st3.queued), (6, 1, 1));

    assert_eq!(s.e.poll_timeout(), Some(s.at(10 * SEC)));
    assert_eq!(
        s.fire(10 * SEC),
        [
            end(c1, EndReason::FirstMessageTimeout),
            released(c1, 0),
            end(c2, EndReason::FirstMessageTimeout),
            released(c2, 0),
        ]
    );
    assert_eq!(s.e.connections(l), [c3]);
    assert_eq!(s.e.poll_timeout(), None, "c3 has no other deadline");
    assert_eq!(s.fire(Duration::from_secs(3600)), NONE);
    assert_eq!(s.e.state(c3), Some(State::Open));
}

#[test]
fn a_complete_frame_cancels_the_first_message_deadline_then_idle_applies() {
    let mut s = Sim::new();
    let l = s.listener(prefixed(Some(10 * SEC), Some(30 * SEC)));
    let c = s.accept(l, Duration::ZERO, 0);
    s.ev();
    assert_eq!(s.e.poll_timeout(), Some(s.at(10 * SEC)));
    s.stream(4 * SEC, c, &[0, 0, 0, 2, b'h', b'i']);
    assert_eq!(s.ev(), [Event::Readable { pipe: c }]);
    // The stale entry fires and re-arms to the idle deadline: 30 s after the frame.
    assert_eq!(s.e.poll_timeout(), Some(s.at(10 * SEC)));
    assert_eq!(s.fire(10 * SEC), NONE);
    assert_eq!(s.e.state(c), Some(State::Open));
    assert_eq!(s.e.poll_timeout(), Some(s.at(34 * SEC)));
    assert_eq!(s.fire(34 * SEC - MS), NONE);
    assert_eq!(
        s.fire(34 * SEC),
        [end(c, EndReason::IdleTimeout), released(c, 0)]
    );
}

#[test]
fn clients_and_listeners_have_no_first_message_deadline() {
    let mut s = Sim::new();
    let conf = prefixed(Some(SEC), None);
    let t = s.tcp(conf.clone());
    let u = s.udp(conf.clone(), Some(PEER));
    let l = s.listener(conf);
    s.ev();
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.fire(Duration::from_secs(3600)), NONE);
    for p in [t, u, l] {
        assert_eq!(s.e.state(p), Some(State::Open), "{p}");
    }
}

// ---- 3. write stall -----------------------------------------------------------------

fn stall(d: Duration) -> Conf {
    Conf {
        write_stall_timeout: Some(d),
        ..Conf::default()
    }
}

#[test]
fn unwritten_bytes_end_the_pipe_at_exactly_the_stall_timeout() {
    let mut s = Sim::new();
    let p = s.tcp(stall(5 * SEC));
    // An unread message keeps the ended pipe (and its stats) around.
    s.stream(Duration::ZERO, p, b"unread");
    assert_eq!(s.ev(), [Event::Up { pipe: p }, Event::Readable { pipe: p }]);
    assert_eq!(s.e.poll_timeout(), None);
    s.send(SEC, p, &[7; 100]).unwrap();
    assert_eq!(s.dirty(), [p]);
    assert_eq!(s.ev(), NONE);
    assert_eq!(s.e.poll_timeout(), Some(s.at(6 * SEC)));
    assert_eq!(s.fire(6 * SEC - MS), NONE);
    assert_eq!(s.e.out_bytes(p), 100);
    assert_eq!(
        s.fire(6 * SEC),
        [
            end(p, EndReason::WriteStalled { unsent: 100 }),
            released(p, 100)
        ]
    );
    let st = s.stats(p);
    assert_eq!(
        (st.unsent_dropped, st.bytes_out, st.sent, st.bytes_in),
        (100, 0, 1, 6)
    );
    assert_eq!(s.e.out_bytes(p), 0);
    assert_eq!(s.e.peek_transmit(p), None);
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.e.state(p), Some(State::Closed));
    assert_eq!(s.send(7 * SEC, p, b"more"), Err(SendError::Closed));
    let m = s.e.recv(p, SubId::ALL).unwrap().unwrap();
    assert_eq!(m.data, Bytes::from_static(b"unread"));
    assert_eq!(s.e.state(p), None);
}

#[test]
fn partial_writes_postpone_the_stall_deadline_from_the_last_progress() {
    let mut s = Sim::new();
    let p = s.tcp(stall(5 * SEC));
    s.stream(Duration::ZERO, p, b"unread");
    s.ev();
    s.send(Duration::ZERO, p, &[7; 100]).unwrap();
    s.dirty();
    assert_eq!(s.e.poll_timeout(), Some(s.at(5 * SEC)));
    s.advance(3 * SEC, p, 40);
    let (rest, dst) = s.e.peek_transmit(p).unwrap();
    assert_eq!((rest.len(), dst), (60, sa(PEER)));
    assert_eq!(s.fire(5 * SEC), NONE);
    assert_eq!(s.e.poll_timeout(), Some(s.at(8 * SEC)));
    // Zero bytes written is no progress.
    s.advance(7 * SEC, p, 0);
    assert_eq!(s.e.out_bytes(p), 60);
    assert_eq!(s.fire(8 * SEC - MS), NONE);
    assert_eq!(
        s.fire(8 * SEC),
        [
            end(p, EndReason::WriteStalled { unsent: 60 }),
            released(p, 60)
        ]
    );
    let st = s.stats(p);
    assert_eq!((st.bytes_out, st.unsent_dropped), (40, 60));
}

#[test]
fn an_emptied_queue_has_no_stall_deadline() {
    let mut s = Sim::new();
    let p = s.tcp(stall(5 * SEC));
    s.ev();
    s.send(Duration::ZERO, p, &[1; 10]).unwrap();
    s.dirty();
    s.advance(SEC, p, 10);
    assert_eq!(s.fire(5 * SEC), NONE);
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.fire(Duration::from_secs(3600)), NONE);
    assert_eq!(s.e.state(p), Some(State::Open));
    // A new send starts a new stall clock.
    s.send(Duration::from_secs(3600), p, &[2; 10]).unwrap();
    s.dirty();
    assert_eq!(s.e.poll_timeout(), Some(s.at(Duration::from_secs(3605))));
}

#[test]
fn write_stall_earlier_than_the_armed_idle_deadline_is_not_missed() {
    let mut s = Sim::new();
    let p = s.tcp(Conf {
        idle_timeout: Some(30 * SEC),
        write_stall_timeout: Some(5 * SEC),
        ..Conf::default()
    });
    s.ev();
    assert_eq!(s.e.poll_timeout(), Some(s.at(30 * SEC)));
    s.send(SEC, p, &[7; 100]).unwrap();
    s.dirty();
    assert_eq!(s.e.poll_timeout(), Some(s.at(6 * SEC)));
    assert_eq!(
        s.fire(6 * SEC),
        [
            end(p, EndReason::WriteStalled { unsent: 100 }),
            released(p, 100)
        ]
    );
}

// ---- 4. close flush -----------------------------------------------------------------

#[test]
fn close_ends_at_once_and_releases_when_the_bytes_are_written() {
    let mut s = Sim::new();
    let p = s.tcp(Conf::default());
    s.ev();
    s.send(Duration::ZERO, p, &[7; 100]).unwrap();
    assert_eq!(s.dirty(), [p]);
    let now = s.at(SEC);
    s.e.close(now, p);
    assert_eq!(s.ev(), [end(p, EndReason::Local)]);
    assert_eq!(s.e.state(p), Some(State::Closing));
    assert_eq!(s.send(SEC, p, b"late"), Err(SendError::Closed));
    assert_eq!(s.e.poll_timeout(), Some(s.at(3 * SEC)));

    s.advance(2 * SEC, p, 60);
    assert_eq!(s.ev(), NONE, "40 bytes still queued");
    assert_eq!(s.stats(p).bytes_out, 60);
    assert_eq!(s.e.out_bytes(p), 40);
    s.advance(2 * SEC + 500 * MS, p, 40);
    assert_eq!(s.ev(), [released(p, 0)]);
    assert_eq!(s.e.state(p), None, "nothing left to read: forgotten");
    assert_eq!(s.e.poll_timeout(), None);
    assert_eq!(s.fire(3 * SEC), NONE);
}

#[test]
fn close_deadline_drops_what_is_left_and_counts_it() {
    let mut s = Sim::new();
    let p = s.tcp(Conf::default());
    s.stream(Duration::ZERO, p, b"unread");
    s.ev();
    s.send(Duration::ZERO, p, &[7; 100]).unwrap();
    s.dirty();
    let now = s.at(SEC);
    s.e.close(now, p);
    assert_eq!(s.ev(), [end(p, EndReason::Local)]);
    s.advance(2 * SEC, p, 30);
    assert_eq!(s.ev(), NONE);
    assert_eq!(s.e.poll_timeout(), Some(s.at(3 * SEC)));
    assert_eq!(s.fire(3 * SEC - MS), NONE);
    assert_eq!(s.fire(3 * SEC), [released(p, 70)]);
    let st = s.stats(p);
    assert_eq!((st.bytes_out, st.unsent_dropped, st.sent), (30, 70, 1));
    assert_eq!(s.e.peek_transmit(p), None);
    assert_eq!(s.e.state(p), Some(State::Closed));

    // Nothing after the release emits anything or changes the counters.
    s.advance(4 * SEC, p, 10);
    let now = s.at(4 * SEC);
    s.e.close(now, p);
    s.e.handle_peer_closed(now, p, false);
    s.e.handle_error(now, p, "late".into());
    assert_eq!(s.fire(Duration::from_secs(3600)), NONE);
    assert_eq!(s.stats(p), st);
    let m = s.e.recv(p, SubId::ALL).unwrap().unwrap();
    assert_eq!(m.data, Bytes::from_static(b"unread"));
    assert_eq!(s.e.state(p), None);
}

#[test]
fn closing_a_listener_releases_each_connection_after_its_own_flush() {
    let mut s = Sim::new();
    let l = s.listener(Conf::default());
    let c1 = s.accept(l, Duration::ZERO, 1);
    let c2 = s.accept(l, Duration::ZERO, 2);
    assert_eq!(s.e.pop_accepted(l), Ok(Some(c1)));
    assert_eq!(s.e.pop_accepted(l), Ok(Some(c2)));
    s.ev();
    s.send(Duration::ZERO, c2, &[1; 50]).unwrap();
    assert_eq!(s.dirty(), [c2]);
    let now = s.at(SEC);
    s.e.close(now, l);
    assert_eq!(
        s.ev(),
        [
            end(c1, EndReason::ServerClosed),
            released(c1, 0),
            end(c2, EndReason::ServerClosed),
            end(l, EndReason::Local),
            released(l, 0),
        ]
    );
    assert_eq!(s.e.pipe_count(), 2, "the listener and c2, still flushing");
    assert_eq!(s.e.poll_timeout(), Some(s.at(3 * SEC)));
    assert_eq!(s.fire(3 * SEC), [released(c2, 50)]);
    assert_eq!(s.e.pipe_count(), 0);
}

#[test]
fn refused_datagrams_are_counted_and_a_closed_udp_pipe_releases_once_flushed() {
    let mut s = Sim::new();
    let u = s.udp(Conf::default(), Some(PEER));
    s.ev();
    s.send(Duration::ZERO, u, b"one").unwrap();
    s.send(Duration::ZERO, u, b"two").unwrap();
    assert_eq!(s.dirty(), [u]);
    assert_eq!(
        s.e.peek_transmit(u),
        Some((&Bytes::from_static(b"one"), sa(PEER)))
    );
    let now = s.at(MS);
    s.e.drop_transmit(now, u);
    let st = s.stats(u);
    assert_eq!((st.send_failed, st.bytes_out, st.sent), (1, 0, 2));
    let now = s.at(2 * MS);
    s.e.close(now, u);
    assert_eq!(s.ev(), [end(u, EndReason::Local)]);
    assert_eq!(
        s.e.peek_transmit(u),
        Some((&Bytes::from_static(b"two"), sa(PEER)))
    );
    let before = s.stats(u);
    assert_eq!(before.bytes_out, 0);
    // A datagram is written whole.
    s.advance(3 * MS, u, 3);
    assert_eq!(s.ev(), [released(u, 0)]);
    assert_eq!(s.e.state(u), None);
}

#[test]
fn poll_transmit_counts_as_written_and_releases() {
    let mut s = Sim::new();
    let p = s.tcp(Conf::default());
    s.ev();
    s.send(Duration::ZERO, p, b"bye").unwrap();
    let now = s.at(SEC);
    s.e.close(now, p);
    assert_eq!(s.ev(), [end(p, EndReason::Local)]);
    let t = s.e.poll_transmit().unwrap();
    assert_eq!(t.payload, Bytes::from_static(b"bye"));
    assert_eq!(s.e.poll_transmit(), None);
    assert_eq!(s.ev(), [released(p, 0)]);
    assert_eq!(s.e.poll_timeout(), None);
}

// ---- 5. callback caps ---------------------------------------------------------------

#[test]
fn callback_job_cap_pauses_and_finishing_a_job_resumes() {
    let mut s = Sim::new();
    let u = s.udp(
        Conf {
            max_callback_jobs: 3,
            ..Conf::default()
        },
        None,
    );
    s.e.set_callbacks(u, true);
    assert_eq!(s.ev(), [Event::Up { pipe: u }]);
    s.datagram(MS, u, b"a");
    s.datagram(2 * MS, u, b"b");
    assert_eq!(
        s.ev(),
        [message(u, b"a", sa(PEER)), message(u, b"b", sa(PEER))]
    );
    s.datagram(3 * MS, u, b"c");
    assert_eq!(
        s.ev(),
        [message(u, b"c", sa(PEER)), Event::Pause { pipe: u }]
    );
    assert_eq!(s.stats(u).paused, 1);
    s.e.handle_callback_done(u, 1);
    assert_eq!(s.ev(), [Event::Resume { pipe: u }]);
    s.e.handle_callback_done(u, 1);
    assert_eq!(s.ev(), NONE);
    // One job held: two more reach the cap again.
    s.datagram(4 * MS, u, b"d");
    assert_eq!(s.ev(), [message(u, b"d", sa(PEER))]);
    s.datagram(5 * MS, u, b"e");
    assert_eq!(
        s.ev(),
        [message(u, b"e", sa(PEER)), Event::Pause { pipe: u }]
    );
    assert_eq!(s.stats(u).paused, 2);
}

#[test]
fn callback_byte_cap_pauses_at_exactly_the_cap() {
    let conf = Conf {
        max_callback_bytes: 100,
        ..Conf::default()
    };
    let mut s = Sim::new();
    let a = s.udp(conf.clone(), None);
    let b = s.udp(conf.clone(), None);
    let c = s.udp(conf, None);
    for p in [a, b, c] {
        s.e.set_callbacks(p, true);
    }
    s.ev();
    // cap - 1 bytes held: reading goes on.
    s.datagram(MS, a, &[1; 99]);
    assert_eq!(s.ev(), [message(a, &[1; 99], sa(PEER))]);
    // One more byte: held == cap.
    s.datagram(2 * MS, a, &[2]);
    assert_eq!(
        s.ev(),
        [message(a, &[2], sa(PEER)), Event::Pause { pipe: a }]
    );
    s.e.handle_callback_done(a, 1);
    assert_eq!(s.ev(), [Event::Resume { pipe: a }]);
    s.e.handle_callback_done(a, 99);
    assert_eq!(s.ev(), NONE);
    // A single message of exactly the cap, and one over it (still delivered).
    s.datagram(3 * MS, b, &[3; 100]);
    s.datagram(3 * MS, c, &[4; 101]);
    assert_eq!(
        s.ev(),
        [
            message(b, &[3; 100], sa(PEER)),
            Event::Pause { pipe: b },
            message(c, &[4; 101], sa(PEER)),
            Event::Pause { pipe: c },
        ]
    );
    s.e.handle_callback_done(c, 101);
    assert_eq!(s.ev(), [Event::Resume { pipe: c }]);
    assert_eq!(
        [s.stats(a).paused, s.stats(b).paused, s.stats(c).paused],
        [1, 1, 1]
    );
}

// ---- 6. server budget ---------------------------------------------------------------

fn budget(bytes: usize) -> Conf {
    Conf {
        max_server_bytes: bytes,
        ..Conf::default()
    }
}

#[test]
fn server_budget_pauses_the_connection_holding_bytes_not_an_empty_one() {
    let mut s = Sim::new();
    let l = s.listener(budget(10_000));
    let a = s.accept(l, Duration::ZERO, 1);
    let b = s.accept(l, Duration::ZERO, 2);
    // Set after the accepts: the listener's flag covers its live connections.
    s.e.set_callbacks(l, true);
    s.ev();
    s.stream(MS, a, &[1; 5000]);
    s.stream(2 * MS, a, &[2; 4999]);
    assert_eq!(
        s.ev(),
        [
            message(a, &[1; 5000], conn_peer(1)),
            message(a, &[2; 4999], conn_peer(1))
        ]
    );
    // The byte that makes 10,000.
    s.stream(3 * MS, a, &[3]);
    assert_eq!(
        s.ev(),
        [message(a, &[3], conn_peer(1)), Event::Pause { pipe: a }]
    );
    assert_eq!((s.stats(a).paused, s.stats(b).paused), (1, 0));

    // b holds nothing: it was not paused, and its input is delivered. Holding bytes while
    // the server is over budget, it then stops reading until its callback finishes.
    s.stream(4 * MS, b, &[9; 50]);
    assert_eq!(
        s.ev(),
        [message(b, &[9; 50], conn_peer(2)), Event::Pause { pipe: b }]
    );
    s.e.handle_callback_done(b, 50);
    assert_eq!(s.ev(), [Event::Resume { pipe: b }]);

    // a's first callback finishes: 5,000 held, under budget.
    s.e.handle_callback_done(a, 5000);
    assert_eq!(s.ev(), [Event::Resume { pipe: a }]);
    s.e.handle_callback_done(a, 4999);
    s.e.handle_callback_done(a, 1);
    assert_eq!(s.ev(), NONE);
    // All released: a can take 9,999 bytes again without pausing.
    s.stream(5 * MS, a, &[5; 9999]);
    assert_eq!(s.ev(), [message(a, &[5; 9999], conn_peer(1))]);
}

#[test]
fn subscription_queues_and_outbound_bytes_count_against_the_server_budget() {
    let mut s = Sim::new();
    let l = s.listener(budget(10_000));
    let a = s.accept(l, Duration::ZERO, 1);
    let b = s.accept(l, Duration::ZERO, 2);
    assert_eq!(s.e.subscribe(a, Filter::all()), Ok(SubId::ALL));
    s.ev();
    s.stream(MS, a, &[1; 6000]);
    assert_eq!(s.ev(), [Event::Readable { pipe: a }]);
    s.stream(2 * MS, a, &[2; 4000]);
    assert_eq!(
        s.ev(),
        [Event::Readable { pipe: a }, Event::Pause { pipe: a }]
    );
    assert_eq!(s.e.queue_len(a, SubId::ALL), Some(2));
    // recv frees the 6,000 bytes: 4,000 held, under budget.
    let m = s.e.recv(a, SubId::ALL).unwrap().unwrap();
    assert_eq!(m.data.len(), 6000);
    assert_eq!(s.ev(), [Event::Resume { pipe: a }]);

    // Outbound bytes: b queues 6,000 (with a's 4,000: 10,000). Reaching the budget pauses
    // every connection holding bytes, a (its queued 4,000) as well as b.
    s.send(3 * MS, b, &[3; 6000]).unwrap();
    assert_eq!(s.ev(), [Event::Pause { pipe: a }, Event::Pause { pipe: b }]);
    assert_eq!(s.dirty(), [b]);
    s.advance(4 * MS, b, 1000);
    assert_eq!(
        s.ev(),
        [Event::Resume { pipe: a }, Event::Resume { pipe: b }]
    );
    assert_eq!(s.e.out_bytes(b), 5000);
    assert_eq!((s.stats(a).paused, s.stats(b).paused), (2, 1));
}

#[test]
fn reaching_the_server_budget_pauses_every_connection_holding_bytes() {
    let mut s = Sim::new();
    let l = s.listener(budget(10_000));
    let a = s.accept(l, Duration::ZERO, 1);
    let b = s.accept(l, Duration::ZERO, 2);
    for c in [a, b] {
        assert_eq!(s.e.subscribe(c, Filter::all()), Ok(SubId::ALL));
    }
    s.ev();
    s.stream(MS, a, &[1; 6000]);
    assert_eq!(s.ev(), [Event::Readable { pipe: a }]);
    s.stream(2 * MS, b, &[2; 4000]);
    let mut paused: Vec<PipeId> = s
        .ev()
        .into_iter()
        .filter_map(|e| match e {
            Event::Pause { pipe } => Some(pipe),
            _ => None,
        })
        .collect();
    paused.sort();
    assert_eq!(paused, [a, b], "a holds 6,000 of the 10,000 bytes");
}

#[test]
fn a_forgotten_connection_frees_the_budget_and_resumes_the_others() {
    let mut s = Sim::new();
    let l = s.listener(budget(10_000));
    let a = s.accept(l, Duration::ZERO, 1);
    let b = s.accept(l, Duration::ZERO, 2);
    assert_eq!(s.e.pop_accepted(l), Ok(Some(a)));
    assert_eq!(s.e.pop_accepted(l), Ok(Some(b)));
    s.e.set_callbacks(a, true);
    assert_eq!(s.e.subscribe(b, Filter::all()), Ok(SubId::ALL));
    s.ev();
    s.stream(MS, a, &[1; 9990]);
    assert_eq!(s.ev(), [message(a, &[1; 9990], conn_peer(1))]);
    s.stream(2 * MS, b, &[2; 10]);
    assert_eq!(
        s.ev(),
        [
            Event::Readable { pipe: b },
            Event::Pause { pipe: a },
            Event::Pause { pipe: b }
        ],
        "reaching the budget pauses both: each holds bytes"
    );
    // a's peer resets: its socket is released, but its callback still holds 9,990 bytes,
    // so the engine keeps it (and its bytes in the budget) until the callback finishes.
    let now = s.at(3 * MS);
    s.e.handle_peer_closed(now, a, true);
    assert_eq!(s.ev(), [end(a, EndReason::Reset), released(a, 0)]);
    assert!(s.e.state(a).is_some());
    // The callback finishes: the bytes leave the budget (10 of 10,000 used), both resume,
    // and a is forgotten.
    s.e.handle_callback_done(a, 9990);
    assert_eq!(
        s.ev(),
        [Event::Resume { pipe: a }, Event::Resume { pipe: b }]
    );
    assert_eq!(s.e.state(a), None);
}

// ---- 7. reliable outcomes -----------------------------------------------------------

fn rconf(outstanding: usize) -> Conf {
    Conf {
        reliable_udp: true,
        retry_interval: 100 * MS,
        max_reliable_outstanding: outstanding,
        ..Conf::default()
    }
}

fn ack(s: &mut Sim, d: Duration, pipe: PipeId, id: MessageId) {
    let frame = rudp::encode(id.0, rudp::FLAG_ACK, &[]);
    s.datagram(d, pipe, &frame);
}

fn send_reliable(s: &mut Sim, d: Duration, pipe: PipeId, data: &[u8]) -> MessageId {
    let now = s.at(d);
    let id = s.e.send_reliable(now, pipe, data, None).unwrap();
    // Written at once.
    while s.e.poll_transmit().is_some() {}
    id
}

fn reliable(pipe: PipeId, id: MessageId, outcome: Outcome) -> Event {
    Event::Reliable { pipe, id, outcome }
}

#[test]
fn an_acked_outcome_is_taken_once() {
    let mut s = Sim::new();
    let u = s.udp(rconf(1000), Some(PEER));
    s.ev();
    let id = send_reliable(&mut s, Duration::ZERO, u, b"x");
    assert_eq!(s.e.take_outcome(u, id), None, "no outcome yet");
    ack(&mut s, 10 * MS, u, id);
    assert_eq!(s.ev(), [reliable(u, id, Outcome::Acked)]);
    assert_eq!(s.e.take_outcome(u, id), Some(Outcome::Acked));
    assert_eq!(s.e.take_outcome(u, id), None, "taken once");
    assert_eq!(s.stats(u).acked, 1);
    // Its retry timer is gone.
    assert_eq!(s.e.poll_timeout(), None);
}

#[test]
fn untaken_outcomes_hold_slots_forgotten_ones_do_not() {
    let mut s = Sim::new();
    let u = s.udp(rconf(2), Some(PEER));
    s.ev();
    let a = send_reliable(&mut s, Duration::ZERO, u, b"a");
    let b = send_reliable(&mut s, Duration::ZERO, u, b"b");
    let now = s.at(MS);
    assert_eq!(
        s.e.send_reliable(now, u, b"c", None),
        Err(SendError::TooManyOutstanding(2))
    );
    // Forgetting a send still outstanding does not free its slot before its outcome.
    s.e.forget_outcome(u, a);
    assert_eq!(
        s.e.send_reliable(now, u, b"c", None),
        Err(SendError::TooManyOutstanding(2))
    );
    ack(&mut s, 10 * MS, u, a);
    ack(&mut s, 10 * MS, u, b);
    // The event still comes for a forgotten send; only b's outcome is kept.
    assert_eq!(
        s.ev(),
        [
            reliable(u, a, Outcome::Acked),
            reliable(u, b, Outcome::Acked)
        ]
    );
    assert_eq!(s.e.take_outcome(u, a), None, "forgotten: not kept");
    // b's untaken outcome holds one slot: one more send fits, a second does not.
    let c = send_reliable(&mut s, 20 * MS, u, b"c");
    let now = s.at(20 * MS);
    assert_eq!(
        s.e.send_reliable(now, u, b"d", None),
        Err(SendError::TooManyOutstanding(2))
    );
    assert_eq!(s.e.take_outcome(u, b), Some(Outcome::Acked));
    let d = send_reliable(&mut s, 20 * MS, u, b"d");
    // Forgetting a kept outcome frees its slot too.
    ack(&mut s, 30 * MS, u, c);
    assert_eq!(s.ev(), [reliable(u, c, Outcome::Acked)]);
    s.e.forget_outcome(u, c);
    assert_eq!(s.e.take_outcome(u, c), None);
    let _e = send_reliable(&mut s, 30 * MS, u, b"e");
    assert_ne!(c, d);
    assert_eq!(s.stats(u).acked, 3);
}

#[test]
fn unconfirmed_after_the_last_try_at_exactly_its_deadline_and_kept() {
    let mut s = Sim::new();
    let u = s.udp(rconf(1000), Some(PEER)); // 3 tries, 100 ms apart
    s.ev();
    let id = send_reliable(&mut s, Duration::ZERO, u, b"x");
    assert_eq!(s.e.poll_timeout(), Some(s.at(100 * MS)));
    assert_eq!(s.fire(100 * MS), NONE);
    assert!(s.e.poll_transmit().is_some(), "retransmit 1");
    assert_eq!(s.fire(200 * MS), NONE);
    assert!(s.e.poll_transmit().is_some(), "retransmit 2");
    assert_eq!(s.e.poll_timeout(), Some(s.at(300 * MS)));
    assert_eq!(s.fire(300 * MS - MS), NONE);
    assert_eq!(s.fire(300 * MS), [reliable(u, id, Outcome::Unconfirmed)]);
    let st = s.stats(u);
    assert_eq!((st.retransmits, st.unconfirmed, st.sent), (2, 1, 1));
    assert_eq!(s.e.take_outcome(u, id), Some(Outcome::Unconfirmed));
    assert_eq!(s.e.take_outcome(u, id), None);
}

#[test]
fn an_ended_pipe_keeps_its_unconfirmed_outcomes_until_taken() {
    let mut s = Sim::new();
    let u = s.udp(rconf(1000), Some(PEER));
    s.ev();
    let a = send_reliable(&mut s, Duration::ZERO, u, b"a");
    let b = send_reliable(&mut s, Duration::ZERO, u, b"b");
    let c = send_reliable(&mut s, Duration::ZERO, u, b"c");
    s.e.forget_outcome(u, c);
    let now = s.at(50 * MS);
    s.e.close(now, u);
    let mut ids = [a, b, c];
    ids.sort();
    assert_eq!(
        s.ev(),
        [
            reliable(u, ids[0], Outcome::Unconfirmed),
            reliable(u, ids[1], Outcome::Unconfirmed),
            reliable(u, ids[2], Outcome::Unconfirmed),
            end(u, EndReason::Local),
            released(u, 0),
        ]
    );
    assert_eq!(s.stats(u).unconfirmed, 3);
    assert_eq!(s.e.poll_timeout(), None, "retry timers are gone");
    // Released (nothing to write), but not forgotten: two outcomes wait to be taken.
    assert_eq!(s.e.state(u), Some(State::Closed));
    assert_eq!(s.fire(Duration::from_secs(3600)), NONE);
    assert_eq!(s.e.take_outcome(u, c), None, "forgotten before the end");
    assert_eq!(s.e.take_outcome(u, a), Some(Outcome::Unconfirmed));
    assert_eq!(s.e.state(u), Some(State::Closed), "b is still untaken");
    assert_eq!(s.e.take_outcome(u, b), Some(Outcome::Unconfirmed));
    assert_eq!(s.e.state(u), None);
    assert_eq!(s.e.pipe_count(), 0);
}

#[test]
fn forgetting_the_last_outcome_of_an_ended_pipe_forgets_the_pipe() {
    let mut s = Sim::new();
    let u = s.udp(rconf(1000), Some(PEER));
    s.ev();
    let a = send_reliable(&mut s, Duration::ZERO, u, b"a");
    let now = s.at(MS);
    s.e.handle_error(now, u, "gone".into());
    assert_eq!(
        s.ev(),
        [
            reliable(u, a, Outcome::Unconfirmed),
            end(u, EndReason::Error("gone".into())),
            released(u, 0),
        ]
    );
    assert_eq!(s.e.state(u), Some(State::PeerClosed));
    s.e.forget_outcome(u, a);
    assert_eq!(s.e.state(u), None);
}

// ---- 8. many stalled connections ----------------------------------------------------

/// Slowloris in virtual time. Most of this test's run time (about 1.5 s in debug) is the
/// engine forgetting connections: each removal scans the listener's `children` list, so
/// forgetting N connections costs O(N²).
#[test]
fn ten_thousand_stalled_connections_each_end_once_at_their_first_message_deadline() {
    const N: usize = 10_000;
    let mut s = Sim::new();
    let mut rng = Rng::new(0x5EED_0DD5);
    let conf = Conf {
        framing: Framing::LengthPrefixed { max: 1 << 16 },
        ..Conf::server()
    };
    let l = s.listener(conf);
    // Accepted 100 ns apart: all within the first millisecond.
    let mut accepted = Vec::with_capacity(N);
    for i in 0..N {
        let at = Duration::from_nanos(100 * i as u64);
        let now = s.at(at);
        let peer = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40_000));
        let c = s.e.handle_accepted(now, l, sa(LISTEN), peer).unwrap();
        accepted.push((c, s.at(at)));
    }
    let evs = s.ev();
    assert_eq!(evs.len(), 1 + 2 * N);
    assert_eq!(s.stats(l).accept_dropped, (N - 1024) as u64);

    // Each sends 3 of its 4 header bytes, in random order and random pieces, between +1 ms
    // and +9.0 s (its deadline is 10 s after its accept).
    let mut order: Vec<usize> = (0..N).collect();
    for i in (1..N).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    for (k, &i) in order.iter().enumerate() {
        let at = MS + Duration::from_micros(900 * k as u64);
        let header = [0, 0, rng.below(256) as u8];
        let cuts: &[usize] = match rng.below(4) {
            0 => &[3],
            1 => &[1, 3],
            2 => &[2, 3],
            _ => &[1, 2, 3],
        };
        let mut from = 0;
        for &to in cuts {
            s.stream(at, accepted[i].0, &header[from..to]);
            from = to;
        }
    }
    assert_eq!(s.ev(), NONE, "partial frames: no event");
    assert!(accepted.iter().all(|&(c, _)| s
        .e
        .stats(c)
        .is_some_and(|st| st.bytes_in == 3 && st.received == 0)));
    assert_eq!(s.e.connections(l).len(), N);
    assert!(s.e.within_caps());

    // A driver following poll_timeout up to +10.001 s.
    let limit = s.at(10 * SEC + MS);
    let mut ended: HashMap<PipeId, Instant> = HashMap::with_capacity(N);
    let mut released_ = HashSet::with_capacity(N);
    let mut steps = 0;
    while let Some(t) = s.e.poll_timeout() {
        if t > limit {
            break;
        }
        steps += 1;
        assert!(steps <= 2 * N, "poll_timeout does not advance");
        s.e.handle_timeout(t);
        for ev in s.ev() {
            match ev {
                Event::End {
                    pipe,
                    reason: EndReason::FirstMessageTimeout,
                } => assert!(ended.insert(pipe, t).is_none(), "{pipe} ended twice"),
                Event::Released { pipe, unsent: 0 } => {
                    assert!(ended.contains_key(&pipe), "{pipe} released before its end");
                    assert!(released_.insert(pipe), "{pipe} released twice");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let now = limit;
    s.e.handle_timeout(now);
    assert_eq!(s.ev(), NONE);
    assert_eq!(ended.len(), N);
    assert_eq!(released_.len(), N);
    for &(c, at) in &accepted {
        assert_eq!(ended[&c], at + 10 * SEC, "{c}: ended at its exact deadline");
    }
    assert!(s.e.connections(l).is_empty());
    // The connections still in the accept queue are forgotten as they are handed out.
    let mut popped = 0;
    while let Ok(Some(_)) = s.e.pop_accepted(l) {
        popped += 1;
    }
    assert_eq!(popped, 1024);
    assert_eq!(s.e.pipe_count(), 1, "only the listener");
    assert_eq!(s.e.state(l), Some(State::Open));
    assert_eq!(s.e.poll_timeout(), None);
    assert!(s.e.within_caps());
}

// ---- recv deadlines: the engine's timer wakes waiting readers -------------------------------

#[test]
fn a_recv_deadline_fires_recv_due_at_exactly_its_instant() {
    for tcp in [false, true] {
        let mut s = Sim::new();
        let p = if tcp {
            s.tcp(Conf::default())
        } else {
            s.udp(Conf::default(), Some(PEER))
        };
        assert_eq!(s.ev(), [Event::Up { pipe: p }]);
        assert_eq!(
            s.e.poll_timeout(),
            None,
            "P2PD defaults: no deadline of its own"
        );
        s.e.recv_wait(p, s.at(2 * SEC));
        assert_eq!(s.e.poll_timeout(), Some(s.at(2 * SEC)));
        assert_eq!(s.fire(2 * SEC - MS), NONE, "tcp={tcp}");
        assert_eq!(s.fire(2 * SEC), [Event::RecvDue { pipe: p }], "tcp={tcp}");
        // Fired once: nothing armed until a reader waits again.
        assert_eq!(s.e.poll_timeout(), None, "tcp={tcp}");
        assert_eq!(
            s.e.state(p),
            Some(State::Open),
            "a recv deadline ends nothing"
        );
    }
}

#[test]
fn recv_deadlines_keep_the_earliest_and_later_waits_move_no_timer() {
    let mut s = Sim::new();
    let p = s.udp(Conf::default(), Some(PEER));
    s.ev();
    s.e.recv_wait(p, s.at(2 * SEC));
    // A reader with a later deadline (the next `recv` after a message) leaves the timer.
    s.e.recv_wait(p, s.at(3 * SEC));
    assert_eq!(s.e.poll_timeout(), Some(s.at(2 * SEC)));
    // An earlier one moves it earlier.
    s.e.recv_wait(p, s.at(SEC));
    assert_eq!(s.e.poll_timeout(), Some(s.at(SEC)));
    assert_eq!(s.fire(SEC), [Event::RecvDue { pipe: p }]);
    // The woken reader of +3 s waits again: armed at its own deadline.
    s.e.recv_wait(p, s.at(3 * SEC));
    assert_eq!(s.e.poll_timeout(), Some(s.at(3 * SEC)));
    assert_eq!(s.fire(3 * SEC), [Event::RecvDue { pipe: p }]);
}

#[test]
fn a_recv_deadline_and_the_idle_deadline_share_the_pipe_entry() {
    let mut s = Sim::new();
    let conf = Conf {
        idle_timeout: Some(5 * SEC),
        ..Conf::default()
    };
    let p = s.udp(conf, Some(PEER));
    s.ev();
    s.e.recv_wait(p, s.at(2 * SEC));
    assert_eq!(s.e.poll_timeout(), Some(s.at(2 * SEC)));
    assert_eq!(s.fire(2 * SEC), [Event::RecvDue { pipe: p }]);
    // Re-armed at the idle deadline, which still ends the pipe on time.
    assert_eq!(s.e.poll_timeout(), Some(s.at(5 * SEC)));
    assert_eq!(
        s.fire(5 * SEC),
        [end(p, EndReason::IdleTimeout), released(p, 0)]
    );
}
