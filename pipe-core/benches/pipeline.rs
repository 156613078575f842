//! One 64-byte message through the inbound pipeline and out: `handle_datagram`, the events it
//! raises, and `recv` on `SubId::ALL`. Targets: ≥ 5 M msg/s (≤ 200 ns) with only SUB_ALL,
//! ≥ 1 M msg/s with dedup, four more subscriptions and a link.
//!
//! Measured 2026-12-01 06:47 UTC on the 2-core VM (load 2.3–2.5), six runs of this file
//! alternating with the same bench built at dda93c6: SUB_ALL only 121–134 ns fastest,
//! 122–136 ns median (dda93c6: 123–137, 124–140); dedup + 4 subscriptions + a link 462–473 ns
//! fastest, 481–491 ns median (dda93c6: 575–624, 597–649). Instructions per message
//! (callgrind, `examples/pipeline_count.rs`, the same loops): 1,179 and 4,049 (dda93c6: 1,315
//! and 5,616).
//!
//! Run: `cargo bench -p pipe-core --bench pipeline`.

use std::net::SocketAddr;
use std::time::Instant;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use pipe_core::{Conf, Engine, Filter, LinkTarget, SubId};

fn main() {
    divan::main();
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[allow(clippy::disallowed_methods)] // the bench, not the core, reads the clock once
fn start() -> Instant {
    Instant::now()
}

/// Only the default SUB_ALL subscription: the cheapest path.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn sub_all_only(bencher: Bencher<'_, '_>) {
    let now = start();
    let from = sa("10.0.0.2:2000");
    let mut e = Engine::new(1);
    let p = e
        .open_udp(now, sa("10.0.0.1:1000"), Some(from), Conf::default(), false)
        .unwrap();
    while e.poll_event().is_some() {}
    let payload = [0x5au8; 64];
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        e.handle_datagram(now, p, from, black_box(&payload));
        while let Some(ev) = e.poll_event() {
            black_box(ev);
        }
        black_box(e.recv(p, SubId::ALL).unwrap().unwrap())
    });
}

/// Dedup on (every payload distinct), SUB_ALL plus four subscriptions (two regexes, two
/// address filters; two match, two do not), and one local link whose transmit is drained.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn dedup_subs_and_link(bencher: Bencher<'_, '_>) {
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
    let mut n = 0u64;
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        n += 1;
        payload[..8].copy_from_slice(&n.to_be_bytes());
        e.handle_datagram(now, p, from, black_box(&payload));
        black_box(e.poll_transmit_for(out).unwrap());
        while let Some(ev) = e.poll_event() {
            black_box(ev);
        }
        for s in [SubId::ALL, ping, by_ip] {
            black_box(e.recv(p, s).unwrap().unwrap());
        }
    });
    let s = e.stats(p).unwrap();
    assert_eq!(s.duplicates, 0, "every payload is distinct");
    assert_eq!(s.forwarded, s.received);
}
