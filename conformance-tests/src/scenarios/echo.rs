//! The seed's two examples in Rust, and echo servers with many clients.

use super::prelude::*;

/// Seed example 1: a TCP server whose message callback writes every message back down the
/// connection it arrived on; a client sends, receives the same bytes, and both close.
pub async fn tcp_echo<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let server = echo_server(srv, Proto::Tcp, fam).await;
    let dest = server.local_addr().expect("server address");
    assert_eq!(dest.ip(), lo(fam));
    assert_ne!(dest.port(), 0);
    let client = client(cli, Proto::Tcp, dest).await;
    assert_eq!(client.dest(), Some(dest));

    client.send(b"test msg.").await.expect("send");
    let out = recv_msg(&client).await;
    assert_eq!(&out.data[..], b"test msg.");
    assert_eq!(
        out.from, dest,
        "a TCP message comes from the connection's peer"
    );

    client.close().await;
    server.close().await;
    assert!(client.is_closed() && server.is_closed());
}

/// Seed example 2, against a local UDP echo server instead of a STUN server: send, and
/// retry up to 3 times when `recv` times out with `Ok(None)`.
pub async fn udp_echo<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let server = echo_server(srv, Proto::Udp, fam).await;
    let dest = server.local_addr().expect("server address");
    let pipe = client(cli, Proto::Udp, dest).await;

    let req = b"\x00\x01\x00\x00\x21\x12\xa4\x42 twelve bytes".to_vec();
    let mut resp = None;
    for _ in 0..3 {
        pipe.send(&req).await.expect("send");
        match pipe.recv_timeout(WAIT).await.expect("recv") {
            None => continue,
            Some(m) => {
                resp = Some(m);
                break;
            }
        }
    }
    let resp = resp.expect("an echo within 3 tries");
    assert_eq!(resp.data[..], req[..]);
    assert_eq!(resp.from, dest);

    pipe.close().await;
    server.close().await;
}

/// One UDP server answering three clients: each client gets its own replies and nothing else.
pub async fn udp_three_clients_no_crosstalk<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let server = echo_server(srv, Proto::Udp, fam).await;
    let dest = server.local_addr().expect("server address");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client(cli.clone(), Proto::Udp, dest).await);
    }
    // Interleave: round k sends message k from every client before anyone reads.
    for k in 0..5 {
        for (i, c) in clients.iter().enumerate() {
            c.send(format!("c{i}-m{k}").as_bytes()).await.expect("send");
        }
    }
    for (i, c) in clients.iter().enumerate() {
        let mut got = Vec::new();
        for _ in 0..5 {
            let m = recv_msg(c).await;
            assert_eq!(m.from, dest);
            got.push(text(&m));
        }
        got.sort();
        let want: Vec<String> = (0..5).map(|k| format!("c{i}-m{k}")).collect();
        assert_eq!(got, want, "client {i} got another client's reply");
    }
    // Nothing else, without a quiet window: the server took in 15 messages and its echo
    // callback answers each once, and the clients hold 5 each of their own. All 15 answers
    // are accounted for, so none can still be on its way to a wrong client.
    assert_eq!(server.stats().unwrap().received, 15);
    for c in &clients {
        assert_eq!(c.stats().unwrap().received, 5);
    }
    for c in &clients {
        c.close().await;
    }
    server.close().await;
}

/// Twenty TCP clients on one server: each gets its own echo; the server lists 20 live
/// connections; closing the server ends every client.
pub async fn tcp_twenty_clients<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let server = echo_server(srv, Proto::Tcp, fam).await;
    let dest = server.local_addr().expect("server address");
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(client(cli.clone(), Proto::Tcp, dest).await);
    }
    for (i, c) in clients.iter().enumerate() {
        c.send(format!("client-{i:02}").as_bytes())
            .await
            .expect("send");
    }
    for (i, c) in clients.iter().enumerate() {
        let want = format!("client-{i:02}");
        assert_eq!(recv_bytes(c, want.len()).await, want.as_bytes());
    }
    assert_eq!(server.connections().len(), 20);
    let mut peers: Vec<_> = server
        .connections()
        .iter()
        .filter_map(|c| c.dest())
        .collect();
    let mut locals: Vec<_> = clients.iter().filter_map(|c| c.local_addr()).collect();
    peers.sort();
    locals.sort();
    assert_eq!(
        peers, locals,
        "each connection's peer is one of the clients"
    );

    server.close().await;
    for c in &clients {
        let end = within(WAIT, "client sees the server close", async {
            loop {
                match c.recv_timeout(WAIT).await {
                    Err(e) => return e,
                    Ok(Some(m)) => panic!("unexpected {:?}", text(&m)),
                    Ok(None) => {}
                }
            }
        })
        .await;
        assert_eq!(end, RecvError::Closed);
        assert_eq!(c.send(b"late").await, Err(SendError::Closed));
    }
}

/// Raw TCP sends of mixed sizes while the socket is full: a large one behind queued bytes
/// waits for them and is then written from the caller's buffer (`Engine::send_waits_for_direct`),
/// a small one is copied behind them. The peer starts reading only after the first message
/// was taken, so the later ones meet a full socket; it gets every byte, in order.
pub async fn tcp_mixed_sends_arrive_in_order<C: Runtime>(cli: C) {
    let (c, mut s) = super::handoff::accepted(cli).await;
    let sizes = [65_536, 100, 16_384, 16_383, 3, 200 * 1024];
    let msgs: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            let n = sizes[i % sizes.len()];
            (0..n).map(|j| (i * 7 + j / 997) as u8).collect()
        })
        .collect();
    let want: Vec<u8> = msgs.concat();
    let (first_tx, first_rx) = smol::channel::bounded::<()>(1);
    let send = async {
        for m in &msgs {
            within(WAIT, "send", c.send(m)).await.expect("send");
            let _ = first_tx.try_send(());
        }
    };
    let read = async {
        within(WAIT, "the first send", first_rx.recv())
            .await
            .expect("the first send returned");
        super::handoff::read_n(&mut s, want.len()).await
    };
    let ((), got) = futures_lite::future::zip(send, read).await;
    assert!(got == want, "bytes lost, doubled or reordered");
    c.close().await;
}
