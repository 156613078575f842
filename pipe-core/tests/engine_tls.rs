//! TLS inside the engine, in memory: a client pipe and an accepted connection of one engine
//! exchange their transmits directly. Certificates are made at test time (rcgen).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pipe_core::rustls_types::*;
use pipe_core::{
    Conf, EndReason, Engine, Event, Framing, LinkTarget, PipeId, SendError, SubId, Tls, TlsClient,
    TlsError, TlsServer,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Cert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A self-signed certificate for `names`, with a subject of its own (as two real parties'
/// certificates would have).
fn cert(names: &[&str]) -> Cert {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("pipes test {}", N.fetch_add(1, Ordering::Relaxed)),
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let c = params.self_signed(&key).unwrap();
    Cert {
        der: c.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

fn server_tls(c: &Cert) -> Tls {
    TlsServer::new(vec![c.der.clone()], c.key.clone_key())
        .build()
        .unwrap()
}

fn client_tls(trust: &Cert, name: &str) -> Tls {
    TlsClient::with_roots([trust.der.clone()])
        .server_name(ServerName::try_from(name.to_string()).unwrap())
        .build()
        .unwrap()
}

/// One engine, a TLS listener, a client, and the accepted connection; `run` moves bytes.
struct Pair {
    e: Engine,
    now: Instant,
    listener: PipeId,
    client: PipeId,
    conn: PipeId,
    events: Vec<Event>,
}

impl Pair {
    fn new(server: Conf, client: Conf) -> Pair {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut e = Engine::new(7);
        let listener = e
            .open_listener(now, sa("10.0.0.1:443"), server, false)
            .unwrap();
        let client = e
            .open_tcp(now, sa("10.0.0.2:5000"), sa("10.0.0.1:443"), client, false)
            .unwrap();
        let conn = e
            .handle_accepted(now, listener, sa("10.0.0.1:443"), sa("10.0.0.2:5000"))
            .unwrap();
        let mut p = Pair {
            e,
            now,
            listener,
            client,
            conn,
            events: Vec::new(),
        };
        p.e.pop_accepted(listener).unwrap();
        p.e.subscribe(conn, pipe_core::Filter::all()).unwrap();
        p.run();
        p
    }

    /// Move transmits both ways until nothing moves; collect events.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for (from, to) in [(self.client, self.conn), (self.conn, self.client)] {
                while let Some(t) = self.e.poll_transmit_for(from) {
                    moved = true;
                    self.e.handle_stream(self.now, to, &t.payload);
                }
            }
            while let Some(ev) = self.e.poll_event() {
                moved = true;
                self.events.push(ev);
            }
            if !moved {
                break;
            }
        }
    }

    fn ups(&self) -> Vec<PipeId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Up { pipe } if *pipe != self.listener => Some(*pipe),
                _ => None,
            })
            .collect()
    }

    fn end_of(&self, pipe: PipeId) -> Option<EndReason> {
        self.events.iter().find_map(|e| match e {
            Event::End { pipe: p, reason } if *p == pipe => Some(reason.clone()),
            _ => None,
        })
    }

    fn recv_all(&mut self, pipe: PipeId) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(Some(m)) = self.e.recv(pipe, SubId::ALL) {
            out.extend_from_slice(&m.data);
        }
        out
    }
}

fn confs(server: Tls, client: Tls) -> (Conf, Conf) {
    (
        Conf {
            tls: Some(server),
            ..Conf::default()
        },
        Conf {
            tls: Some(client),
            ..Conf::default()
        },
    )
}

/// One engine with a TLS listener (`server`) and a client (`client`) whose connection is not
/// accepted yet: (engine, now, listener, client).
fn before_accept(server: Conf, client: Conf) -> (Engine, Instant, PipeId, PipeId) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut e = Engine::new(1);
    let l = e
        .open_listener(now, sa("10.0.0.1:443"), server, false)
        .unwrap();
    let k = e
        .open_tcp(now, sa("10.0.0.2:5000"), sa("10.0.0.1:443"), client, false)
        .unwrap();
    (e, now, l, k)
}

/// Move transmits both ways between each (client, accepted connection) pair of one engine
/// until nothing is left (ten passes: a handshake needs three).
fn shuttle(e: &mut Engine, now: Instant, pairs: &[(PipeId, PipeId)]) {
    for _ in 0..10 {
        for &(x, y) in pairs {
            for (from, to) in [(x, y), (y, x)] {
                while let Some(t) = e.poll_transmit_for(from) {
                    e.handle_stream(now, to, &t.payload);
                }
            }
        }
    }
}

