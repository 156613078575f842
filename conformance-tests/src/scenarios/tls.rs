//! TLS on real sockets: echo, verification failures (typed), the named opt-out, mutual TLS,
//! the handshake deadline, truncation, and a large transfer both ways. Certificates are made
//! at test time (rcgen).

use std::sync::atomic::{AtomicU32, Ordering};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use pipe_io::tls::{CertificateDer, PrivateKeyDer, ServerName};
use pipe_io::{Tls, TlsClient, TlsError, TlsServer};

use super::prelude::*;

/// A self-signed certificate for `names`, with a subject of its own.
#[derive(Debug)]
pub struct Cert {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
    /// Both, in PEM.
    pub pem: (String, String),
}

/// Make a certificate for `names` (e.g. `["localhost"]`).
pub fn cert(names: &[&str]) -> Cert {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("names");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("pipes conformance {}", N.fetch_add(1, Ordering::Relaxed)),
    );
    let key = rcgen::KeyPair::generate().expect("key");
    let c = params.self_signed(&key).expect("self-signed");
    Cert {
        der: c.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        pem: (c.pem(), key.serialize_pem()),
    }
}

fn server_conf(c: &Cert) -> Conf {
    Conf {
        tls: Some(
            TlsServer::new(vec![c.der.clone()], c.key.clone_key())
                .build()
                .unwrap(),
        ),
        ..Conf::default()
    }
}

fn client_tls(trust: &Cert, name: Option<&str>) -> TlsClient {
    let t = TlsClient::with_roots([trust.der.clone()]);
    match name {
        Some(n) => t.server_name(ServerName::try_from(n.to_string()).unwrap()),
        None => t,
    }
}

fn with_tls(tls: Tls) -> Conf {
    Conf {
        tls: Some(tls),
        ..Conf::default()
    }
}

/// A TLS echo server on loopback.
async fn tls_echo<R: Runtime>(rt: R, conf: Conf) -> Pipe<R> {
    PipeBuilder::new(rt, Proto::Tcp)
        .bind(lo0(Family::V4))
        .conf(conf)
        .on_message(|m, p| async move {
            let _ = p.send(&m.data).await;
        })
        .open()
        .await
        .unwrap()
}

/// Echo over TLS, the server name taken from the destination (`localhost`), and the
/// bytes on the wire are not the plaintext.
pub async fn echo<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let server = tls_echo(srv, server_conf(&c)).await;
    let port = server.local_addr().unwrap().port();
    let client = PipeBuilder::new(cli, Proto::Tcp)
        .dest(("localhost", port))
        .conf(with_tls(client_tls(&c, None).build().unwrap()))
        .open()
        .await
        .expect("TLS client opens once the handshake is done");
    round_trip(&client, b"hello over TLS").await;
    client.close().await;
    server.close().await;
}

/// Verification failures are typed and fail `open()`: an untrusted certificate, a wrong name.
/// The named opt-out accepts a self-signed certificate.
pub async fn verification<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let server = tls_echo(srv, server_conf(&c)).await;
    let dest = server.local_addr().unwrap();
    let open = |tls: Tls| {
        PipeBuilder::new(cli.clone(), Proto::Tcp)
            .dest(dest)
            .conf(with_tls(tls))
            .open()
    };
    let other = cert(&["localhost"]);
    match open(client_tls(&other, Some("localhost")).build().unwrap()).await {
        Err(OpenError::Tls(TlsError::UnknownIssuer)) => {}
        other => panic!("untrusted certificate: {other:?}"),
    }
    match open(client_tls(&c, Some("wrong.test")).build().unwrap()).await {
        Err(OpenError::Tls(TlsError::WrongName)) => {}
        other => panic!("wrong name: {other:?}"),
    }
    let any = TlsClient::with_roots([])
        .dangerous_accept_any_certificate()
        .build()
        .unwrap();
    let p = open(any)
        .await
        .expect("the opt-out accepts a self-signed certificate");
    round_trip(&p, b"self-signed").await;
    p.close().await;
    server.close().await;
}

