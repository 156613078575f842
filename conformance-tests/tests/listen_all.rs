//! `PipeBuilder::listen_all` on the loopback interface (no privilege needed), on tokio and smol:
//! one server pipe per loopback address (127.0.0.1, and ::1 where the host has it) on one
//! port, the builder's callbacks on every address, one merged accept (TCP) and receive (UDP)
//! that say which address a peer came in on, failures listed per address, and the errors when
//! nothing can listen. The same across real interfaces in a namespace:
//! examples/tests/listen_all_netns.rs.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::{run, within, SmolRt, TokioRt, WAIT};
use pipe_io::{
    Family, Filter, Listen, ListenAll, OpenError, PipeBuilder, Proto, RecvError, Runtime,
};

/// Only the loopback interface: nothing here listens on, or talks to, another interface.
fn on_lo(port: u16) -> Listen {
    Listen::port(port).interface(lo_name())
}

/// The loopback interface's name (`lo` on Linux).
fn lo_name() -> String {
    pipe_io::refresh_interfaces()
        .unwrap()
        .iter()
        .find(|i| i.loopback)
        .expect("a loopback interface")
        .name
        .clone()
}

/// The loopback addresses the host has, IPv4 first: what `on_lo` must open.
fn lo_ips() -> Vec<IpAddr> {
    let ips: Vec<IpAddr> = on_lo(0).routes().unwrap().iter().map(|r| r.nic()).collect();
    assert!(
        ips.contains(&"127.0.0.1".parse().unwrap()),
        "lo has 127.0.0.1: {ips:?}"
    );
    ips
}

fn assert_send<T: Send>(_: &T) {}

