//! Subscription delivery after callbacks (`engine/subs.rs`): a message reaches the
//! subscriptions of its pipe only once the driver reported its callbacks done, in order; a
//! handler subscription gets `Event::SubMessage` instead of a queued message.
#![allow(clippy::disallowed_methods)] // any start instant: time is still an argument

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use pipe_core::{Conf, Engine, Event, Filter, Message, PipeId, RecvError, SubId};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn evs(e: &mut Engine) -> Vec<Event> {
    while e.poll_transmit().is_some() {}
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn messages(ev: &[Event]) -> Vec<Bytes> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Message { msg, .. } => Some(msg.data.clone()),
            _ => None,
        })
        .collect()
}

fn sub_messages(ev: &[Event]) -> Vec<(SubId, Bytes)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::SubMessage { sub, msg, .. } => Some((*sub, msg.data.clone())),
            _ => None,
        })
        .collect()
}

fn readable(ev: &[Event]) -> bool {
    ev.iter().any(|e| matches!(e, Event::Readable { .. }))
}

fn recv(e: &mut Engine, p: PipeId, s: SubId) -> Option<Message> {
    e.recv(p, s).unwrap()
}

/// A UDP server pipe with message callbacks and the all-messages subscription.
fn server(e: &mut Engine, now: Instant, callbacks: bool) -> PipeId {
    let p = e
        .open_udp(now, sa("127.0.0.1:5000"), None, Conf::default(), callbacks)
        .unwrap();
    assert_eq!(e.subscribe(p, Filter::all()), Ok(SubId::ALL));
    evs(e);
    p
}

#[test]
fn subscriptions_get_a_message_after_its_callbacks() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let p = server(&mut e, now, true);
    let peer = sa("127.0.0.1:6000");
    e.handle_datagram(now, p, peer, b"one");
    e.handle_datagram(now, p, peer, b"two");
    let ev = evs(&mut e);
    assert_eq!(messages(&ev), vec![&b"one"[..], &b"two"[..]]);
    assert!(!readable(&ev), "nothing readable before the callbacks ran");
    assert_eq!(recv(&mut e, p, SubId::ALL), None);
    e.handle_callback_done(p, 3);
    assert!(readable(&evs(&mut e)));
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"one");
    assert_eq!(
        recv(&mut e, p, SubId::ALL),
        None,
        "two waits for its callback"
    );
    e.handle_callback_done(p, 3);
    assert!(readable(&evs(&mut e)));
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"two");
    assert_eq!(e.stats(p).unwrap().unclaimed, 0);
}

#[test]
fn without_callbacks_nothing_waits() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let p = server(&mut e, now, false);
    e.handle_datagram(now, p, sa("127.0.0.1:6000"), b"x");
    let ev = evs(&mut e);
    assert!(messages(&ev).is_empty());
    assert!(readable(&ev));
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"x");
}

#[test]
fn order_is_kept_when_callbacks_are_removed_meanwhile() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let p = server(&mut e, now, true);
    let peer = sa("127.0.0.1:6000");
    e.handle_datagram(now, p, peer, b"first");
    evs(&mut e);
    e.set_callbacks(p, false);
    e.handle_datagram(now, p, peer, b"second");
    evs(&mut e);
    // "second" has no callback but stays behind "first".
    assert_eq!(recv(&mut e, p, SubId::ALL), None);
    e.handle_callback_done(p, 5);
    evs(&mut e);
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"first");
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"second");
}

#[test]
fn a_closed_pipe_is_not_drained_while_messages_wait_for_callbacks() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let p = server(&mut e, now, true);
    e.handle_datagram(now, p, sa("127.0.0.1:6000"), b"late");
    evs(&mut e);
    e.close(now, p);
    evs(&mut e);
    assert_eq!(
        e.recv(p, SubId::ALL),
        Ok(None),
        "not drained: one is coming"
    );
    e.handle_callback_done(p, 4);
    evs(&mut e);
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"late");
    assert_eq!(e.recv(p, SubId::ALL), Err(RecvError::Closed));
}