/// Mutual TLS: a client certificate the server trusts is accepted, another is refused.
pub async fn mutual<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let good = cert(&["client"]);
    let bad = cert(&["client"]);
    let mut roots = pipe_io::pipe_core::rustls::RootCertStore::empty();
    roots.add(good.der.clone()).unwrap();
    let conf = with_tls(
        TlsServer::new(vec![c.der.clone()], c.key.clone_key())
            .require_client_cert(roots)
            .build()
            .unwrap(),
    );
    let server = tls_echo(srv, conf).await;
    let dest = server.local_addr().unwrap();
    let open = |id: &Cert| {
        let tls = client_tls(&c, Some("localhost"))
            .client_cert(vec![id.der.clone()], id.key.clone_key())
            .build()
            .unwrap();
        PipeBuilder::new(cli.clone(), Proto::Tcp)
            .dest(dest)
            .conf(with_tls(tls))
            .open()
    };
    let p = open(&good).await.expect("a trusted client certificate");
    round_trip(&p, b"mutual").await;
    p.close().await;
    // TLS 1.3: the client finishes before the server checks its certificate, so the refusal
    // may come as the server's alert on the first read instead of at open.
    match open(&bad).await {
        Err(OpenError::Tls(_)) => {}
        Ok(p) => {
            let _ = p.send(b"x").await;
            within(WAIT, "the refused client ends", p.closed()).await;
        }
        Err(other) => panic!("untrusted client certificate: {other:?}"),
    }
    server.close().await;
}

/// A client that connects and sends nothing (or half a record header) is closed at the
/// handshake deadline with `TlsError::HandshakeTimeout`.
pub async fn handshake_deadline<R: Runtime>(rt: R) {
    let c = cert(&["localhost"]);
    let ends: Log<EndReason> = Log::new();
    let log = ends.clone();
    let deadline = Duration::from_millis(400);
    let server = PipeBuilder::new(rt, Proto::Tcp)
        .bind(lo0(Family::V4))
        .conf(Conf {
            ssl_handshake: deadline,
            ..server_conf(&c)
        })
        .on_end(move |r, _| {
            let log = log.clone();
            async move { log.push(r) }
        })
        .open()
        .await
        .unwrap();
    let start = Instant::now();
    let mut silent = raw_tcp(server.local_addr().unwrap()).await;
    let mut partial = raw_tcp(server.local_addr().unwrap()).await;
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    for s in [&mut silent, &mut partial] {
        // At most an alert record (close_notify: content type 21), then the close.
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match within(WAIT, "closed at the deadline", s.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(got.is_empty() || got[0] == 21, "only an alert: {got:?}");
    }
    assert_at_least(start.elapsed(), deadline, 0.9, "handshake deadline");
    let got = ends.wait_len(2).await;
    assert!(
        got.iter()
            .all(|r| *r == EndReason::Tls(TlsError::HandshakeTimeout)),
        "{got:?}"
    );
    server.close().await;
}

/// A peer that ends the connection without `close_notify` is reported as truncation; one
/// that closes cleanly is `PeerClosed`.
pub async fn truncation<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let ends: Log<EndReason> = Log::new();
    let log = ends.clone();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .conf(server_conf(&c))
        .on_end(move |r, _| {
            let log = log.clone();
            async move { log.push(r) }
        })
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    // Clean: close() sends close_notify.
    let p = PipeBuilder::new(cli, Proto::Tcp)
        .dest(dest)
        .conf(with_tls(client_tls(&c, Some("localhost")).build().unwrap()))
        .open()
        .await
        .unwrap();
    p.close().await;
    assert_eq!(ends.wait_len(1).await, [EndReason::PeerClosed]);
    // Truncated: a rustls client over a plain socket that shuts it without close_notify.
    let tls = client_tls(&c, Some("localhost")).build().unwrap();
    let Tls::Client { config, .. } = tls else {
        unreachable!()
    };
    // On a blocking thread, awaited: the server may run on this very thread (tokio's
    // current-thread runtime).
    smol::unblock(move || {
        use std::io::Write;
        let sock = std::net::TcpStream::connect(dest).unwrap();
        let conn = pipe_io::pipe_core::rustls::ClientConnection::new(
            config,
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut tls = pipe_io::pipe_core::rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"cut short").unwrap();
        tls.flush().unwrap();
        tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await;
    let got = ends.wait_len(2).await;
    assert_eq!(got[1], EndReason::Tls(TlsError::Truncated));
    server.close().await;
}

/// 64 MiB through a TLS echo both ways, byte-exact.
pub async fn bulk<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let server = tls_echo(srv, server_conf(&c)).await;
    // The client's queue holds the whole echo: on a loaded machine its reader may fall
    // behind the echo by more than the default caps (1,024 messages, 16 MiB), and the queue
    // would then drop its oldest messages, as documented; this test is about the bytes.
    let conf = Conf {
        max_qsize: 0,
        max_queue_bytes: 128 << 20,
        ..with_tls(client_tls(&c, Some("localhost")).build().unwrap())
    };
    let client = PipeBuilder::new(cli, Proto::Tcp)
        .dest(server.local_addr().unwrap())
        .conf(conf)
        .open()
        .await
        .unwrap();
    const TOTAL: usize = 64 << 20;
    let chunk: Vec<u8> = (0..(64 << 10)).map(|i| (i % 251) as u8).collect();
    let send = async {
        let mut sent = 0;
        while sent < TOTAL {
            client.send(&chunk).await.unwrap();
            sent += chunk.len();
        }
    };
    let recv = async {
        let mut got = 0usize;
        while got < TOTAL {
            let m = within(WAIT, "echoed bytes", client.recv_timeout(WAIT))
                .await
                .unwrap();
            let Some(m) = m else {
                panic!(
                    "echo stalled at {got}: client {:?} server conns {:?}",
                    client.stats(),
                    server
                        .connections()
                        .iter()
                        .map(|c| c.stats())
                        .collect::<Vec<_>>()
                );
            };
            for (i, b) in m.data.iter().enumerate() {
                assert_eq!(*b, ((got + i) % (64 << 10) % 251) as u8, "byte {}", got + i);
            }
            got += m.data.len();
        }
        got
    };
    let (_, got) = futures_lite::future::zip(send, recv).await;
    assert_eq!(got, TOTAL);
    client.close().await;
    server.close().await;
}

/// A message larger than the outbound buffer goes alone and whole over TLS, both ways:
/// buffers of 16 KiB, one 1 MiB message and a small one after it, echoed byte-exact. (TLS
/// once wrote such a message in part and reported it as not sent, so the retry sent its
/// start again.)
pub async fn larger_than_the_buffer<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let small = |conf: Conf| Conf {
        max_out_bytes: 16 << 10,
        max_qsize: 0,
        max_queue_bytes: 8 << 20,
        ..conf
    };
    let server = tls_echo(srv, small(server_conf(&c))).await;
    let client = PipeBuilder::new(cli, Proto::Tcp)
        .dest(server.local_addr().unwrap())
        .conf(small(with_tls(
            client_tls(&c, Some("localhost")).build().unwrap(),
        )))
        .open()
        .await
        .unwrap();
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 241) as u8).collect();
    within(WAIT, "the large send", client.send(&big))
        .await
        .unwrap();
    within(WAIT, "the small send", client.send(b"and after it"))
        .await
        .unwrap();
    let mut want = big;
    want.extend_from_slice(b"and after it");
    let got = within(WAIT * 2, "the echo", recv_bytes(&client, want.len())).await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the echo differs from what was sent");
    client.close().await;
    server.close().await;
}

