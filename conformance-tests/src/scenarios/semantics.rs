//! Semantics that differed from P2PD, fixed (issue 12): the real peer of a `0.0.0.0` / `::`
//! destination, handler subscriptions, callbacks before `recv`, and external addresses
//! validated. (`up` for connections only is asserted by `callbacks::up_end_*`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pipe_io::{ExternalAddrError, NotExternal, Route};

use super::prelude::*;

/// A client opened to `0.0.0.0:p` (IPv4) or `[::]:p` (IPv6), P2PD's way to reach a local
/// server, reports the loopback address it really talks to, for TCP and UDP; messages come
/// from that address.
pub async fn unspecified_dest_reports_real_peer<S: Runtime, C: Runtime>(
    srv: S,
    cli: C,
    fam: Family,
) {
    for proto in [Proto::Tcp, Proto::Udp] {
        let server = echo_server(srv.clone(), proto, fam).await;
        let port = server.local_addr().unwrap().port();
        let any = SocketAddr::new(pipe_io::pipe_core::addr::unspecified(fam), port);
        let real = SocketAddr::new(lo(fam), port);
        let c = PipeBuilder::new(cli.clone(), proto)
            .bind(lo0(fam))
            .dest(any)
            .open()
            .await
            .unwrap_or_else(|e| panic!("{proto:?} to {any}: {e}"));
        assert_eq!(
            c.dest(),
            Some(real),
            "{proto:?}: the peer is {real}, not {any}"
        );
        c.send(b"where").await.unwrap();
        let m = recv_msg(&c).await;
        assert_eq!(&m.data[..], b"where");
        assert_eq!(
            m.from, real,
            "{proto:?}: the reply comes from the real peer"
        );
        c.close().await;
        server.close().await;
    }
}

/// `subscribe_with(filter, handler)`: a matching message goes to the handler, after the
/// message callbacks, and is not queued for that subscription (the all-messages subscription
/// still queues it).
pub async fn subscription_handler<S: Runtime, C: Runtime>(srv: S, cli: C, proto: Proto) {
    let server = echo_server(srv, proto, Family::V4).await;
    let log: Log<String> = Log::new();
    let l = log.clone();
    let c = PipeBuilder::new(cli, proto)
        .to(server.local_addr().unwrap())
        .on_message(move |m, _| {
            let l = l.clone();
            async move { l.push(format!("cb:{}", text(&m))) }
        })
        .open()
        .await
        .unwrap();
    // With a message callback a pipe starts with no subscription (P2PD).
    assert_eq!(c.subscribe(Filter::all()).unwrap(), SubId::ALL);
    let l = log.clone();
    let h = c
        .subscribe_with(Filter::pattern("^h").unwrap(), move |m, p| {
            let l = l.clone();
            async move {
                // The handler gets the pipe the message came on.
                assert!(p.dest().is_some());
                l.push(format!("h:{}", text(&m)))
            }
        })
        .unwrap();
    assert_ne!(h, SubId::ALL);
    // One message at a time (TCP may merge writes into one read).
    for word in ["hello", "other", "hi"] {
        c.send(word.as_bytes()).await.unwrap();
        assert_eq!(text(&recv_msg(&c).await), word);
    }
    let got = log.wait_len(5).await;
    assert_eq!(
        got,
        ["cb:hello", "h:hello", "cb:other", "cb:hi", "h:hi"],
        "per message: the callbacks, then the handler"
    );
    // Only the all-messages subscription queued them: the handler's queued none.
    assert_eq!(c.stats().unwrap().queued, 3);
    assert_eq!(c.recv_on(h, Some(Duration::from_millis(1))).await, Ok(None));
    // Unsubscribed: the handler gets nothing more. Jobs run in order, so a handler job for
    // "hey" would be logged before the callback of the sentinel "zz".
    c.unsubscribe(h).unwrap();
    for word in ["hey", "zz"] {
        c.send(word.as_bytes()).await.unwrap();
        assert_eq!(text(&recv_msg(&c).await), word);
    }
    let got = log.wait_len(7).await;
    assert_eq!(got[5..], ["cb:hey", "cb:zz"]);
    c.close().await;
    server.close().await;
}

/// A handler on an accepted TCP connection (subscriptions are per pipe): it sees that
/// connection's messages only.
pub async fn subscription_handler_on_connection<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let c = client(cli, Proto::Tcp, server.local_addr().unwrap()).await;
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    let log: Log<String> = Log::new();
    let l = log.clone();
    conn.subscribe_with(Filter::all(), move |m, p| {
        let l = l.clone();
        async move {
            let _ = p.send(&m.data).await;
            l.push(text(&m))
        }
    })
    .unwrap();
    c.send(b"ping").await.unwrap();
    assert_eq!(recv_bytes(&c, 4).await, b"ping");
    assert_eq!(log.wait_len(1).await, ["ping"]);
    assert_eq!(conn.stats().unwrap().queued, 0, "handled, not queued");
    c.close().await;
    server.close().await;
}

/// Callbacks before `recv`: when `recv` returns a message, every message callback for it
/// has finished, although the callback yields before recording it (so it runs on a worker
/// task, racing the reader). `n` messages from a raw peer, each checked.
pub async fn callback_before_recv<R: Runtime>(rt: R, n: u64) {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let p = PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(Family::V4))
        .on_message(move |m, _| {
            let s = s.clone();
            async move {
                futures_lite::future::yield_now().await;
                let i: u64 = text(&m).parse().unwrap();
                s.fetch_max(i, Ordering::SeqCst);
            }
        })
        .open()
        .await
        .unwrap();
    p.subscribe(Filter::all()).unwrap();
    let peer = raw_udp(Family::V4);
    let to = p.local_addr().unwrap();
    for i in 1..=n {
        peer.send_to(i.to_string().as_bytes(), to).await.unwrap();
        let m = recv_msg(&p).await;
        assert_eq!(text(&m), i.to_string());
        let done = seen.load(Ordering::SeqCst);
        assert!(
            done >= i,
            "recv returned message {i} before its callback finished (callbacks done up to {done})"
        );
    }
    p.close().await;
}

/// `Route::with_external` refuses what cannot be an external address, with a typed error;
/// a public address is kept, and a pipe opens on the route as before.
pub async fn external_address_validated<R: Runtime>(rt: R) {
    let route = Route::loopback(Family::V4);
    for (ip, kind) in [
        ("0.0.0.0", NotExternal::Unspecified),
        ("::", NotExternal::Unspecified),
        ("127.0.0.1", NotExternal::Loopback),
        ("224.1.2.3", NotExternal::Multicast),
        ("10.0.0.1", NotExternal::Private),
        ("192.168.0.1", NotExternal::Private),
        ("169.254.0.1", NotExternal::LinkLocal),
        ("fe80::1", NotExternal::LinkLocal),
        ("198.51.100.7", NotExternal::Documentation),
    ] {
        let addr = ip.parse().unwrap();
        assert_eq!(
            route.with_external(addr),
            Err(ExternalAddrError { addr, kind }),
            "{ip}"
        );
    }
    let public = "8.8.4.4".parse().unwrap();
    let r = route.with_external(public).expect("a public address");
    assert_eq!(r.external(), Some(public));
    let p = PipeBuilder::new(rt, Proto::Udp)
        .route(&r, 0)
        .open()
        .await
        .unwrap();
    assert_eq!(p.local_addr().unwrap().ip(), lo(Family::V4));
    p.close().await;
}