#[test]
fn handler_subscriptions_are_emitted_not_queued() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let p = server(&mut e, now, true);
    let h = e
        .subscribe_handler(p, Filter::pattern("^hi").unwrap())
        .unwrap();
    assert!(e.is_handler(p, h));
    assert!(!e.is_handler(p, SubId::ALL));
    let peer = sa("127.0.0.1:6000");
    e.handle_datagram(now, p, peer, b"hi there");
    let ev = evs(&mut e);
    assert_eq!(messages(&ev).len(), 1);
    assert!(
        sub_messages(&ev).is_empty(),
        "the handler runs after the callbacks"
    );
    e.handle_callback_done(p, 8);
    let ev = evs(&mut e);
    assert_eq!(
        sub_messages(&ev),
        vec![(h, Bytes::from_static(b"hi there"))]
    );
    // The all-messages subscription still queues it; the handler's does not.
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"hi there");
    assert_eq!(recv(&mut e, p, h), None);
    // The handler's message is held (counted against the caps) until it is done: a closed
    // pipe stays until then.
    e.close(now, p);
    evs(&mut e);
    assert!(e.state(p).is_some());
    e.handle_handler_done(p, 8);
    evs(&mut e);
    assert_eq!(e.recv(p, SubId::ALL), Err(RecvError::Closed));
}

#[test]
fn an_existing_subscription_becomes_a_handler_and_keeps_what_it_queued() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let p = server(&mut e, now, false);
    let peer = sa("127.0.0.1:6000");
    e.handle_datagram(now, p, peer, b"queued");
    evs(&mut e);
    assert_eq!(e.subscribe_handler(p, Filter::all()), Ok(SubId::ALL));
    e.handle_datagram(now, p, peer, b"handled");
    let ev = evs(&mut e);
    assert_eq!(
        sub_messages(&ev),
        vec![(SubId::ALL, Bytes::from_static(b"handled"))]
    );
    assert!(!readable(&ev));
    assert_eq!(&recv(&mut e, p, SubId::ALL).unwrap().data[..], b"queued");
    assert_eq!(recv(&mut e, p, SubId::ALL), None);
    assert_eq!(e.stats(p).unwrap().unclaimed, 0);
    e.unsubscribe(p, SubId::ALL).unwrap();
    assert!(!e.is_handler(p, SubId::ALL));
}

#[test]
fn the_held_list_is_capped_for_a_driver_that_ignores_pause() {
    let now = Instant::now();
    let mut e = Engine::new(1);
    let conf = Conf {
        max_qsize: 0,
        max_queue_bytes: 0,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("127.0.0.1:5000"), None, conf, true)
        .unwrap();
    e.subscribe(p, Filter::all()).unwrap();
    let peer = sa("127.0.0.1:6000");
    let n = pipe_core::MAX_EVENTS + 3;
    for i in 0..n {
        e.handle_datagram(now, p, peer, format!("{i}").as_bytes());
        evs(&mut e);
    }
    // The messages past the cap did not wait.
    let first = recv(&mut e, p, SubId::ALL).expect("past the cap: queued at once");
    assert_eq!(first.data, format!("{}", pipe_core::MAX_EVENTS));
    let mut got = 1;
    while recv(&mut e, p, SubId::ALL).is_some() {
        got += 1;
    }
    assert_eq!(got, 3);
    // Every callback report still finds its place: the held ones come out, in order.
    for _ in 0..n {
        e.handle_callback_done(p, 1);
    }
    evs(&mut e);
    let mut next = 0;
    while let Some(m) = recv(&mut e, p, SubId::ALL) {
        assert_eq!(m.data, format!("{next}"));
        next += 1;
    }
    assert_eq!(next, pipe_core::MAX_EVENTS);
}
