//! Half-close over TLS (close_notify semantics), on tokio, smol and the mixed pairs: a TLS
//! client pipe sends a request and shuts its write side (`close_notify`, then the FIN); the
//! server's pipe stream reads the request to its end, then answers 256 KiB and shuts down;
//! the client gets the whole answer, and both pipes end cleanly (no `Truncated`).

use std::time::Duration;

use conformance_tests::scenarios::tls::cert;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, StreamExt};
use pipe_io::tls::ServerName;
use pipe_io::{Conf, EndReason, PipeBuilder, Proto, Runtime, TlsClient, TlsServer};

const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(rt: &impl Runtime, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let deadline = rt.now() + WAIT;
    future::or(async { Some(fut.await) }, async {
        rt.sleep_until(deadline).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what}: not within {WAIT:?}"))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn tls_half_close<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let c = cert(&["localhost"]);
    let server_conf = Conf {
        tls: Some(
            TlsServer::new(vec![c.der.clone()], c.key.clone_key())
                .build()
                .unwrap(),
        ),
        ..Conf::default()
    };
    let server = PipeBuilder::new(srv.clone(), Proto::Tcp)
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .conf(server_conf)
        .open()
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let answer = pattern(256 * 1024);
    let client_conf = Conf {
        tls: Some(
            TlsClient::with_roots([c.der.clone()])
                .server_name(ServerName::try_from("localhost".to_string()).unwrap())
                .build()
                .unwrap(),
        ),
        ..Conf::default()
    };
    let client = PipeBuilder::new(cli.clone(), Proto::Tcp)
        .dest(addr)
        .conf(client_conf)
        .open()
        .await
        .expect("TLS handshake");
    let conn = within(&srv, "accept", server.accept()).await.unwrap();
    let (end_tx, end_rx) = smol::channel::unbounded();
    conn.add_end_cb(move |r, _| {
        let _ = end_tx.try_send(r);
        async {}
    });
    let mut stream = conn.into_stream().unwrap();

    client.send(b"request over TLS").await.unwrap();
    within(&cli, "client shutdown", client.shutdown())
        .await
        .expect("close_notify and FIN sent");

    let mut req = Vec::new();
    within(&srv, "request to its end", stream.read_to_end(&mut req))
        .await
        .expect("a clean end of the request (close_notify), not Truncated");
    assert_eq!(req, b"request over TLS");
    within(&srv, "answer", stream.write_all(&answer))
        .await
        .unwrap();
    within(&srv, "server shutdown", stream.close())
        .await
        .unwrap();

    let mut got = Vec::new();
    let mut msgs = client.messages();
    while let Some(m) = within(&cli, "answer in", msgs.next()).await {
        got.extend_from_slice(&m.data);
    }
    assert_eq!(got.len(), answer.len());
    assert!(got == answer, "the whole answer after our close_notify");
    within(&cli, "client closes", client.closed()).await;
    within(&srv, "server conn closes", stream.pipe().closed()).await;
    let reason = within(&srv, "the connection's end callback", end_rx.recv()).await;
    assert_eq!(
        reason,
        Ok(EndReason::PeerClosed),
        "a clean end, not Truncated"
    );
    server.close().await;
}

#[test]
fn tls_half_close_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = pipe_tokio::Tokio::current();
        tls_half_close(t.clone(), t).await
    });
}

#[test]
fn tls_half_close_smol() {
    smol::block_on(tls_half_close(
        pipe_smol::Smol::default(),
        pipe_smol::Smol::default(),
    ));
}

#[test]
fn tls_half_close_tokio_server_smol_client() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(async { pipe_tokio::Tokio::current() });
    let _guard = rt.enter();
    smol::block_on(tls_half_close(t, pipe_smol::Smol::default()));
}