#[test]
fn handshake_then_data_both_ways_and_up_only_after_the_handshake() {
    let c = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    let mut p = Pair::new(s, k);
    let mut ups = p.ups();
    ups.sort();
    assert_eq!(
        ups,
        [p.client, p.conn],
        "both are up once the handshake is done"
    );
    p.e.send(p.now, p.client, b"hello over tls", None).unwrap();
    p.run();
    assert_eq!(p.recv_all(p.conn), b"hello over tls");
    p.e.send(p.now, p.conn, b"and back", None).unwrap();
    p.run();
    assert_eq!(p.recv_all(p.client), b"and back");
    // The bytes on the wire are not the plaintext.
    p.e.send(p.now, p.client, b"secret", None).unwrap();
    assert!(
        !p.e.send_waits_for_direct(p.client, pipe_core::DIRECT_MIN),
        "records queued, but a TLS send is never written from the caller's buffer"
    );
    let t = p.e.poll_transmit_for(p.client).unwrap();
    assert!(!t.payload.windows(6).any(|w| w == b"secret"));
}

#[test]
fn data_sent_before_the_handshake_is_buffered_then_delivered() {
    let c = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    let (mut e, now, l, k) = before_accept(s, k);
    e.send(now, k, b"early", None).unwrap();
    let conn = e
        .handle_accepted(now, l, sa("10.0.0.1:443"), sa("10.0.0.2:5000"))
        .unwrap();
    e.subscribe(conn, pipe_core::Filter::all()).unwrap();
    shuttle(&mut e, now, &[(k, conn)]);
    assert_eq!(
        &e.recv(conn, SubId::ALL).unwrap().unwrap().data[..],
        b"early"
    );
}

#[test]
fn framing_runs_over_tls() {
    let c = cert(&["pipes.test"]);
    let (mut s, mut k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    s.framing = Framing::LengthPrefixed { max: 1024 };
    k.framing = Framing::LengthPrefixed { max: 1024 };
    let mut p = Pair::new(s, k);
    for m in [&b"one"[..], b"", b"three"] {
        p.e.send(p.now, p.client, m, None).unwrap();
    }
    p.run();
    let got: Vec<Vec<u8>> = std::iter::from_fn(|| p.e.recv(p.conn, SubId::ALL).ok().flatten())
        .map(|m| m.data.to_vec())
        .collect();
    assert_eq!(got, [b"one".to_vec(), vec![], b"three".to_vec()]);
}

#[test]
fn an_untrusted_certificate_is_refused_with_a_typed_reason() {
    let c = cert(&["pipes.test"]);
    let other = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&other, "pipes.test"));
    let p = Pair::new(s, k);
    assert_eq!(
        p.end_of(p.client),
        Some(EndReason::Tls(TlsError::UnknownIssuer))
    );
    assert!(
        matches!(
            p.end_of(p.conn),
            Some(EndReason::Tls(TlsError::PeerAlert(_)))
        ),
        "the server hears the client's alert: {:?}",
        p.end_of(p.conn)
    );
    assert!(p.ups().is_empty(), "nobody is up");
}

#[test]
fn a_wrong_name_is_refused() {
    let c = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&c, "other.test"));
    let p = Pair::new(s, k);
    assert_eq!(
        p.end_of(p.client),
        Some(EndReason::Tls(TlsError::WrongName))
    );
}

#[test]
fn the_named_opt_out_accepts_a_self_signed_certificate() {
    let c = cert(&["anything"]);
    let k = TlsClient::with_roots([])
        .dangerous_accept_any_certificate()
        .build()
        .unwrap();
    let (s, k) = confs(server_tls(&c), k);
    let p = Pair::new(s, k);
    assert_eq!(p.ups().len(), 2);
    assert_eq!(p.end_of(p.client), None);
}