/// TLS composes with the rest: a client wrapping an existing connected socket, with dedup on
/// and a subscription filter; the server's callback sees each message once.
pub async fn wrapped_socket_dedup_and_filters<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let seen: Log<Vec<u8>> = Log::new();
    let log = seen.clone();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .conf(Conf {
            enable_msg_ids: true,
            framing: Framing::LengthPrefixed { max: 1024 },
            ..server_conf(&c)
        })
        .on_message(move |m, p| {
            let log = log.clone();
            async move {
                log.push(m.data.to_vec());
                let _ = p.send(&m.data).await;
            }
        })
        .open()
        .await
        .unwrap();
    let sock = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let client = PipeBuilder::new(cli, Proto::Tcp)
        .socket(sock)
        .conf(Conf {
            framing: Framing::LengthPrefixed { max: 1024 },
            ..with_tls(client_tls(&c, Some("localhost")).build().unwrap())
        })
        .open()
        .await
        .expect("TLS over a wrapped socket");
    let only_b = client.subscribe(Filter::pattern("^b").unwrap()).unwrap();
    for m in [&b"a1"[..], b"b1", b"a1", b"b2"] {
        client.send(m).await.unwrap();
    }
    // The server's dedup drops the repeated "a1": three messages reach its callback.
    let got = seen.wait_len(3).await;
    assert_eq!(got, [b"a1".to_vec(), b"b1".to_vec(), b"b2".to_vec()]);
    let m1 = within(WAIT, "b1", client.recv_on(only_b, Some(WAIT)))
        .await
        .unwrap()
        .unwrap();
    let m2 = within(WAIT, "b2", client.recv_on(only_b, Some(WAIT)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&m1.data[..], &m2.data[..]), (&b"b1"[..], &b"b2"[..]));
    client.close().await;
    server.close().await;
}