async fn tcp<R: Runtime>(rt: R) {
    // Port 0: the first address's free port on every address, except where another socket
    // (another test's, running alongside) holds that port on ::1: that address takes its own
    // free port (ARCHITECTURE.md, "Listening everywhere"). Such a server is closed and another
    // opened, up to 5 times; one that never shares its port fails here.
    let mut tries = 0;
    let (all, addrs, ups) = loop {
        tries += 1;
        let ups = Arc::new(AtomicUsize::new(0));
        let up = ups.clone();
        let all = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .on_up(move |_| {
                up.fetch_add(1, Ordering::Relaxed);
                async {}
            })
            .on_message(|msg, conn| async move {
                let _ = conn.send(&msg.data).await;
            })
            .listen_all(on_lo(0))
            .await
            .unwrap();
        // Both families where the host has them; a family without an address is no failure.
        assert!(all.failed().is_empty(), "{:?}", all.failed());
        let addrs = all.local_addrs();
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        assert_eq!(ips, lo_ips());
        let port = addrs[0].port();
        if addrs.iter().all(|a| a.port() == port) {
            break (all, addrs, ups);
        }
        assert!(
            tries < 5,
            "port 0: not one port everywhere in 5 tries: {addrs:?}"
        );
        eprintln!("try {tries}: port {port} was taken on another address: {addrs:?}");
        within(WAIT, "close", all.close()).await;
    };
    assert_eq!(all.pipes().len(), addrs.len());

    let accept = all.accept();
    assert_send(&accept);
    drop(accept);
    // Nothing yet: the merged accept times out.
    assert!(all
        .accept_timeout(Duration::from_millis(50))
        .await
        .unwrap()
        .is_none());

    let mut clients = Vec::new();
    for &addr in &addrs {
        let c = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .dest(addr)
            .open()
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let text = format!("via {addr}");
        c.send(text.as_bytes()).await.unwrap();
        let echo = c.recv_timeout(WAIT).await.unwrap().expect("echo");
        assert_eq!(
            &echo.data[..],
            text.as_bytes(),
            "the callbacks run on {addr}"
        );
        clients.push(c);
    }
    // One accept queue: each connection once, on the address it came to.
    // (The accepted handles are kept: where `accept` hands out owning handles, dropping one
    // closes its connection.)
    let mut seen = BTreeSet::new();
    let mut accepted = Vec::new();
    for _ in &addrs {
        let conn = within(WAIT, "merged accept", all.accept()).await.unwrap();
        let local = conn.local_addr().unwrap();
        assert!(all.pipe_on(local).is_some(), "{local} is one of {addrs:?}");
        seen.insert(local);
        accepted.push(conn);
    }
    assert_eq!(seen, addrs.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(all.connections().len(), addrs.len());
    within(WAIT, "every up callback", async {
        while ups.load(Ordering::Relaxed) < addrs.len() {
            conformance_tests::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    within(WAIT, "close", all.close()).await;
    assert!(matches!(all.accept().await, Err(RecvError::Closed)));
    for c in &clients {
        // The server closed every connection: each client sees the end.
        within(WAIT, "client end", c.closed()).await;
    }
}

async fn udp<R: Runtime>(rt: R) {
    let all = PipeBuilder::new(rt.clone(), Proto::Udp)
        .listen_all(on_lo(0))
        .await
        .unwrap();
    let addrs = all.local_addrs();
    assert_eq!(addrs.iter().map(|a| a.ip()).collect::<Vec<_>>(), lo_ips());
    // A UDP server starts with no subscription.
    assert!(matches!(
        all.recv_timeout(WAIT).await,
        Err(RecvError::NotSubscribed)
    ));
    all.subscribe_all().unwrap();
    // Nothing arrived: a bounded wait.
    let t0 = Instant::now();
    assert!(all
        .recv_timeout(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    for &addr in &addrs {
        let c = PipeBuilder::new(rt.clone(), Proto::Udp)
            .dest(addr)
            .open()
            .await
            .unwrap();
        let sub = c.subscribe(Filter::all()).unwrap();
        c.send(b"ping").await.unwrap();
        let (pipe, msg) = within(WAIT, "merged recv", all.recv())
            .await
            .unwrap()
            .expect("a datagram");
        assert_eq!(pipe.local_addr(), Some(addr), "it came in on {addr}");
        pipe.send_to(b"pong", msg.from).await.unwrap();
        let reply = c.recv_on(sub, Some(WAIT)).await.unwrap().expect("reply");
        assert_eq!(&reply.data[..], b"pong");
        assert_eq!(reply.from, addr, "the reply leaves from the address asked");
        c.close().await;
    }
    within(WAIT, "close", all.close()).await;
    assert!(matches!(all.recv().await, Err(RecvError::Closed)));
}

async fn failures<R: Runtime>(rt: R) {
    // 127.0.0.1:P is taken (no SO_REUSEADDR): that address fails, ::1 (if any) still opens.
    // [::1]:P must be free for that: another socket (another test's, running alongside) may
    // hold it, so P is one that [::1] was free on a moment before, and if ::1 failed all the
    // same (nothing listens), the same again on another P, up to 5 times.
    let v6: Vec<IpAddr> = lo_ips().into_iter().filter(|i| i.is_ipv6()).collect();
    let mut tries = 0;
    let (res, port) = loop {
        tries += 1;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        if v6
            .iter()
            .any(|&ip| std::net::TcpListener::bind((ip, port)).is_err())
            && tries < 5
        {
            continue;
        }
        let res = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .listen_all(on_lo(port))
            .await;
        if res.is_err() && !v6.is_empty() && tries < 5 {
            eprintln!("try {tries}: nothing listened on port {port}: {res:?}");
            continue;
        }
        break (res, port);
    };
    match (res, v6.is_empty()) {
        (Ok(all), false) => {
            let all: ListenAll<R> = all;
            assert_eq!(all.failed().len(), 1, "{:?}", all.failed());
            let (addr, e) = &all.failed()[0];
            assert_eq!(*addr, SocketAddr::new("127.0.0.1".parse().unwrap(), port));
            assert!(
                matches!(e, OpenError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse),
                "{e:?}"
            );
            assert_eq!(
                all.local_addrs(),
                vec![SocketAddr::new(v6[0], port)],
                "::1 opened on the port asked"
            );
            all.close().await;
        }
        // No ::1: nothing listens, and the error is 127.0.0.1's.
        (Err(e), true) => assert!(matches!(e, OpenError::Bind { .. }), "{e:?}"),
        (res, _) => panic!("{res:?}"),
    }

    // No address at all: an error that says so.
    let e = PipeBuilder::new(rt.clone(), Proto::Udp)
        .listen_all(Listen::port(0).interface("no-such-if0"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OpenError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrNotAvailable),
        "{e:?}"
    );
    // One family only, where the loopback has no address of it, is the same error.
    if v6.is_empty() {
        let e = PipeBuilder::new(rt.clone(), Proto::Udp)
            .listen_all(on_lo(0).family(Family::V6))
            .await
            .unwrap_err();
        assert!(matches!(e, OpenError::Bind { .. }), "{e:?}");
    }
    // A destination makes no sense for servers.
    let e = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .dest("127.0.0.1:9")
        .listen_all(on_lo(0))
        .await
        .unwrap_err();
    assert!(matches!(e, OpenError::BadSocket(_)), "{e:?}");
}

#[test]
fn listen_all_tcp_loopback() {
    run::<TokioRt, _, _>(tcp);
    run::<SmolRt, _, _>(tcp);
}

#[test]
fn listen_all_udp_loopback() {
    run::<TokioRt, _, _>(udp);
    run::<SmolRt, _, _>(udp);
}

#[test]
fn listen_all_failures() {
    run::<TokioRt, _, _>(failures);
    run::<SmolRt, _, _>(failures);
}
