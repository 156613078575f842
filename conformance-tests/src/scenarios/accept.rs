//! `accept()`: every accepted connection exactly once, in order, whether clients arrive before
//! or after the call, and after a client left before being accepted (P2PD returned the same
//! child twice, or raised `KeyError`).

use super::prelude::*;

async fn accept_one<R: Runtime>(server: &Pipe<R>) -> Pipe<R> {
    within(WAIT, "accept", server.accept())
        .await
        .expect("accept")
}

/// Clients that connected before `accept()` come out in order; then a client that connects
/// while `accept()` is pending, twice (the second call must not return the first again).
pub async fn accept_order<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    // The hook runs once the server has taken a connection into its accept queue: waiting on
    // it (not on a sleep) makes "before the call" certain.
    let hooked: Log<Option<SocketAddr>> = Log::new();
    let hook = hooked.clone();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(fam))
        .on_accept(move |conn| {
            let hook = hook.clone();
            async move { hook.push(conn.dest()) }
        })
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    // No client exists yet, so nothing can be accepted: no waiting needed to show it.
    assert_eq!(
        server
            .accept_timeout(Duration::ZERO)
            .await
            .unwrap()
            .map(|p| p.id()),
        None
    );

    let a = client(cli.clone(), Proto::Tcp, dest).await;
    let b = client(cli.clone(), Proto::Tcp, dest).await;
    // Both are in the server's accept queue before the first accept() call.
    hooked.wait_len(2).await;
    assert_eq!(server.connections().len(), 2);
    let ca = accept_one(&server).await;
    let cb = accept_one(&server).await;
    assert_eq!(ca.dest(), a.local_addr());
    assert_eq!(cb.dest(), b.local_addr());

    for _ in 0..2 {
        // `zip` polls `accept` first, so accept() is pending before the client starts to
        // connect: a client arriving during the call, with no sleep.
        let (conn, c) = futures_lite::future::zip(accept_one(&server), async {
            client(cli.clone(), Proto::Tcp, dest).await
        })
        .await;
        assert_eq!(
            conn.dest(),
            c.local_addr(),
            "accept returned another connection"
        );
        // The connection works both ways.
        conn.subscribe(Filter::all()).unwrap();
        c.send(b"up").await.unwrap();
        assert_eq!(recv_bytes(&conn, 2).await, b"up");
        conn.send(b"down").await.unwrap();
        assert_eq!(recv_bytes(&c, 4).await, b"down");
    }
    // Four clients, four connections taken in (the hook ran four times), all four handed out:
    // an extra accept could only be one handed out twice, so the queue is checked at once
    // instead of listening for a quiet window.
    hooked.wait_len(4).await;
    assert_eq!(
        server
            .accept_timeout(Duration::ZERO)
            .await
            .unwrap()
            .map(|p| p.id()),
        None,
        "no extra accepts"
    );

    server.close().await;
    assert_eq!(
        server.accept().await.map(|p| p.id()),
        Err(RecvError::Closed)
    );
    drop((a, b));
}

/// A client that connects and leaves before being accepted does not break later accepts:
/// it comes out (ended) or not at all, and the next client comes out and works.
pub async fn accept_after_departure<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();

    let e = client(cli.clone(), Proto::Tcp, dest).await;
    let e_addr = e.local_addr();
    e.close().await;
    let f = client(cli.clone(), Proto::Tcp, dest).await;

    let first = accept_one(&server).await;
    let conn = if first.dest() == f.local_addr() {
        first
    } else {
        // The departed client's connection: handed out once, already ended (and released,
        // so it may no longer report its peer).
        assert!(
            first.dest() == e_addr || first.dest().is_none(),
            "accept returned a stranger: {:?}",
            first.dest()
        );
        within(WAIT, "departed connection ends", first.closed()).await;
        assert_eq!(first.send(b"x").await, Err(SendError::Closed));
        accept_one(&server).await
    };
    assert_eq!(conn.dest(), f.local_addr());
    conn.subscribe(Filter::all()).unwrap();
    f.send(b"still works").await.unwrap();
    assert_eq!(recv_bytes(&conn, 11).await, b"still works");
    conn.send(b"and back").await.unwrap();
    assert_eq!(recv_bytes(&f, 8).await, b"and back");

    // Later clients are still accepted in order.
    let g = client(cli, Proto::Tcp, dest).await;
    assert_eq!(accept_one(&server).await.dest(), g.local_addr());
    server.close().await;
}
