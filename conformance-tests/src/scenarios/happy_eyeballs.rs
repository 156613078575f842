//! Happy Eyeballs (RFC 8305) for names with several addresses, through a resolver seam
//! ([`crate::TestDns`]): a dead address (a loopback listener whose full accept queue makes
//! connects hang, [`crate::hanging_port`]), a live one (a loopback echo server), refusing
//! ones ([`crate::refusing_port`]). Every address is on 127.0.0.1 or ::1.

use std::io::ErrorKind;

use pipe_io::pipe_core::{AttemptError, ConnectFailed};

use super::prelude::*;
use crate::{hanging_port, TestDns};

/// The Connection Attempt Delay these scenarios expect (the default).
const DELAY: Duration = Duration::from_millis(250);
/// A `con_timeout` far above what a good connect takes here.
const CON: Duration = Duration::from_secs(8);

fn conf() -> Conf {
    Conf {
        con_timeout: CON,
        ..Conf::default()
    }
}

fn attempts(f: &ConnectFailed<std::io::Error>) -> Vec<SocketAddr> {
    f.attempts.iter().map(|(a, _)| *a).collect()
}

/// A dead IPv6 address and a live IPv4 one: the IPv6 attempt starts first and hangs; the
/// IPv4 one starts 250 ms later and wins; the pipe is over IPv4 and works, and the IPv6
/// attempt is closed (no socket of this host is still connecting to it).
pub async fn dead_v6_live_v4<R: Runtime>(rt: R) {
    let server = echo_server(rt.clone(), Proto::Tcp, Family::V4).await;
    let live = server.local_addr().unwrap();
    let (_l, _fill, dead) = hanging_port(Family::V6);
    // The loser's check below can see an attempt in flight: a probe's is seen, then not.
    let probe = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    probe.set_nonblocking(true).unwrap();
    let _ = probe.connect(&dead.into());
    let seen = crate::syn_sent_to(dead);
    drop(probe);
    let watch = seen.is_some_and(|n| n >= 1) && crate::syn_sent_to(dead) == Some(0);
    if !watch {
        crate::loud_skip(
            "happy_eyeballs loser check",
            "/proc/net/tcp6 shows no connecting sockets here: the loser's close is not checked",
        );
    }
    let dns = TestDns::fixed(rt, vec![live, dead]);
    let (c, took) = timed(
        PipeBuilder::new(dns, Proto::Tcp)
            .dest(("dual.test", live.port()))
            .conf(conf())
            .open(),
    )
    .await;
    let c = c.expect("connects over IPv4");
    eprintln!("happy eyeballs: dead ::1, live 127.0.0.1: connected in {took:?}");
    assert_eq!(c.dest(), Some(live), "the IPv4 attempt won");
    assert!(c.local_addr().unwrap().is_ipv4());
    assert_at_least(
        took,
        DELAY,
        0.95,
        "the IPv4 attempt waits for the attempt delay",
    );
    assert!(
        took < CON / 4,
        "{took:?} is not well under con_timeout {CON:?}"
    );
    if watch {
        // The loser's socket is dropped before `open` returns; the kernel's table may show
        // it for a few milliseconds more (gVisor: ~10 ms). A leaked attempt would stay there
        // for its SYN retries (minutes): wait, bounded, for its entry to go.
        let t = Instant::now();
        while crate::syn_sent_to(dead) != Some(0) {
            assert!(
                t.elapsed() < WAIT,
                "the losing IPv6 attempt is still connecting {:?} after the IPv4 one won",
                t.elapsed()
            );
            sleep(Duration::from_millis(2)).await;
        }
        eprintln!(
            "happy eyeballs: the losing attempt's socket gone {:?} after open",
            t.elapsed()
        );
    }
    round_trip(&c, b"over ipv4").await;
    c.close().await;
    server.close().await;
}

/// The resolver lists a dead IPv4 address before a live IPv6 one: IPv6 goes first anyway
/// (RFC 8305 §4), connects at once, and the IPv4 address is never tried.
pub async fn live_v6_first_dead_v4<R: Runtime>(rt: R) {
    let server = echo_server(rt.clone(), Proto::Tcp, Family::V6).await;
    let live = server.local_addr().unwrap();
    let (_l, _fill, dead) = hanging_port(Family::V4);
    let dns = TestDns::fixed(rt, vec![dead, live]);
    let (c, took) = timed(
        PipeBuilder::new(dns, Proto::Tcp)
            .dest(("dual.test", live.port()))
            .conf(conf())
            .open(),
    )
    .await;
    let c = c.expect("connects over IPv6");
    eprintln!("happy eyeballs: live ::1 listed after dead 127.0.0.1: connected in {took:?}");
    assert_eq!(c.dest(), Some(live), "the IPv6 attempt won");
    assert!(
        took < DELAY * 2,
        "IPv6 first: no attempt delay to wait ({took:?})"
    );
    round_trip(&c, b"over ipv6").await;
    c.close().await;
    server.close().await;
}

