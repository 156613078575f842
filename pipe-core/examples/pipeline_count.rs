//! The two scenarios of `benches/pipeline.rs` as a plain loop, for instruction counts:
//! `valgrind --tool=callgrind target/release/examples/pipeline_count <sub_all|dedup|callbacks> N`.
//! Per message: (count at 2N − count at N) / N, or `handle_datagram`'s inclusive count over
//! its calls (`callgrind_annotate --inclusive=yes`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use pipe_core::{Conf, Engine, Filter, LinkTarget, SubId};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[allow(clippy::disallowed_methods)] // the example, not the core, reads the clock once
fn start() -> Instant {
    Instant::now()
}

fn sub_all_only(n: u64) {
    let now = start();
    let from = sa("10.0.0.2:2000");
    let mut e = Engine::new(1);
    let p = e
        .open_udp(now, sa("10.0.0.1:1000"), Some(from), Conf::default(), false)
        .unwrap();
    while e.poll_event().is_some() {}
    let payload = [0x5au8; 64];
    for _ in 0..n {
        e.handle_datagram(now, p, from, black_box(&payload));
        while let Some(ev) = e.poll_event() {
            black_box(ev);
        }
        black_box(e.recv(p, SubId::ALL).unwrap().unwrap());
    }
}

fn dedup_subs_and_link(n: u64) {
    let now = start();
    let from = sa("10.0.0.2:2000");
    let mut e = Engine::new(1);
    let conf = Conf {
        enable_msg_ids: true,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, sa("10.0.0.1:1000"), Some(from), conf, false)
        .unwrap();
    let out = e
        .open_udp(
            now,
            sa("10.0.0.1:1001"),
            Some(sa("10.0.0.9:9000")),
            Conf::default(),
            true,
        )
        .unwrap();
    let ping = e.subscribe(p, Filter::pattern("ping").unwrap()).unwrap();
    let by_ip = e.subscribe(p, Filter::from_addr(sa("10.0.0.2:0"))).unwrap();
    e.subscribe(p, Filter::pattern("pong$").unwrap().with_addr(from))
        .unwrap();
    e.subscribe(p, Filter::from_addr(sa("10.0.0.3:0"))).unwrap();
    e.link(p, LinkTarget::Local(out), None, None).unwrap();
    while e.poll_event().is_some() {}
    let mut payload = [b'.'; 64];
    payload[20..24].copy_from_slice(b"ping");
    for i in 1..=n {
        payload[..8].copy_from_slice(&i.to_be_bytes());
        e.handle_datagram(now, p, from, black_box(&payload));
        black_box(e.poll_transmit_for(out).unwrap());
        while let Some(ev) = e.poll_event() {
            black_box(ev);
        }
        for s in [SubId::ALL, ping, by_ip] {
            black_box(e.recv(p, s).unwrap().unwrap());
        }
    }
    let s = e.stats(p).unwrap();
    assert_eq!(s.duplicates, 0, "every payload is distinct");
    assert_eq!(s.forwarded, s.received);
}

/// Not in the divan bench: SUB_ALL behind message callbacks (each message waits in the held
/// list until `handle_callback_done`).
fn callbacks(n: u64) {
    let now = start();
    let from = sa("10.0.0.2:2000");
    let mut e = Engine::new(1);
    let p = e
        .open_udp(now, sa("10.0.0.1:1000"), Some(from), Conf::default(), false)
        .unwrap();
    e.set_callbacks(p, true);
    while e.poll_event().is_some() {}
    let payload = [0x5au8; 64];
    for _ in 0..n {
        e.handle_datagram(now, p, from, black_box(&payload));
        while let Some(ev) = e.poll_event() {
            black_box(ev);
        }
        e.handle_callback_done(p, payload.len());
        while let Some(ev) = e.poll_event() {
            black_box(ev);
        }
        black_box(e.recv(p, SubId::ALL).unwrap().unwrap());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    match which.as_str() {
        "sub_all" => sub_all_only(n),
        "dedup" => dedup_subs_and_link(n),
        "callbacks" => callbacks(n),
        _ => eprintln!("usage: pipeline_count <sub_all|dedup|callbacks> [N]"),
    }
}
