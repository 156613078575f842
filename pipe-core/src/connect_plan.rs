//! Happy Eyeballs (RFC 8305) as a sans-IO plan: which address to try next, when, and what
//! the outcome is.
//!
//! A name often resolves to several addresses of both families, and the first may be dead
//! (an IPv6 route that blackholes, a host that stopped answering on one address).
//! [`ConnectPlan`] decides the connection attempts; the driver makes them:
//!
//! 1. [`ConnectPlan::new`] takes the resolved addresses and orders them as RFC 8305 §4 asks:
//!    duplicates removed, then the families interleaved, IPv6 first ("First Address Family
//!    Count" of 1), each family keeping the resolver's order. With a family given (a route
//!    pins it) only that family's addresses are kept.
//! 2. The driver calls [`ConnectPlan::poll_start`] with `now`: it gives the next address to
//!    try when one is due: the first at once, then each [`ConnectPlan::attempt_delay`] (RFC
//!    8305 §5's "Connection Attempt Delay", 250 ms by default, [`crate::Conf::attempt_delay`])
//!    after the last one started, or at once when every attempt started so far has failed.
//!    [`ConnectPlan::poll_timeout`] says when to call it again (the next start or the overall
//!    deadline, whichever is first).
//! 3. The driver reports each attempt: [`ConnectPlan::handle_connected`] (the first wins; the
//!    plan is then done and the driver closes every other attempt) or
//!    [`ConnectPlan::handle_failed`]. [`ConnectPlan::handle_timeout`] at the overall deadline
//!    ends every attempt still in flight.
//! 4. [`ConnectPlan::outcome`] is `Some` once the plan is decided: the winning address, or
//!    [`ConnectFailed`] listing every attempt with its error (in the order they started).
//!
//! The plan holds no socket and reads no clock; it is generic over the driver's error type
//! `E` (pipe-io uses `std::io::Error`).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::addr::{same_endpoint, Family};

/// RFC 8305 §5's recommended Connection Attempt Delay.
pub const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Order addresses as RFC 8305 §4 asks: duplicates removed (an IPv4-mapped IPv6 address is
/// the same endpoint as its IPv4 form), then IPv6 and IPv4 interleaved, IPv6 first, each
/// family in the order given. With `family`, only that family's addresses are kept.
pub fn interleave(
    addrs: impl IntoIterator<Item = SocketAddr>,
    family: Option<Family>,
) -> Vec<SocketAddr> {
    let mut v6 = Vec::new();
    let mut v4 = Vec::new();
    let mut seen: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if family.is_some_and(|f| Family::of_addr(&a) != f) {
            continue;
        }
        if seen.iter().any(|s| same_endpoint(s, &a)) {
            continue;
        }
        seen.push(a);
        match Family::of_addr(&a) {
            Family::V6 => v6.push(a),
            Family::V4 => v4.push(a),
        }
    }
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
    out
}