#[test]
fn mutual_tls_accepted_and_refused() {
    let server = cert(&["pipes.test"]);
    let good = cert(&["client"]);
    let bad = cert(&["client"]);
    let mut roots = pipe_core::rustls::RootCertStore::empty();
    roots.add(good.der.clone()).unwrap();
    let s = TlsServer::new(vec![server.der.clone()], server.key.clone_key())
        .require_client_cert(roots)
        .build()
        .unwrap();
    let client = |id: &Cert| {
        TlsClient::with_roots([server.der.clone()])
            .server_name(ServerName::try_from("pipes.test").unwrap())
            .client_cert(vec![id.der.clone()], id.key.clone_key())
            .build()
            .unwrap()
    };
    let (sc, kc) = confs(s.clone(), client(&good));
    let p = Pair::new(sc, kc);
    assert_eq!(p.ups().len(), 2, "a trusted client certificate is accepted");
    let (sc, kc) = confs(s.clone(), client(&bad));
    let p = Pair::new(sc, kc);
    assert_eq!(
        p.end_of(p.conn),
        Some(EndReason::Tls(TlsError::UnknownIssuer))
    );
    let no_cert = TlsClient::with_roots([server.der.clone()])
        .server_name(ServerName::try_from("pipes.test").unwrap())
        .build()
        .unwrap();
    let (sc, kc) = confs(s, no_cert);
    let p = Pair::new(sc, kc);
    assert!(matches!(
        p.end_of(p.conn),
        Some(EndReason::Tls(TlsError::BadCertificate(_)))
    ));
}

#[test]
fn close_sends_close_notify_and_the_peer_ends_cleanly() {
    let c = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    let mut p = Pair::new(s, k);
    p.e.close(p.now, p.client);
    p.run();
    assert_eq!(p.end_of(p.client), Some(EndReason::Local));
    // `accept()` handed the connection out: its user holds it like a `TcpStream`, so the
    // `close_notify` ends its reading only, until the user waits for its end.
    assert!(p.e.is_read_closed(p.conn));
    assert_eq!(p.end_of(p.conn), None);
    p.e.user_acts(p.conn);
    p.run();
    assert_eq!(p.end_of(p.conn), Some(EndReason::PeerClosed));
}

#[test]
fn a_fin_without_close_notify_is_truncation() {
    let c = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    let mut p = Pair::new(s, k);
    p.e.handle_peer_closed(p.now, p.conn, false);
    p.run();
    assert_eq!(p.end_of(p.conn), Some(EndReason::Tls(TlsError::Truncated)));
}

