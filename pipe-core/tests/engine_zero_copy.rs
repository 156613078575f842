//! The driver fast paths: owned stream bytes pass through `Framing::Raw` without a copy, and
//! `can_send_direct` allows writing from the caller's buffer only when framing adds nothing
//! and nothing is queued ahead.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pipe_core::{Conf, Engine, Framing, SendError, SubId, DIRECT_MIN};

#[allow(clippy::disallowed_methods)] // one real Instant as the epoch; time does not matter here
fn now() -> Instant {
    Instant::now()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn tcp(framing: Framing) -> (Engine, pipe_core::PipeId) {
    let mut e = Engine::new(1);
    let conf = Conf {
        framing,
        ..Conf::default()
    };
    let p = e.open_tcp(now(), addr(1), addr(2), conf, false).unwrap();
    (e, p)
}

#[test]
fn raw_stream_bytes_become_the_message_without_a_copy() {
    let (mut e, p) = tcp(Framing::Raw);
    let chunk = Bytes::from(vec![7u8; 4096]);
    e.handle_stream_bytes(now(), p, chunk.clone());
    let msg = e.recv(p, SubId::ALL).unwrap().expect("queued");
    assert_eq!(msg.data.as_ptr(), chunk.as_ptr(), "same buffer, no copy");
    assert_eq!(msg.from, addr(2));
}

#[test]
fn framed_stream_bytes_are_still_deframed() {
    let (mut e, p) = tcp(Framing::LengthPrefixed { max: 16 });
    e.handle_stream_bytes(now(), p, Bytes::from_static(b"\0\0\0\x02hi\0\0\0\x01!"));
    assert_eq!(&e.recv(p, SubId::ALL).unwrap().unwrap().data[..], b"hi");
    assert_eq!(&e.recv(p, SubId::ALL).unwrap().unwrap().data[..], b"!");
}

#[test]
fn direct_sends_only_when_framing_adds_nothing_and_nothing_is_queued() {
    let now = now();
    let (mut e, p) = tcp(Framing::Raw);
    assert_eq!(e.can_send_direct(p, 5, None), Ok(Some(addr(2))));
    assert_eq!(e.can_send_direct(p, 5, Some(addr(2))), Ok(Some(addr(2))));
    assert_eq!(
        e.can_send_direct(p, 5, Some(addr(3))),
        Err(SendError::NotConnectedTo(addr(3)))
    );
    e.send(now, p, b"queued first", None).unwrap();
    assert_eq!(
        e.can_send_direct(p, 5, None),
        Ok(None),
        "a direct write would overtake the queue"
    );
    while e.poll_transmit().is_some() {}
    assert_eq!(e.can_send_direct(p, 5, None), Ok(Some(addr(2))));
    e.close(now, p);
    assert_eq!(e.can_send_direct(p, 5, None), Err(SendError::Closed));

    let (e, p) = tcp(Framing::LengthPrefixed { max: 16 });
    assert_eq!(
        e.can_send_direct(p, 5, None),
        Ok(None),
        "framing adds a header"
    );

    let mut e = Engine::new(1);
    let u = e
        .open_udp(now, addr(5), Some(addr(6)), Conf::default(), false)
        .unwrap();
    assert_eq!(
        e.can_send_direct(u, 5, None),
        Ok(Some(addr(6))),
        "plain datagrams go direct"
    );
    assert_eq!(
        e.can_send_direct(u, 70_000, None),
        Err(SendError::TooLarge {
            len: 70_000,
            max: 65_507
        })
    );
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assert!(matches!(
        e.can_send_direct(u, 5, Some(v6)),
        Err(SendError::FamilyMismatch { .. })
    ));
    let reliable = Conf {
        reliable_udp: true,
        ..Conf::default()
    };
    let r = e
        .open_udp(now, addr(7), Some(addr(6)), reliable, false)
        .unwrap();
    assert_eq!(
        e.can_send_direct(r, 5, None),
        Ok(None),
        "reliable mode frames every datagram"
    );
}

#[test]
fn a_large_raw_send_behind_queued_bytes_waits_for_them_instead_of_being_copied() {
    let now = now();
    let (mut e, p) = tcp(Framing::Raw);
    assert!(
        !e.send_waits_for_direct(p, DIRECT_MIN),
        "nothing queued: it goes direct at once"
    );
    e.send(now, p, b"queued first", None).unwrap();
    assert!(e.send_waits_for_direct(p, DIRECT_MIN));
    assert!(e.send_waits_for_direct(p, 1 << 20));
    assert!(
        !e.send_waits_for_direct(p, DIRECT_MIN - 1),
        "a small message is copied behind the queue"
    );
    while e.poll_transmit().is_some() {}
    assert!(!e.send_waits_for_direct(p, DIRECT_MIN), "drained");
    e.send(now, p, b"again", None).unwrap();
    e.close(now, p);
    assert!(
        !e.send_waits_for_direct(p, DIRECT_MIN),
        "closing: the send fails at once instead"
    );

    // Framing or TLS add bytes: never direct, so never waiting for it.
    let (mut e, p) = tcp(Framing::LengthPrefixed { max: 1 << 20 });
    e.send(now, p, b"queued first", None).unwrap();
    assert!(!e.send_waits_for_direct(p, DIRECT_MIN));

    let mut e = Engine::new(1);
    let u = e
        .open_udp(now, addr(5), Some(addr(6)), Conf::default(), false)
        .unwrap();
    e.send(now, u, b"queued first", None).unwrap();
    assert!(
        !e.send_waits_for_direct(u, DIRECT_MIN),
        "a datagram is queued whole"
    );
}