/// Why one attempt did not connect.
#[derive(Debug)]
pub enum AttemptError<E> {
    /// The connect failed with the driver's error.
    Failed(E),
    /// Still in progress when the overall deadline passed (the driver closed it).
    TimedOut,
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Failed(e) => write!(f, "{e}"),
            AttemptError::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Every attempt failed: each address tried, in the order the attempts started, with why.
/// `untried` counts the addresses the deadline left no time for.
#[derive(Debug)]
pub struct ConnectFailed<E> {
    /// Each attempt, in start order.
    pub attempts: Vec<(SocketAddr, AttemptError<E>)>,
    /// Addresses never tried (the overall deadline came first).
    pub untried: Vec<SocketAddr>,
    /// The overall deadline, if it is what ended the plan.
    pub timed_out: Option<Duration>,
}

impl<E: fmt::Display> fmt::Display for ConnectFailed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} connection attempts failed", self.attempts.len())?;
        if let Some(after) = self.timed_out {
            write!(f, " within {after:?}")?;
        }
        for (i, (addr, e)) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{addr}: {e}")?;
        }
        if !self.untried.is_empty() {
            write!(f, "; {} address(es) not tried", self.untried.len())?;
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ConnectFailed<E> {}

/// The decided outcome of a plan.
#[derive(Debug)]
pub enum PlanOutcome<E> {
    /// This attempt connected first: keep it, close the rest.
    Connected(SocketAddr),
    /// No attempt connected.
    Failed(ConnectFailed<E>),
}

#[derive(Debug)]
enum Slot<E> {
    InFlight,
    Done(AttemptError<E>),
}

/// The Happy Eyeballs connection plan of one open. See the module documentation.
#[derive(Debug)]
pub struct ConnectPlan<E> {
    order: Vec<SocketAddr>,
    /// Index in `order` of the next address to start.
    next: usize,
    attempts: Vec<(SocketAddr, Slot<E>)>,
    delay: Duration,
    /// When the next attempt is due (the last start + `delay`; `now` of `new` for the first).
    next_at: Instant,
    deadline: Instant,
    overall: Duration,
    winner: Option<SocketAddr>,
    failed: Option<ConnectFailed<E>>,
}

impl<E> ConnectPlan<E> {
    /// A plan over `addrs` (ordered by [`interleave`], `family` pinning one family), starting
    /// attempts `attempt_delay` apart, all bounded by `overall` from `now`. `None` when no
    /// address is left to try.
    pub fn new(
        now: Instant,
        addrs: impl IntoIterator<Item = SocketAddr>,
        family: Option<Family>,
        attempt_delay: Duration,
        overall: Duration,
    ) -> Option<Self> {
        let order = interleave(addrs, family);
        if order.is_empty() {
            return None;
        }
        Some(Self {
            order,
            next: 0,
            attempts: Vec::new(),
            delay: attempt_delay,
            next_at: now,
            deadline: now + overall,
            overall,
            winner: None,
            failed: None,
        })
    }

    /// The addresses in the order they will be tried.
    pub fn order(&self) -> &[SocketAddr] {
        &self.order
    }

    /// The Connection Attempt Delay between two starts.
    pub fn attempt_delay(&self) -> Duration {
        self.delay
    }

    /// True once the plan is decided (a winner, or every attempt failed).
    pub fn is_done(&self) -> bool {
        self.winner.is_some() || self.failed.is_some()
    }

    fn in_flight(&self) -> usize {
        self.attempts
            .iter()
            .filter(|(_, s)| matches!(s, Slot::InFlight))
            .count()
    }

    /// The next address to try, if one is due at `now`: the first at once; later ones when
    /// `attempt_delay` has passed since the last start, or at once when no attempt is in
    /// flight (every earlier one failed). Call it until `None`, then wait for
    /// [`ConnectPlan::poll_timeout`] or an attempt's result.
    pub fn poll_start(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.is_done() || self.next >= self.order.len() || now >= self.deadline {
            return None;
        }
        if now < self.next_at && self.in_flight() > 0 {
            return None;
        }
        let addr = self.order[self.next];
        self.next += 1;
        self.next_at = now + self.delay;
        self.attempts.push((addr, Slot::InFlight));
        Some(addr)
    }

    /// When to call [`ConnectPlan::poll_start`] or [`ConnectPlan::handle_timeout`] next: the
    /// next attempt's start or the overall deadline, whichever is first. `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        if self.next >= self.order.len() {
            return Some(self.deadline);
        }
        Some(self.next_at.min(self.deadline))
    }

    fn slot(&mut self, addr: SocketAddr) -> Option<&mut Slot<E>> {
        self.attempts
            .iter_mut()
            .find(|(a, s)| *a == addr && matches!(s, Slot::InFlight))
            .map(|(_, s)| s)
    }

    /// The attempt to `addr` connected. The first one wins; for any later one (or an
    /// address with no attempt in flight) this returns false and the driver closes it.
    pub fn handle_connected(&mut self, addr: SocketAddr) -> bool {
        if self.is_done() || self.slot(addr).is_none() {
            return false;
        }
        self.winner = Some(addr);
        true
    }

    /// The attempt to `addr` failed with `error`. When it was the last hope (nothing in
    /// flight, nothing left to try), the plan fails. The next attempt, if any, is due at
    /// once: call [`ConnectPlan::poll_start`].
    pub fn handle_failed(&mut self, addr: SocketAddr, error: E) {
        if self.is_done() {
            return;
        }
        let Some(slot) = self.slot(addr) else {
            return;
        };
        *slot = Slot::Done(AttemptError::Failed(error));
        if self.in_flight() == 0 && self.next >= self.order.len() {
            self.fail(None);
        }
    }

    /// Time passed: at the overall deadline every attempt in flight ends
    /// ([`AttemptError::TimedOut`]) and the plan fails.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_done() && now >= self.deadline {
            for (_, s) in &mut self.attempts {
                if matches!(s, Slot::InFlight) {
                    *s = Slot::Done(AttemptError::TimedOut);
                }
            }
            self.fail(Some(self.overall));
        }
    }

    fn fail(&mut self, timed_out: Option<Duration>) {
        let attempts = std::mem::take(&mut self.attempts)
            .into_iter()
            .map(|(a, s)| match s {
                Slot::Done(e) => (a, e),
                Slot::InFlight => (a, AttemptError::TimedOut),
            })
            .collect();
        self.failed = Some(ConnectFailed {
            attempts,
            untried: self.order[self.next..].to_vec(),
            timed_out,
        });
    }

    /// Take the outcome once the plan is decided (`None` before, and after it was taken).
    pub fn outcome(&mut self) -> Option<PlanOutcome<E>> {
        if let Some(w) = self.winner.take() {
            self.failed = None;
            self.next = self.order.len();
            // Stay done: no new attempt, no timeout.
            self.winner = Some(w);
            return Some(PlanOutcome::Connected(w));
        }
        self.failed.take().map(PlanOutcome::Failed)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks any start instant; time is still an argument
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const D: Duration = DEFAULT_ATTEMPT_DELAY;
    const ALL: Duration = Duration::from_secs(2);

    #[test]
    fn interleaves_ipv6_first_and_dedups() {
        let got = interleave(
            [
                a("10.0.0.1:80"),
                a("10.0.0.2:80"),
                a("10.0.0.3:80"),
                a("[2001:db8::1]:80"),
                a("[::ffff:10.0.0.1]:80"),
                a("[2001:db8::2]:80"),
                a("10.0.0.2:80"),
            ],
            None,
        );
        assert_eq!(
            got,
            vec![
                a("[2001:db8::1]:80"),
                a("10.0.0.1:80"),
                a("[2001:db8::2]:80"),
                a("10.0.0.2:80"),
                a("10.0.0.3:80"),
            ]
        );
    }

    #[test]
    fn family_pins() {
        let addrs = [a("10.0.0.1:80"), a("[2001:db8::1]:80"), a("10.0.0.2:80")];
        assert_eq!(
            interleave(addrs, Some(Family::V4)),
            vec![a("10.0.0.1:80"), a("10.0.0.2:80")]
        );
        assert_eq!(
            interleave(addrs, Some(Family::V6)),
            vec![a("[2001:db8::1]:80")]
        );
        let t0 = Instant::now();
        assert!(ConnectPlan::<()>::new(t0, [a("10.0.0.1:80")], Some(Family::V6), D, ALL).is_none());
        assert!(ConnectPlan::<()>::new(t0, [], None, D, ALL).is_none());
    }

    #[test]
    fn staggered_starts_and_first_wins() {
        let t0 = Instant::now();
        let mut p: ConnectPlan<&str> = ConnectPlan::new(
            t0,
            [a("10.0.0.1:80"), a("[2001:db8::1]:80"), a("10.0.0.2:80")],
            None,
            D,
            ALL,
        )
        .unwrap();
        assert_eq!(p.poll_start(t0), Some(a("[2001:db8::1]:80")));
        assert_eq!(p.poll_start(t0), None, "the next waits for the delay");
        assert_eq!(p.poll_timeout(), Some(t0 + D));
        let t1 = t0 + Duration::from_millis(249);
        assert_eq!(p.poll_start(t1), None);
        let t1 = t0 + D;
        assert_eq!(p.poll_start(t1), Some(a("10.0.0.1:80")));
        assert_eq!(p.poll_timeout(), Some(t1 + D));
        // The IPv4 attempt connects first: it wins; the IPv6 one is the driver's to close.
        assert!(p.handle_connected(a("10.0.0.1:80")));
        assert!(p.is_done());
        assert!(
            !p.handle_connected(a("[2001:db8::1]:80")),
            "a later one loses"
        );
        assert_eq!(p.poll_start(t1 + D * 4), None, "nothing starts once done");
        assert_eq!(p.poll_timeout(), None);
        assert!(matches!(p.outcome(), Some(PlanOutcome::Connected(w)) if w == a("10.0.0.1:80")));
    }

    #[test]
    fn early_failure_starts_the_next_at_once() {
        let t0 = Instant::now();
        let mut p: ConnectPlan<&str> =
            ConnectPlan::new(t0, [a("[::1]:1"), a("127.0.0.1:1")], None, D, ALL).unwrap();
        assert_eq!(p.poll_start(t0), Some(a("[::1]:1")));
        let t1 = t0 + Duration::from_millis(3);
        p.handle_failed(a("[::1]:1"), "refused");
        assert!(!p.is_done());
        assert_eq!(
            p.poll_start(t1),
            Some(a("127.0.0.1:1")),
            "no delay after a failure"
        );
        p.handle_failed(a("127.0.0.1:1"), "refused");
        assert!(p.is_done());
        match p.outcome() {
            Some(PlanOutcome::Failed(f)) => {
                assert_eq!(
                    f.attempts
                        .iter()
                        .map(|(a, e)| format!("{a} {e}"))
                        .collect::<Vec<_>>(),
                    vec!["[::1]:1 refused", "127.0.0.1:1 refused"]
                );
                assert!(f.untried.is_empty());
                assert_eq!(f.timed_out, None);
                assert_eq!(
                    f.to_string(),
                    "all 2 connection attempts failed: [::1]:1: refused; 127.0.0.1:1: refused"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(p.outcome().is_none(), "taken once");
    }

    #[test]
    fn a_failure_while_another_is_in_flight_does_not_hurry() {
        let t0 = Instant::now();
        let addrs = [
            a("[2001:db8::1]:80"),
            a("10.0.0.1:80"),
            a("[2001:db8::2]:80"),
        ];
        let mut p: ConnectPlan<&str> = ConnectPlan::new(t0, addrs, None, D, ALL).unwrap();
        assert_eq!(p.poll_start(t0), Some(addrs[0]));
        assert_eq!(p.poll_start(t0 + D), Some(addrs[1]));
        p.handle_failed(addrs[1], "unreachable");
        // The first is still in flight: the third waits for its delay.
        assert_eq!(p.poll_start(t0 + D + Duration::from_millis(1)), None);
        assert_eq!(p.poll_start(t0 + D * 2), Some(addrs[2]));
    }

    #[test]
    fn the_deadline_fails_everything_in_flight() {
        let t0 = Instant::now();
        let all = Duration::from_millis(400);
        let addrs = [
            a("[2001:db8::1]:80"),
            a("10.0.0.1:80"),
            a("[2001:db8::2]:80"),
        ];
        let mut p: ConnectPlan<&str> = ConnectPlan::new(t0, addrs, None, D, all).unwrap();
        assert_eq!(p.poll_start(t0), Some(addrs[0]));
        assert_eq!(p.poll_start(t0 + D), Some(addrs[1]));
        assert_eq!(
            p.poll_timeout(),
            Some(t0 + all),
            "the deadline comes before the next start"
        );
        p.handle_timeout(t0 + Duration::from_millis(399));
        assert!(!p.is_done());
        p.handle_timeout(t0 + all);
        assert!(p.is_done());
        assert_eq!(p.poll_start(t0 + all), None);
        match p.outcome() {
            Some(PlanOutcome::Failed(f)) => {
                assert_eq!(f.attempts.len(), 2);
                assert!(f
                    .attempts
                    .iter()
                    .all(|(_, e)| matches!(e, AttemptError::TimedOut)));
                assert_eq!(f.untried, vec![addrs[2]]);
                assert_eq!(f.timed_out, Some(all));
                assert!(f.to_string().contains("1 address(es) not tried"), "{f}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_attempt_delay_is_a_validated_conf_key() {
        assert_eq!(crate::Conf::default().attempt_delay, D);
        for (ms, ok) in [
            (9, false),
            (10, true),
            (250, true),
            (10_000, true),
            (10_001, false),
        ] {
            let conf = crate::Conf {
                attempt_delay: Duration::from_millis(ms),
                ..crate::Conf::default()
            };
            assert_eq!(conf.validate().is_ok(), ok, "{ms} ms");
        }
    }

    #[test]
    fn unknown_results_are_ignored() {
        let t0 = Instant::now();
        let mut p: ConnectPlan<&str> =
            ConnectPlan::new(t0, [a("[::1]:1"), a("127.0.0.1:1")], None, D, ALL).unwrap();
        assert_eq!(p.poll_start(t0), Some(a("[::1]:1")));
        p.handle_failed(a("127.0.0.1:1"), "not started");
        assert!(!p.handle_connected(a("127.0.0.1:1")));
        assert!(!p.is_done());
        // A result reported twice counts once.
        p.handle_failed(a("[::1]:1"), "refused");
        p.handle_failed(a("[::1]:1"), "again");
        assert_eq!(p.poll_start(t0), Some(a("127.0.0.1:1")));
        assert!(p.handle_connected(a("127.0.0.1:1")));
    }
}