/// A bind address pins the family (as a route does): of a live IPv6, a dead IPv4 and a live
/// IPv4 address, only the IPv4 ones are tried, in order, the second 250 ms after the first.
pub async fn bind_pins_the_family<R: Runtime>(rt: R) {
    let s6 = echo_server(rt.clone(), Proto::Tcp, Family::V6).await;
    let s4 = echo_server(rt.clone(), Proto::Tcp, Family::V4).await;
    let (_l, _fill, dead) = hanging_port(Family::V4);
    let live = s4.local_addr().unwrap();
    let dns = TestDns::fixed(rt, vec![s6.local_addr().unwrap(), dead, live]);
    let (c, took) = timed(
        PipeBuilder::new(dns, Proto::Tcp)
            .bind(lo0(Family::V4))
            .dest(("dual.test", live.port()))
            .conf(conf())
            .open(),
    )
    .await;
    let c = c.expect("connects over IPv4");
    assert_eq!(c.dest(), Some(live));
    assert_at_least(took, DELAY, 0.95, "the second IPv4 address waits its turn");
    round_trip(&c, b"pinned").await;
    c.close().await;
    s4.close().await;
    s6.close().await;
}

/// Every address refuses: each attempt fails at once, the next starts at once, and the
/// error lists every attempt, in order, each printed once.
pub async fn all_refused_lists_every_attempt<R: Runtime>(rt: R) {
    let (_a, a) = refusing_port(Family::V6);
    let (_b, b) = refusing_port(Family::V4);
    let (_c, c) = refusing_port(Family::V6);
    let dns = TestDns::fixed(rt, vec![b, a, c]);
    let (res, took) = timed(
        PipeBuilder::new(dns, Proto::Tcp)
            .dest(("dead.test", 9))
            .conf(conf())
            .open(),
    )
    .await;
    let err = res.expect_err("every address refuses");
    eprintln!("happy eyeballs: three refusing addresses failed in {took:?}: {err}");
    let OpenError::AllAttemptsFailed { host, failed } = &err else {
        panic!("expected AllAttemptsFailed, got {err:?}");
    };
    assert_eq!(host, "dead.test");
    assert_eq!(attempts(failed), vec![a, b, c], "IPv6 first, interleaved");
    for (addr, e) in &failed.attempts {
        assert!(
            matches!(e, AttemptError::Failed(io) if io.kind() == ErrorKind::ConnectionRefused),
            "{addr}: {e:?}"
        );
    }
    assert!(failed.untried.is_empty() && failed.timed_out.is_none());
    // A refusal starts the next attempt at once: far less than two attempt delays.
    assert!(took < DELAY * 2, "refusals took {took:?}");
    let text = err.to_string();
    for addr in [a, b, c] {
        assert_eq!(
            text.matches(&addr.to_string()).count(),
            1,
            "{addr} once in: {text}"
        );
    }
    assert!(
        std::error::Error::source(&err).is_none(),
        "no source: Display has it all"
    );
}

/// Every address hangs: `con_timeout` bounds the whole, and the error lists each attempt as
/// timed out (and the address the deadline left no time for).
pub async fn all_hanging_bounded_by_con_timeout<R: Runtime>(rt: R) {
    let (_l6, _f6, d6) = hanging_port(Family::V6);
    let (_l4, _f4, d4) = hanging_port(Family::V4);
    let (_l4b, _f4b, d4b) = hanging_port(Family::V4);
    let dns = TestDns::fixed(rt, vec![d4, d6, d4b]);
    let con = Duration::from_millis(600);
    let (res, took) = timed(
        PipeBuilder::new(dns, Proto::Tcp)
            .dest(("slow.test", 9))
            .conf(Conf {
                con_timeout: con,
                attempt_delay: Duration::from_millis(400),
                ..Conf::default()
            })
            .open(),
    )
    .await;
    let err = res.expect_err("nothing answers");
    let OpenError::AllAttemptsFailed { failed, .. } = &err else {
        panic!("expected AllAttemptsFailed, got {err:?}");
    };
    assert_eq!(attempts(failed), vec![d6, d4], "two attempts fit in 600 ms");
    assert!(failed
        .attempts
        .iter()
        .all(|(_, e)| matches!(e, AttemptError::TimedOut)));
    assert_eq!(failed.untried, vec![d4b]);
    assert_eq!(failed.timed_out, Some(con));
    assert_at_least(took, con, 0.95, "con_timeout");
    assert!(took < con + WAIT, "bounded by con_timeout: {took:?}");
}