#[test]
fn the_handshake_deadline_ends_a_silent_client() {
    let c = cert(&["pipes.test"]);
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut e = Engine::new(1);
    let l = e
        .open_listener(
            now,
            sa("10.0.0.1:443"),
            Conf {
                tls: Some(server_tls(&c)),
                ..Conf::default()
            },
            false,
        )
        .unwrap();
    let conn = e
        .handle_accepted(now, l, sa("10.0.0.1:443"), sa("10.0.0.2:5000"))
        .unwrap();
    // Four bytes of a five-byte record header, then nothing.
    e.handle_stream(now, conn, &[0x16, 0x03, 0x01, 0x00]);
    while e.poll_event().is_some() {}
    let hs = Conf::default().ssl_handshake;
    assert_eq!(e.poll_timeout(), Some(now + hs));
    e.handle_timeout(now + hs - Duration::from_millis(1));
    assert!(std::iter::from_fn(|| e.poll_event()).all(|ev| !matches!(ev, Event::End { .. })));
    e.handle_timeout(now + hs);
    let ends: Vec<_> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::End { pipe, reason } => Some((pipe, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [(conn, EndReason::Tls(TlsError::HandshakeTimeout))]);
}

#[test]
fn handshakes_in_progress_are_capped_per_listener() {
    let c = cert(&["pipes.test"]);
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut e = Engine::new(1);
    let l = e
        .open_listener(
            now,
            sa("10.0.0.1:443"),
            Conf {
                tls: Some(server_tls(&c)),
                max_handshakes: 2,
                ..Conf::default()
            },
            false,
        )
        .unwrap();
    let accept = |e: &mut Engine, port: u16| {
        e.handle_accepted(
            now,
            l,
            sa("10.0.0.1:443"),
            SocketAddr::from(([10, 0, 0, 2], port)),
        )
    };
    let a = accept(&mut e, 1).unwrap();
    let b = accept(&mut e, 2).unwrap();
    while e.poll_event().is_some() {}
    // At the cap, a newcomer is accepted and the oldest handshake gives way.
    let c = accept(&mut e, 3).unwrap();
    let ends: Vec<_> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::End { pipe, reason } => Some((pipe, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [(a, EndReason::Tls(TlsError::HandshakeEvicted))]);
    assert_eq!(e.stats(l).unwrap().handshakes_evicted, 1);
    // The next newcomer evicts b, never c before b.
    accept(&mut e, 4).unwrap();
    let ends: Vec<_> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::End { pipe, .. } => Some(pipe),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [b]);
    assert!(e.state(c).is_some());
}

#[test]
fn tls_conf_is_checked_against_the_pipe_kind() {
    let c = cert(&["pipes.test"]);
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut e = Engine::new(1);
    let server = Conf {
        tls: Some(server_tls(&c)),
        ..Conf::default()
    };
    let client = Conf {
        tls: Some(client_tls(&c, "pipes.test")),
        ..Conf::default()
    };
    assert!(e
        .open_tcp(now, sa("10.0.0.2:1"), sa("10.0.0.1:2"), server, false)
        .is_err());
    assert!(e
        .open_listener(now, sa("10.0.0.1:2"), client.clone(), false)
        .is_err());
    assert!(e
        .open_udp(now, sa("10.0.0.1:3"), Some(sa("10.0.0.2:3")), client, false)
        .is_err());
}

#[test]
fn alpn_is_negotiated() {
    let c = cert(&["pipes.test"]);
    let s = TlsServer::new(vec![c.der.clone()], c.key.clone_key())
        .alpn([b"http/1.1".to_vec()])
        .build()
        .unwrap();
    let k = TlsClient::with_roots([c.der.clone()])
        .server_name(ServerName::try_from("pipes.test").unwrap())
        .alpn([b"h2".to_vec(), b"http/1.1".to_vec()])
        .build()
        .unwrap();
    let (sc, kc) = confs(s, k);
    let mut p = Pair::new(sc, kc);
    assert_eq!(p.e.alpn(p.client), Some(b"http/1.1".to_vec()));
    assert_eq!(p.e.alpn(p.conn), Some(b"http/1.1".to_vec()));
}

/// One message larger than the outbound buffer is taken alone and whole, as on a plain pipe:
/// rustls's own output limit once took only its first part and reported `WouldBlock`, so
/// the caller's retry sent that part again (and the message itself never fitted).
#[test]
fn a_message_larger_than_the_buffer_goes_alone_and_whole() {
    let c = cert(&["pipes.test"]);
    let (mut s, mut k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    s.max_out_bytes = 4096;
    k.max_out_bytes = 4096;
    let mut p = Pair::new(s, k);
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    p.e.send(p.now, p.client, &big, None).unwrap();
    assert!(
        p.e.out_bytes(p.client) > big.len(),
        "all of it is encrypted and queued"
    );
    assert_eq!(
        p.e.send(p.now, p.client, b"x", None),
        Err(SendError::WouldBlock),
        "nothing more while it is queued"
    );
    p.run();
    assert_eq!(p.recv_all(p.conn), big);
    p.e.send(p.now, p.client, b"x", None).unwrap();
    p.run();
    assert_eq!(p.recv_all(p.conn), b"x");
}

/// Plaintext sent while the handshake runs counts against `max_out_bytes` (rustls holds it,
/// not the transmit queue), each send is taken whole or refused whole, and what was taken
/// arrives once, in order, when the handshake is done.
#[test]
fn sends_during_the_handshake_count_against_the_buffer_and_are_all_or_nothing() {
    let c = cert(&["pipes.test"]);
    let (s, mut k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    k.max_out_bytes = 1000;
    let (mut e, now, l, k) = before_accept(s, k);
    let hello = e.out_bytes(k);
    assert!(hello > 0, "the ClientHello is queued");
    let mut taken = Vec::new();
    let mut refused = 0;
    for i in 0..6u8 {
        let m = vec![b'a' + i; 200];
        match e.send(now, k, &m, None) {
            Ok(()) => taken.extend_from_slice(&m),
            Err(SendError::WouldBlock) => refused += 1,
            Err(other) => panic!("send {i}: {other}"),
        }
    }
    assert!(refused > 0, "the buffer filled ({} taken)", taken.len());
    assert_eq!(e.out_bytes(k), hello + taken.len(), "counted as queued");
    assert!(hello + taken.len() <= 1000);
    let conn = e
        .handle_accepted(now, l, sa("10.0.0.1:443"), sa("10.0.0.2:5000"))
        .unwrap();
    e.subscribe(conn, pipe_core::Filter::all()).unwrap();
    shuttle(&mut e, now, &[(k, conn)]);
    let mut got = Vec::new();
    while let Ok(Some(m)) = e.recv(conn, SubId::ALL) {
        got.extend_from_slice(&m.data);
    }
    assert_eq!(got, taken, "each taken send once, no refused one in part");
    assert_eq!(e.out_bytes(k), 0, "all of it went out");
}

/// Two TLS connections of one listener linked to each other (a pairing relay): what the
/// source decrypts from one read is forwarded whole, frame by frame, and each frame becomes
/// a record of its own at the target. With `Delimited` framing an empty message is its 1-byte
/// delimiter, so 16 KiB of newlines (one record in) make 16,384 records of 23 bytes out: the
/// most a read can grow, which `within_caps` allows for each local source of a stream pipe
/// (23 × the larger of `reader_limit` and a TLS record's 16 KiB, here with a `reader_limit`
/// of 512). None is dropped, the target's session stays whole, and the source pauses.
#[test]
fn a_local_link_between_tls_connections_forwards_a_read_whole_and_pauses_its_source() {
    let c = cert(&["pipes.test"]);
    let framing = Framing::Delimited {
        delim: bytes::Bytes::from_static(b"\n"),
        max: 1024,
    };
    let (mut s, k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    s.framing = framing.clone();
    s.max_out_bytes = 4096;
    s.reader_limit = 512;
    let k2 = Conf {
        framing,
        max_qsize: 0,
        ..k.clone()
    };
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut e = Engine::new(3);
    let l = e.open_listener(now, sa("10.0.0.1:443"), s, false).unwrap();
    let mut pair = |port: u16, conf: Conf| {
        let from = sa(&format!("10.0.0.2:{port}"));
        let client = e
            .open_tcp(now, from, sa("10.0.0.1:443"), conf, false)
            .unwrap();
        let conn = e.handle_accepted(now, l, sa("10.0.0.1:443"), from).unwrap();
        e.pop_accepted(l).unwrap();
        (client, conn)
    };
    let (c1, a) = pair(5001, k);
    let (c2, b) = pair(5002, k2);
    shuttle(&mut e, now, &[(c1, a), (c2, b)]);
    e.link(a, LinkTarget::Local(b), None, None).unwrap();
    std::iter::from_fn(|| e.poll_event()).for_each(drop);
    e.send(now, c1, &[b'\n'; 16_384], None).unwrap();
    let records: Vec<_> = std::iter::from_fn(|| e.poll_transmit_for(c1)).collect();
    assert_eq!(records.len(), 1, "one record in");
    e.handle_stream(now, a, &records[0].payload);
    assert_eq!(
        e.out_bytes(b),
        16_384 * 23,
        "16,384 records of 1 + 22 bytes out"
    );
    assert!(e.within_caps());
    assert!(std::iter::from_fn(|| e.poll_event())
        .any(|ev| matches!(ev, Event::Pause { pipe } if pipe == a)));
    assert_eq!(e.stats(b).unwrap().out_dropped, 0);
    // c2 reads them all: the target's session is whole.
    shuttle(&mut e, now, &[(c2, b)]);
    let mut empty = 0;
    while let Ok(Some(m)) = e.recv(c2, SubId::ALL) {
        assert!(m.data.is_empty());
        empty += 1;
    }
    assert_eq!(empty, 16_384);
}

/// A message a local link forwards into a raw TLS connection leaves as a record, encrypted
/// (a plain target sends the message's own bytes; a TLS one must never).
#[test]
fn a_message_forwarded_into_a_raw_tls_connection_is_encrypted() {
    let c = cert(&["pipes.test"]);
    let (s, k) = confs(server_tls(&c), client_tls(&c, "pipes.test"));
    let mut p = Pair::new(s, k);
    assert_eq!(p.ups().len(), 2, "both ends up");
    let peer = sa("10.0.0.3:7000");
    let u =
        p.e.open_udp(
            p.now,
            sa("10.0.0.1:7000"),
            Some(peer),
            Conf::default(),
            false,
        )
        .unwrap();
    p.e.link(u, LinkTarget::Local(p.conn), None, None).unwrap();
    let msg = b"a forwarded message, never in the clear";
    p.e.handle_datagram(p.now, u, peer, msg);
    let t = p.e.poll_transmit_for(p.conn).unwrap();
    assert!(p.e.poll_transmit_for(p.conn).is_none(), "one record");
    assert_eq!(t.payload.len(), msg.len() + 22, "a TLS 1.3 record of it");
    assert!(!t.payload.windows(msg.len()).any(|w| w == msg));
    p.e.handle_stream(p.now, p.client, &t.payload);
    assert_eq!(p.recv_all(p.client), msg);
    assert_eq!(p.e.stats(u).unwrap().forwarded, 1);
}
