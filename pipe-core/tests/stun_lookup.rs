//! ExternalLookup in virtual time against scripted servers: agreement, fan-out and fallback,
//! per-server abandonment on the retransmission schedule, typed failures, the overall deadline,
//! and hostile input.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pipe_core::stun::{
    decode, Attribute, Class, ExternalLookup, LookupConfig, LookupError, Message, Method,
    ServerError, ServerFailure, TransactionId,
};

#[allow(clippy::disallowed_methods)] // one real Instant as the epoch of virtual time
fn epoch() -> Instant {
    Instant::now()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server(n: u8) -> SocketAddr {
    SocketAddr::new([198, 51, 100, n].into(), 3478)
}

/// What a scripted server does with each request it gets.
#[derive(Clone)]
enum Script {
    /// A success response with this mapped address, `delay` ms later.
    Answer(SocketAddr, u64),
    /// Nothing, ever.
    Silent,
    /// An error response with this code, 10 ms later.
    Error(u16),
    /// A success response without a mapped address, 10 ms later.
    Unusable,
    /// The driver's send fails with this error.
    Unreachable(ErrorKind),
}

fn response(request: &[u8], class: Class, attrs: Vec<Attribute>) -> Bytes {
    let id = decode(request).unwrap().transaction_id;
    let mut msg = Message::new(class, Method::Binding, id);
    msg.attributes = attrs;
    msg.encode()
}

struct Run {
    result: Result<SocketAddr, LookupError>,
    /// When the result came, ms after start.
    at: u128,
    /// Every request: (ms after start, server).
    sends: Vec<(u128, SocketAddr)>,
    /// Most servers in flight at once.
    max_in_flight: usize,
    lookup: ExternalLookup,
}

impl Run {
    fn sends_to(&self, s: SocketAddr) -> Vec<u128> {
        self.sends
            .iter()
            .filter(|(_, d)| *d == s)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// Drive `conf` against `script` in virtual time until the lookup finishes.
fn run(conf: LookupConfig, script: &[(SocketAddr, Script)]) -> Run {
    let script: HashMap<SocketAddr, Script> = script.iter().cloned().collect();
    let t0 = epoch();
    let ms = |t: Instant| t.duration_since(t0).as_millis();
    let mut lookup = ExternalLookup::new(conf, 7);
    assert_eq!(lookup.poll_timeout(), None, "idle before start");
    lookup.start(t0);
    let mut now = t0;
    let mut inbox: Vec<(Instant, SocketAddr, Bytes)> = Vec::new();
    let mut sends = Vec::new();
    let mut max_in_flight = 0;
    for _ in 0..10_000 {
        while let Some(tx) = lookup.poll_transmit() {
            sends.push((ms(now), tx.dest));
            let at = |d: u64| now + Duration::from_millis(d);
            match script.get(&tx.dest).expect("request to a scripted server") {
                Script::Answer(mapped, delay) => inbox.push((
                    at(*delay),
                    tx.dest,
                    response(
                        &tx.payload,
                        Class::Success,
                        vec![Attribute::XorMappedAddress(*mapped)],
                    ),
                )),
                Script::Silent => {}
                Script::Error(code) => inbox.push((
                    at(10),
                    tx.dest,
                    response(
                        &tx.payload,
                        Class::Error,
                        vec![Attribute::ErrorCode {
                            code: *code,
                            reason: "scripted".into(),
                        }],
                    ),
                )),
                Script::Unusable => inbox.push((
                    at(10),
                    tx.dest,
                    response(&tx.payload, Class::Success, vec![]),
                )),
                Script::Unreachable(kind) => lookup.handle_unreachable(now, tx.dest, *kind),
            }
        }
        max_in_flight = max_in_flight.max(lookup.in_flight());
        if let Some(result) = lookup.poll_result() {
            assert!(lookup.is_finished());
            assert_eq!(lookup.poll_timeout(), None, "no timer once finished");
            assert!(
                lookup.poll_transmit().is_none(),
                "nothing sent once finished"
            );
            return Run {
                result,
                at: ms(now),
                sends,
                max_in_flight,
                lookup,
            };
        }
        let timeout = lookup
            .poll_timeout()
            .expect("a running lookup has a deadline");
        assert!(timeout > now, "poll_timeout must advance");
        inbox.sort_by_key(|(t, _, _)| *t);
        if inbox.first().is_some_and(|(t, _, _)| *t <= timeout) {
            let (t, from, data) = inbox.remove(0);
            now = t;
            lookup.handle_datagram(now, from, &data);
        } else {
            // Waking early changes nothing.
            lookup.handle_timeout(timeout - Duration::from_nanos(1));
            assert!(lookup.poll_transmit().is_none() && lookup.poll_result().is_none());
            now = timeout;
            lookup.handle_timeout(now);
        }
    }
    panic!("the lookup never finished");
}

fn failures(err: &LookupError) -> Vec<(SocketAddr, ServerFailure)> {
    err.servers()
        .iter()
        .map(|ServerError { server, failure }| (*server, failure.clone()))
        .collect()
}

#[test]
fn first_answer_wins_when_one_must_agree() {
    let mut conf = LookupConfig::new(vec![server(1), server(2), server(3)]);
    conf.agree = 1;
    let r = run(
        conf,
        &[
            (server(1), Script::Answer(addr("192.0.2.1:1111"), 50)),
            (server(2), Script::Answer(addr("192.0.2.2:2222"), 20)),
            (server(3), Script::Silent),
        ],
    );
    assert_eq!(r.result, Ok(addr("192.0.2.2:2222")));
    assert_eq!(r.at, 20);
    // All three were asked at once (parallel 3), each once.
    assert_eq!(r.sends, [(0, server(1)), (0, server(2)), (0, server(3))]);
}

#[test]
fn a_single_server_is_enough_on_its_own() {
    // agree = 2 by default, capped at the number of servers; duplicates are one server.
    let conf = LookupConfig::new(vec![server(1), server(1)]);
    let r = run(
        conf,
        &[(server(1), Script::Answer(addr("192.0.2.1:1111"), 30))],
    );
    assert_eq!(r.result, Ok(addr("192.0.2.1:1111")));
    assert_eq!(r.at, 30);
    assert_eq!(r.sends, [(0, server(1))], "a duplicate is asked once");
}

#[test]
fn two_servers_must_agree_on_the_ip() {
    let conf = LookupConfig::new(vec![server(1), server(2), server(3), server(4)]);
    let r = run(
        conf,
        &[
            (server(1), Script::Answer(addr("192.0.2.1:1111"), 10)),
            (server(2), Script::Answer(addr("192.0.2.2:2222"), 20)),
            // Same IP as server 2, another port (a NAT mapping per destination): agrees.
            (server(3), Script::Answer(addr("192.0.2.2:3333"), 30)),
            // Asked from 10 ms, in server 1's place; never answers.
            (server(4), Script::Silent),
        ],
    );
    // Disagreeing answers at 10 and 20 ms did not finish it; the agreeing one at 30 ms did,
    // with the address as first reported.
    assert_eq!(r.result, Ok(addr("192.0.2.2:2222")));
    assert_eq!(r.at, 30);
    assert_eq!(r.sends_to(server(4)), [10]);
    let answers: Vec<_> = r.lookup.answers().collect();
    assert_eq!(
        answers,
        [
            (server(1), addr("192.0.2.1:1111")),
            (server(2), addr("192.0.2.2:2222")),
            (server(3), addr("192.0.2.2:3333")),
        ]
    );
}

#[test]
fn disagreeing_answers_wait_for_the_deadline_then_the_first_wins() {
    let conf = LookupConfig::new(vec![server(1), server(2), server(3)]);
    let r = run(
        conf,
        &[
            (server(1), Script::Answer(addr("192.0.2.1:1111"), 10)),
            (server(2), Script::Answer(addr("192.0.2.2:2222"), 20)),
            (server(3), Script::Silent),
        ],
    );
    // Server 3 might still agree with either, so the lookup runs to its deadline; the best
    // there is then is the earliest of the tied answers.
    assert_eq!(r.at, 3000);
    assert_eq!(r.result, Ok(addr("192.0.2.1:1111")));
    // Server 3 was retransmitted to on the RFC schedule meanwhile (0, 0.5, 1.5 s).
    assert_eq!(r.sends_to(server(3)), [0, 500, 1500]);
}

#[test]
fn disagreeing_answers_from_every_server_give_the_most_agreed_ip() {
    let mut conf = LookupConfig::new(vec![server(1), server(2), server(3), server(4)]);
    conf.agree = 3;
    conf.parallel = 4;
    let r = run(
        conf,
        &[
            (server(1), Script::Answer(addr("192.0.2.1:1"), 10)),
            (server(2), Script::Answer(addr("192.0.2.2:2"), 20)),
            (server(3), Script::Answer(addr("192.0.2.2:3"), 30)),
            (server(4), Script::Error(500)),
        ],
    );
    // Everyone is done at 30 ms, no IP reached 3: the IP two servers agree on wins.
    assert_eq!(r.at, 30);
    assert_eq!(r.result, Ok(addr("192.0.2.2:2")));
}

#[test]
fn a_silent_server_is_retransmitted_then_abandoned_for_the_next() {
    let mut conf = LookupConfig::new(vec![server(1), server(2), server(3)]);
    conf.parallel = 1;
    conf.agree = 1;
    conf.timeout = Duration::from_secs(10);
    conf.stun.max_sends = 3;
    conf.stun.last_wait = 2;
    let r = run(
        conf,
        &[
            (server(1), Script::Silent),
            (server(2), Script::Silent),
            (server(3), Script::Answer(addr("192.0.2.3:3333"), 10)),
        ],
    );
    // Sends at 0, 0.5, 1.5 s; transaction over at 1.5 + 2 × 0.5 = 2.5 s; then the next.
    assert_eq!(r.sends_to(server(1)), [0, 500, 1500]);
    assert_eq!(r.sends_to(server(2)), [2500, 3000, 4000]);
    assert_eq!(r.sends_to(server(3)), [5000]);
    assert_eq!(r.result, Ok(addr("192.0.2.3:3333")));
    assert_eq!(r.at, 5010);
    assert_eq!(r.max_in_flight, 1);
    assert_eq!(r.lookup.stats().retransmits, 4);
    assert_eq!(r.lookup.stats().timeouts, 2);
}

#[test]
fn silent_servers_get_their_share_of_the_timeout_and_fan_out_stays_bounded() {
    // Defaults (3 s, RFC schedule from 500 ms) with 5 servers 2 at a time: 3 rounds, 1 s each.
    let servers: Vec<_> = (1..=5).map(server).collect();
    let mut conf = LookupConfig::new(servers.clone());
    conf.parallel = 2;
    let script: Vec<_> = servers.iter().map(|s| (*s, Script::Silent)).collect();
    let r = run(conf, &script);
    assert_eq!(r.lookup.server_timeout(), Duration::from_secs(1));
    assert_eq!(r.sends_to(server(1)), [0, 500]);
    assert_eq!(r.sends_to(server(2)), [0, 500]);
    assert_eq!(r.sends_to(server(3)), [1000, 1500]);
    assert_eq!(r.sends_to(server(4)), [1000, 1500]);
    assert_eq!(r.sends_to(server(5)), [2000, 2500]);
    assert_eq!(r.max_in_flight, 2);
    assert_eq!(r.at, 3000);
    let err = r.result.unwrap_err();
    assert!(matches!(err, LookupError::Timeout { after, .. } if after == Duration::from_secs(3)));
    assert_eq!(
        failures(&err),
        [
            (server(1), ServerFailure::NoAnswer),
            (server(2), ServerFailure::NoAnswer),
            (server(3), ServerFailure::NoAnswer),
            (server(4), ServerFailure::NoAnswer),
            (server(5), ServerFailure::Pending),
        ]
    );
}

#[test]
fn a_failing_server_is_replaced_at_once() {
    let servers: Vec<_> = (1..=4).map(server).collect();
    let conf = LookupConfig::new(servers);
    let mapped = addr("192.0.2.9:9999");
    let r = run(
        conf,
        &[
            (server(1), Script::Error(400)),
            (server(2), Script::Answer(mapped, 100)),
            (server(3), Script::Silent),
            (server(4), Script::Answer(mapped, 40)),
        ],
    );
    // Server 1's error at 10 ms frees its place for server 4, which agrees with server 2.
    assert_eq!(r.sends_to(server(4)), [10]);
    assert_eq!(r.max_in_flight, 3);
    assert_eq!(r.result, Ok(mapped));
    assert_eq!(r.at, 100);
}

#[test]
fn every_server_failing_lists_each_failure() {
    let servers: Vec<_> = (1..=4).map(server).collect();
    let mut conf = LookupConfig::new(servers);
    conf.server_timeout = Some(Duration::from_millis(200));
    let r = run(
        conf,
        &[
            (server(1), Script::Error(420)),
            (server(2), Script::Unusable),
            (
                server(3),
                Script::Unreachable(ErrorKind::NetworkUnreachable),
            ),
            (server(4), Script::Silent),
        ],
    );
    // Server 3 fails as it is sent to, so server 4 starts at once; it is abandoned at 200 ms.
    assert_eq!(r.sends_to(server(4)), [0]);
    assert_eq!(r.at, 200);
    let err = r.result.unwrap_err();
    assert!(matches!(err, LookupError::AllFailed { .. }), "{err:?}");
    assert_eq!(
        failures(&err),
        [
            (
                server(1),
                ServerFailure::ErrorResponse {
                    code: 420,
                    reason: "scripted".into()
                }
            ),
            (server(2), ServerFailure::InvalidResponse),
            (
                server(3),
                ServerFailure::Unreachable(ErrorKind::NetworkUnreachable)
            ),
            (server(4), ServerFailure::NoAnswer),
        ]
    );
    assert!(
        err.to_string().contains("198.51.100.1:3478 error 420"),
        "{err}"
    );
}

#[test]
fn offline_fails_at_once_as_unreachable() {
    let servers: Vec<_> = (1..=5).map(server).collect();
    let script: Vec<_> = servers
        .iter()
        .map(|s| (*s, Script::Unreachable(ErrorKind::NetworkUnreachable)))
        .collect();
    let r = run(LookupConfig::new(servers.clone()), &script);
    assert_eq!(r.at, 0);
    let err = r.result.unwrap_err();
    assert!(matches!(err, LookupError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.servers().len(), 5);
    assert_eq!(r.sends.len(), 5, "each server tried once");
}

#[test]
fn no_servers_is_typed() {
    let mut lookup = ExternalLookup::new(LookupConfig::new(vec![]), 1);
    lookup.start(epoch());
    assert_eq!(lookup.poll_result(), Some(Err(LookupError::NoServers)));
    assert_eq!(lookup.poll_result(), None, "the result is given once");
    assert!(lookup.is_finished());
}

#[test]
fn the_overall_timeout_fires_at_exactly_its_deadline() {
    let t0 = epoch();
    let timeout = Duration::from_millis(1234);
    let mut conf = LookupConfig::new(vec![server(1), server(2)]);
    conf.timeout = timeout;
    let mut lookup = ExternalLookup::new(conf, 3);
    lookup.start(t0);
    let mut wakes = Vec::new();
    loop {
        while lookup.poll_transmit().is_some() {}
        let t = lookup.poll_timeout().expect("running");
        if t >= t0 + timeout {
            assert_eq!(t, t0 + timeout, "the deadline is a wake-up");
            break;
        }
        wakes.push(t.duration_since(t0).as_millis());
        lookup.handle_timeout(t);
        assert!(lookup.poll_result().is_none());
    }
    assert_eq!(wakes, [500], "the one retransmission before the deadline");
    lookup.handle_timeout(t0 + timeout - Duration::from_nanos(1));
    assert!(lookup.poll_result().is_none(), "not a nanosecond early");
    while lookup.poll_transmit().is_some() {}
    lookup.handle_timeout(t0 + timeout);
    assert!(lookup.poll_transmit().is_none(), "no send at the deadline");
    let err = lookup.poll_result().expect("finished").unwrap_err();
    assert_eq!(
        err,
        LookupError::Timeout {
            after: timeout,
            servers: vec![
                ServerError {
                    server: server(1),
                    failure: ServerFailure::Pending
                },
                ServerError {
                    server: server(2),
                    failure: ServerFailure::Pending
                },
            ],
        }
    );
    assert_eq!(lookup.poll_timeout(), None);
}

#[test]
fn hostile_and_stray_input_is_ignored_and_counted() {
    let t0 = epoch();
    let s = server(1);
    let mut lookup = ExternalLookup::new(LookupConfig::new(vec![s]), 9);
    lookup.start(t0);
    let request = lookup.poll_transmit().expect("a request").payload;
    let id = decode(&request).unwrap().transaction_id;
    let mapped = addr("192.0.2.1:4242");
    let good = response(
        &request,
        Class::Success,
        vec![Attribute::XorMappedAddress(mapped)],
    );
    let now = t0 + Duration::from_millis(5);
    // Garbage, a truncated response, a request, a response to another transaction, and the
    // right response from the wrong address.
    lookup.handle_datagram(now, s, b"hello, world");
    lookup.handle_datagram(now, s, &good[..good.len() - 1]);
    lookup.handle_datagram(now, s, &Message::binding_request(id).encode());
    let mut other = decode(&good).unwrap();
    other.transaction_id = TransactionId([0xAB; 12]);
    lookup.handle_datagram(now, s, &other.encode());
    lookup.handle_datagram(now, addr("203.0.113.66:3478"), &good);
    assert!(lookup.poll_result().is_none(), "none of that finishes it");
    let stats = lookup.stats();
    assert_eq!(stats.dropped_malformed, 2);
    assert_eq!(stats.dropped_not_response, 1);
    assert_eq!(stats.dropped_unknown_transaction, 1);
    assert_eq!(stats.dropped_wrong_source, 1);
    lookup.handle_datagram(now, s, &good);
    assert_eq!(lookup.poll_result(), Some(Ok(mapped)));
    // A duplicate after the end is dropped and counted, and changes nothing.
    lookup.handle_datagram(now, s, &good);
    assert_eq!(lookup.stats().dropped_unknown_transaction, 2);
    assert_eq!(lookup.poll_result(), None);
    assert!(lookup.poll_transmit().is_none());
}

#[test]
fn with_the_defaults_a_fourth_server_is_asked_after_half_the_timeout() {
    // 4 servers, 3 at a time, 3 s: two rounds of 1.5 s. The RFC's third send (1.5 s) is due
    // as the first round is abandoned, and is not sent.
    let servers: Vec<_> = (1..=4).map(server).collect();
    let script: Vec<_> = servers.iter().map(|s| (*s, Script::Silent)).collect();
    let r = run(LookupConfig::new(servers), &script);
    for s in 1..=3 {
        assert_eq!(r.sends_to(server(s)), [0, 500]);
    }
    assert_eq!(r.sends_to(server(4)), [1500, 2000]);
    assert_eq!(r.lookup.stats().retransmits, 4);
    assert_eq!(r.max_in_flight, 3);
    assert_eq!(r.at, 3000);
    assert!(matches!(r.result, Err(LookupError::Timeout { .. })));
}

#[test]
fn a_server_gets_at_least_one_rto() {
    // 30 servers, 3 at a time, 3 s: a tenth of the timeout is less than the RTO.
    let servers: Vec<_> = (1..=30).map(server).collect();
    let lookup = ExternalLookup::new(LookupConfig::new(servers), 1);
    assert_eq!(lookup.server_timeout(), Duration::from_millis(500));
    let mut conf = LookupConfig::new(vec![server(1), server(2)]);
    conf.server_timeout = Some(Duration::from_millis(700));
    assert_eq!(
        ExternalLookup::new(conf, 1).server_timeout(),
        Duration::from_millis(700)
    );
}
