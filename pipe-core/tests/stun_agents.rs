//! StunClient and StunServer in virtual time, in memory: retransmission schedule, input
//! filtering, caps, client ↔ server round trips, and the server's amplification bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use pipe_core::stun::{
    decode, Attribute, Class, EncodeOptions, Message, Method, StunClient, StunClientConfig,
    StunClientError, StunEvent, StunServer, StunServerConfig, TransactionId, Transport,
};

const BLOCKED: [u16; 11] = [0, 17, 19, 53, 111, 123, 137, 138, 161, 389, 500];

#[allow(clippy::disallowed_methods)] // one real Instant as the epoch of virtual time
fn epoch() -> Instant {
    Instant::now()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(t: Instant, t0: Instant) -> u128 {
    t.duration_since(t0).as_millis()
}

/// Run one transaction with no answers; returns (send times, timeout time) in ms.
fn silent_run(conf: StunClientConfig, transport: Transport) -> (Vec<u128>, u128) {
    let t0 = epoch();
    let server = addr("198.51.100.1:3478");
    let mut client = StunClient::new(conf, 1);
    let id = client.start_binding(t0, server, transport).unwrap();
    let mut sends = Vec::new();
    let mut now = t0;
    loop {
        while let Some(tx) = client.poll_transmit() {
            assert_eq!((tx.dest, tx.transport), (server, transport));
            assert_eq!(decode(&tx.payload).unwrap().transaction_id, id);
            sends.push(ms(now, t0));
        }
        if let Some(event) = client.poll_event() {
            assert_eq!(event, StunEvent::Timeout { id });
            assert_eq!(client.poll_timeout(), None);
            assert_eq!(client.outstanding(), 0);
            return (sends, ms(now, t0));
        }
        let next = client
            .poll_timeout()
            .expect("a transaction in flight has a deadline");
        assert!(next > now, "poll_timeout must advance");
        // Waking early changes nothing.
        client.handle_timeout(next - Duration::from_millis(1));
        assert!(client.poll_transmit().is_none() && client.poll_event().is_none());
        now = next;
        client.handle_timeout(now);
    }
}

#[test]
fn udp_retransmission_schedule() {
    let (sends, timeout) = silent_run(StunClientConfig::default(), Transport::Udp);
    assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(timeout, 39500);
}

#[test]
fn udp_schedule_follows_configured_rto() {
    let mut conf = StunClientConfig::default();
    conf.rto = Duration::from_secs(1);
    let (sends, timeout) = silent_run(conf, Transport::Udp);
    assert_eq!(sends, [0, 1000, 3000, 7000, 15000, 31000, 63000]);
    assert_eq!(timeout, 79000);
}

#[test]
fn tcp_sends_once_and_times_out_at_39_5_s() {
    let (sends, timeout) = silent_run(StunClientConfig::default(), Transport::Tcp);
    assert_eq!(sends, [0]);
    assert_eq!(timeout, 39500);
}

fn success_for(id: TransactionId, mapped: SocketAddr) -> Vec<u8> {
    let mut msg = Message::new(Class::Success, Method::Binding, id);
    msg.attributes.push(Attribute::XorMappedAddress(mapped));
    msg.encode().to_vec()
}

#[test]
fn client_drops_everything_but_the_matching_response() {
    let t0 = epoch();
    let server = addr("198.51.100.1:3478");
    let me = addr("192.0.2.7:5555");
    let mut client = StunClient::new(StunClientConfig::default(), 7);
    let id = client.start_binding(t0, server, Transport::Udp).unwrap();
    client.poll_transmit().unwrap();

    client.handle_input(t0, server, &success_for(TransactionId([9; 12]), me));
    client.handle_input(t0, addr("198.51.100.2:3478"), &success_for(id, me));
    client.handle_input(t0, addr("198.51.100.1:3479"), &success_for(id, me));
    client.handle_input(t0, server, &Message::binding_request(id).encode());
    client.handle_input(t0, server, b"not stun at all, definitely not");
    client.handle_input(t0, server, &[]);
    let stats = client.stats();
    assert_eq!(stats.dropped_unknown_transaction, 1);
    assert_eq!(stats.dropped_wrong_source, 2);
    assert_eq!(stats.dropped_not_response, 1);
    assert_eq!(stats.dropped_malformed, 2);
    assert_eq!(client.poll_event(), None);

    client.handle_input(t0, server, &success_for(id, me));
    assert_eq!(
        client.poll_event(),
        Some(StunEvent::Success {
            id,
            mapped: me,
            other_address: None,
            response_origin: None
        })
    );
    client.handle_input(t0, server, &success_for(id, me));
    assert_eq!(
        client.stats().dropped_unknown_transaction,
        2,
        "duplicate after completion"
    );
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn client_reports_error_and_invalid_responses() {
    let t0 = epoch();
    let server = addr("198.51.100.1:3478");
    let mut client = StunClient::new(StunClientConfig::default(), 3);
    let a = client.start_binding(t0, server, Transport::Udp).unwrap();
    let b = client.start_binding(t0, server, Transport::Udp).unwrap();
    let c = client.start_binding(t0, server, Transport::Udp).unwrap();
    let mut err = Message::new(Class::Error, Method::Binding, a);
    err.attributes.push(Attribute::ErrorCode {
        code: 420,
        reason: "Unknown Attribute".into(),
    });
    client.handle_input(t0, server, &err.encode());
    client.handle_input(
        t0,
        server,
        &Message::new(Class::Success, Method::Binding, b).encode(),
    );
    let mut odd = Message::new(Class::Success, Method::Binding, c);
    odd.attributes
        .push(Attribute::XorMappedAddress(addr("192.0.2.7:5555")));
    odd.attributes.push(Attribute::Unknown {
        typ: 0x7001,
        value: Default::default(),
    });
    client.handle_input(t0, server, &odd.encode());
    assert_eq!(
        client.poll_event(),
        Some(StunEvent::ErrorResponse {
            id: a,
            code: 420,
            reason: "Unknown Attribute".into()
        })
    );
    assert_eq!(
        client.poll_event(),
        Some(StunEvent::InvalidResponse { id: b })
    );
    assert_eq!(
        client.poll_event(),
        Some(StunEvent::InvalidResponse { id: c })
    );
}

#[test]
fn outstanding_caps() {
    let t0 = epoch();
    let (s1, s2) = (addr("198.51.100.1:3478"), addr("198.51.100.2:3478"));
    let mut client = StunClient::new(StunClientConfig::default(), 11);
    let ids: Vec<_> = (0..10)
        .map(|_| client.start_binding(t0, s1, Transport::Udp).unwrap())
        .collect();
    assert_eq!(
        client.start_binding(t0, s1, Transport::Udp),
        Err(StunClientError::TooManyOutstanding {
            server: s1,
            max: 10
        })
    );
    assert!(
        client.start_binding(t0, s2, Transport::Udp).is_ok(),
        "the cap is per server"
    );
    assert!(client.cancel(ids[0]));
    assert!(!client.cancel(ids[0]));
    assert!(client.start_binding(t0, s1, Transport::Udp).is_ok());

    let mut conf = StunClientConfig::default();
    conf.max_transactions = 3;
    let mut client = StunClient::new(conf, 11);
    for i in 0..3 {
        client
            .start_binding(
                t0,
                addr(&format!("198.51.100.{}:3478", i + 1)),
                Transport::Tcp,
            )
            .unwrap();
    }
    assert_eq!(
        client.start_binding(t0, s1, Transport::Tcp),
        Err(StunClientError::TableFull { max: 3 })
    );
}

#[test]
fn cancel_stops_sends_and_events() {
    let t0 = epoch();
    let mut client = StunClient::new(StunClientConfig::default(), 5);
    let id = client
        .start_binding(t0, addr("198.51.100.1:3478"), Transport::Udp)
        .unwrap();
    assert!(client.cancel(id));
    assert!(client.poll_transmit().is_none());
    assert_eq!(client.poll_timeout(), None);
    client.handle_timeout(t0 + Duration::from_secs(60));
    assert!(client.poll_transmit().is_none() && client.poll_event().is_none());
}

#[test]
fn ids_are_seeded_and_distinct() {
    let t0 = epoch();
    let server = addr("198.51.100.1:3478");
    let run = |seed| {
        let mut c = StunClient::new(StunClientConfig::default(), seed);
        (0..10)
            .map(|_| c.start_binding(t0, server, Transport::Udp).unwrap())
            .collect::<Vec<_>>()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
    let mut sorted = a.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10);
}

/// Client ↔ server through an in-memory "network" with the first `lose` requests lost.
fn round_trip(
    me: SocketAddr,
    server_addr: SocketAddr,
    conf: StunClientConfig,
    lose: usize,
) -> StunEvent {
    let t0 = epoch();
    let mut server_conf = StunServerConfig::default();
    server_conf.response_origin = true;
    let mut server = StunServer::new(server_conf);
    let mut client = StunClient::new(conf, 99);
    client
        .start_binding(t0, server_addr, Transport::Udp)
        .unwrap();
    let mut now = t0;
    let mut sent = 0;
    loop {
        while let Some(tx) = client.poll_transmit() {
            sent += 1;
            if sent <= lose {
                continue;
            }
            let answer = server
                .handle(now, server_addr, me, &tx.payload)
                .expect("answered");
            client.handle_input(now, server_addr, &answer);
        }
        if let Some(event) = client.poll_event() {
            return event;
        }
        now = client.poll_timeout().unwrap();
        client.handle_timeout(now);
    }
}

#[test]
fn round_trip_ipv4_and_ipv6() {
    for (me, server) in [
        (addr("192.0.2.7:5555"), addr("198.51.100.1:3478")),
        (addr("[2001:db8::7]:5555"), addr("[2001:db8:1::1]:3478")),
    ] {
        for fingerprint in [false, true] {
            let mut conf = StunClientConfig::default();
            conf.fingerprint = fingerprint;
            match round_trip(me, server, conf, 2) {
                StunEvent::Success {
                    mapped,
                    response_origin,
                    other_address,
                    ..
                } => {
                    assert_eq!(mapped, me);
                    // RESPONSE-ORIGIN only fits the 2x budget of a 28-byte (FINGERPRINT)
                    // request for IPv4: 20 + 12 + 12 + 8 = 52 <= 56.
                    let fits = fingerprint && me.is_ipv4();
                    assert_eq!(response_origin, fits.then_some(server));
                    assert_eq!(other_address, None);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn server_answer_is_minimal() {
    let now = epoch();
    let mut server = StunServer::new(StunServerConfig::default());
    let local = addr("198.51.100.1:3478");
    let request = Message::binding_request(TransactionId([1; 12]));
    let bare = request.encode();
    let with_fp = request.encode_with(&EncodeOptions {
        integrity_key: None,
        fingerprint: true,
    });
    assert_eq!((bare.len(), with_fp.len()), (20, 28));
    let v4 = addr("192.0.2.7:5555");
    let v6 = addr("[2001:db8::7]:5555");
    let answer = server.handle(now, local, v4, &bare).unwrap();
    assert_eq!(answer.len(), 32);
    let msg = decode(&answer).unwrap();
    assert_eq!(msg.attributes, [Attribute::XorMappedAddress(v4)]);
    assert_eq!(msg.transaction_id, TransactionId([1; 12]));
    assert_eq!(server.handle(now, local, v6, &bare).unwrap().len(), 44);
    let answer = server.handle(now, local, v4, &with_fp).unwrap();
    assert_eq!(answer.len(), 40);
    assert!(decode(&answer).unwrap().has_fingerprint());
    // A v4-mapped IPv6 source (dual-stack socket) is answered as IPv4.
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 8).to_ipv6_mapped()),
        6000,
    );
    let answer = server.handle(now, local, mapped, &bare).unwrap();
    assert_eq!(
        decode(&answer).unwrap().mapped_address(),
        Some(addr("192.0.2.8:6000"))
    );

    // SOFTWARE only when the 2x budget allows: not for a bare request, yes for one with
    // FINGERPRINT (20 + 12 + 12 + 8 = 52 <= 56).
    let mut conf = StunServerConfig::default();
    conf.software = Some("pipes".into());
    let answer = StunServer::new(conf.clone())
        .handle(now, local, v4, &bare)
        .unwrap();
    assert_eq!(answer.len(), 32);
    let answer = StunServer::new(conf)
        .handle(now, local, v4, &with_fp)
        .unwrap();
    assert!(decode(&answer)
        .unwrap()
        .attributes
        .contains(&Attribute::Software("pipes".into())));
}

#[test]
fn server_answers_unknown_required_attributes_with_420() {
    let now = epoch();
    let mut server = StunServer::new(StunServerConfig::default());
    let mut request = Message::binding_request(TransactionId([2; 12]));
    request.attributes.push(Attribute::Unknown {
        typ: 0x7001,
        value: Default::default(),
    });
    request.attributes.push(Attribute::Unknown {
        typ: 0xC001,
        value: Default::default(),
    });
    let raw = request.encode();
    let answer = server
        .handle(now, addr("198.51.100.1:3478"), addr("192.0.2.7:5555"), &raw)
        .unwrap();
    let msg = decode(&answer).unwrap();
    assert_eq!(msg.class, Class::Error);
    assert_eq!(msg.error_code(), Some((420, "")));
    assert!(msg
        .attributes
        .contains(&Attribute::UnknownAttributes(vec![0x7001])));
    assert!(
        answer.len() * 2 <= raw.len() * 3,
        "{} vs {}",
        answer.len(),
        raw.len()
    );
    assert_eq!(server.stats().answered_unknown_attribute, 1);
}

#[test]
fn server_drops_everything_but_binding_requests() {
    let now = epoch();
    let mut server = StunServer::new(StunServerConfig::default());
    let (local, from) = (addr("198.51.100.1:3478"), addr("192.0.2.7:5555"));
    let id = TransactionId([3; 12]);
    let mut junk: Vec<Vec<u8>> = Vec::new();
    for class in [Class::Indication, Class::Success, Class::Error] {
        junk.push(Message::new(class, Method::Binding, id).encode().to_vec());
    }
    let mut success = Message::new(Class::Success, Method::Binding, id);
    success.attributes.push(Attribute::XorMappedAddress(from));
    junk.push(success.encode().to_vec());
    junk.push(
        Message::new(Class::Request, Method::Other(0x003), id)
            .encode()
            .to_vec(),
    );
    let good = Message::binding_request(id).encode().to_vec();
    // (A wrong magic cookie is a classic RFC 3489 request now, answered: see stun_nat.rs.)
    let mut bad_len = good.clone();
    bad_len[3] = 4;
    let mut top_bits = good.clone();
    top_bits[0] |= 0x80;
    junk.extend([
        bad_len,
        top_bits,
        good[..19].to_vec(),
        b"GET / HTTP/1.1\r\n\r\n    ".to_vec(),
    ]);
    junk.push(vec![0; 1500]);
    let mut bad_fingerprint = Message::binding_request(id)
        .encode_with(&EncodeOptions {
            integrity_key: None,
            fingerprint: true,
        })
        .to_vec();
    bad_fingerprint[27] ^= 1;
    junk.push(bad_fingerprint);
    for datagram in &junk {
        assert_eq!(
            server.handle(now, local, from, datagram),
            None,
            "{datagram:02x?}"
        );
    }
    for port in BLOCKED {
        assert_eq!(
            server.handle(now, local, SocketAddr::new(from.ip(), port), &good),
            None
        );
    }
    for ip in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ] {
        assert_eq!(
            server.handle(now, local, SocketAddr::new(ip, 5555), &good),
            None
        );
    }
    let s = server.stats();
    assert_eq!(s.bytes_out, 0);
    assert_eq!((s.answered, s.answered_unknown_attribute), (0, 0));
    assert_eq!(s.dropped_not_request, 4);
    assert_eq!(s.dropped_unsupported_method, 1);
    assert_eq!(s.dropped_not_stun, 3);
    assert_eq!(s.dropped_malformed, 3); // 1,500 zero bytes: a classic header, wrong length
    assert_eq!(s.dropped_blocked_source, 14);
    assert_eq!(s.received, junk.len() as u64 + 14);
    assert_eq!(
        server.tracked_sources(),
        0,
        "dropped input never touches the rate table"
    );
}

#[test]
fn server_rate_limit_refills_and_table_is_bounded() {
    let t0 = epoch();
    let mut conf = StunServerConfig::default();
    conf.max_sources = 4;
    let mut server = StunServer::new(conf);
    let local = addr("198.51.100.1:3478");
    let req = Message::binding_request(TransactionId([4; 12])).encode();
    let from = addr("192.0.2.7:5555");
    let answered = (0..50)
        .filter(|_| server.handle(t0, local, from, &req).is_some())
        .count();
    assert_eq!(answered, 20);
    // Other ports of the same IP share the bucket.
    assert!(server
        .handle(t0, local, addr("192.0.2.7:6666"), &req)
        .is_none());
    assert!(server
        .handle(t0 + Duration::from_millis(99), local, from, &req)
        .is_none());
    assert!(server
        .handle(t0 + Duration::from_millis(100), local, from, &req)
        .is_some());
    assert!(server
        .handle(t0 + Duration::from_millis(100), local, from, &req)
        .is_none());
    for i in 1..=10 {
        server.handle(
            t0,
            local,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)), 4000),
            &req,
        );
    }
    assert_eq!(server.tracked_sources(), 4);
    assert_eq!(server.stats().sources_evicted, 7);
}

