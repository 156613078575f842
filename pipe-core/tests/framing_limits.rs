//! Framing limits at their exact boundaries, through the engine's public API: a frame of
//! exactly `max` is a message, `max + 1` ends the connection with `FrameTooLarge`, whichever
//! way the bytes are cut into reads (including a delimiter split across two reads), and a read
//! that completes a buffered frame and carries more whole frames delivers all of them.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pipe_core::{Conf, EndReason, Engine, Event, Framing, PipeId, SubId};

/// Tests may read the clock; the core may not.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feed `reads` to a fresh TCP client pipe with `framing`; return the messages and the end
/// reason, if the pipe ended.
fn feed(framing: &Framing, reads: &[&[u8]]) -> (Vec<Bytes>, Option<EndReason>) {
    let now = t0();
    let mut e = Engine::new(1);
    let conf = Conf {
        framing: framing.clone(),
        ..Conf::default()
    };
    let p: PipeId = e
        .open_tcp(now, sa("127.0.0.1:1000"), sa("127.0.0.1:2000"), conf, false)
        .unwrap();
    for r in reads {
        e.handle_stream(now, p, r);
        assert!(e.within_caps());
    }
    let mut end = None;
    while let Some(ev) = e.poll_event() {
        if let Event::End { reason, .. } = ev {
            end = Some(reason);
        }
    }
    let msgs = std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data));
    (msgs.collect(), end)
}

fn two_reads(wire: &[u8]) -> impl Iterator<Item = [&[u8]; 2]> {
    (0..=wire.len()).map(move |i| [&wire[..i], &wire[i..]])
}

#[test]
fn length_prefixed_max_accepted_max_plus_one_refused() {
    let max = 300;
    let f = Framing::LengthPrefixed { max };
    let frame = |n: usize| [&(n as u32).to_be_bytes()[..], &vec![b'x'; n]].concat();
    let ok = frame(max);
    for reads in two_reads(&ok) {
        let (msgs, end) = feed(&f, &reads);
        assert_eq!(msgs, vec![Bytes::from(vec![b'x'; max])]);
        assert_eq!(end, None);
    }
    let long = frame(max + 1);
    for reads in two_reads(&long) {
        let (msgs, end) = feed(&f, &reads);
        assert!(msgs.is_empty());
        assert_eq!(end, Some(EndReason::FrameTooLarge { len: max + 1, max }));
    }
}

#[test]
fn delimited_max_accepted_max_plus_one_refused() {
    let max = 40;
    let f = Framing::Delimited {
        delim: Bytes::from_static(b"\r\n"),
        max,
    };
    let ok = [&vec![b'x'; max][..], b"\r\n"].concat();
    for reads in two_reads(&ok) {
        let (msgs, end) = feed(&f, &reads);
        assert_eq!(msgs, vec![Bytes::from(vec![b'x'; max])]);
        assert_eq!(end, None);
    }
    let long = [&vec![b'x'; max + 1][..], b"\r\n"].concat();
    for reads in two_reads(&long) {
        let (msgs, end) = feed(&f, &reads);
        assert!(msgs.is_empty());
        assert!(
            matches!(end, Some(EndReason::FrameTooLarge { max: m, .. }) if m == max),
            "reads of {} + {}: {end:?}",
            reads[0].len(),
            reads[1].len()
        );
    }
}

#[test]
fn delimited_read_completing_a_frame_carries_the_next() {
    let f = Framing::Delimited {
        delim: Bytes::from_static(b"\r\n"),
        max: 64,
    };
    let (msgs, end) = feed(&f, &[b"a", b"\r\nb\r\n"]);
    assert_eq!(
        msgs,
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
    assert_eq!(end, None);
    let (msgs, _) = feed(&f, &[b"a\r", b"\nb\r\nc\r\n"]);
    assert_eq!(
        msgs,
        vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c")
        ]
    );
}