/// hardening.md §3 row 4: 100,000 spoofed 20-byte requests from 1,000 sources in 1 s.
#[test]
fn amplification_bound() {
    for v6 in [false, true] {
        let t0 = epoch();
        let mut server = StunServer::new(StunServerConfig::default());
        let local = if v6 {
            addr("[2001:db8::1]:3478")
        } else {
            addr("198.51.100.1:3478")
        };
        let sources: Vec<SocketAddr> = (0..1000u32)
            .map(|i| {
                let port = if i % 10 == 0 {
                    BLOCKED[(i / 10) as usize % BLOCKED.len()]
                } else {
                    1024 + i as u16
                };
                let ip = if v6 {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, i as u16, 0, 0, 0, 1))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i * 256))
                };
                SocketAddr::new(ip, port)
            })
            .collect();
        let mut answers = vec![0u32; sources.len()];
        let (mut bytes_in, mut bytes_out) = (0usize, 0usize);
        for k in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(k) * 10);
            let src = (k % 1000) as usize;
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&k.to_be_bytes());
            let req = Message::binding_request(TransactionId(id)).encode();
            bytes_in += req.len();
            if let Some(answer) = server.handle(now, local, sources[src], &req) {
                bytes_out += answer.len();
                answers[src] += 1;
            }
        }
        assert_eq!(bytes_in, 2_000_000);
        assert!(
            bytes_out as f64 <= 2.2 * bytes_in as f64,
            "{bytes_out} > 2.2 × {bytes_in}"
        );
        for (i, n) in answers.iter().enumerate() {
            if i % 10 == 0 {
                assert_eq!(*n, 0, "blocked port {} answered", sources[i]);
            } else {
                // burst 20 + 10/s over the ~1 s window
                assert!((20..=30).contains(n), "source {i}: {n} answers");
            }
        }
        let s = server.stats();
        assert_eq!(s.bytes_out as usize, bytes_out);
        assert_eq!(s.dropped_blocked_source, 10_000);
        eprintln!(
            "amplification v6={v6}: {bytes_out} B out / {bytes_in} B in = {:.3}, {} answered, {} rate-limited",
            bytes_out as f64 / bytes_in as f64,
            s.answered,
            s.dropped_rate_limited
        );
    }
}
