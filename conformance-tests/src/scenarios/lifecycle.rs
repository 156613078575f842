//! Lifecycle: send after close, port reuse, a bind address shared by many pipes, wrapping an
//! existing socket, and `open_socket` (P2PD's `sock_only`).

use std::io::ErrorKind;

use super::prelude::*;

/// Every kind of pipe refuses to send once closed, with `Err(Closed)`; close is idempotent.
pub async fn send_after_close<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let server = echo_server(srv.clone(), Proto::Tcp, Family::V4).await;
    let c = client(cli.clone(), Proto::Tcp, server.local_addr().unwrap()).await;
    round_trip(&c, b"alive").await;
    let conn = server.connections().pop().expect("one connection");
    c.close().await;
    c.close().await;
    assert_eq!(c.send(b"x").await, Err(SendError::Closed));
    assert_eq!(
        c.send_to(b"x", server.local_addr().unwrap()).await,
        Err(SendError::Closed)
    );
    within(WAIT, "the connection sees the FIN", conn.closed()).await;
    assert_eq!(conn.send(b"x").await, Err(SendError::Closed));
    server.close().await;
    assert_eq!(server.send(b"x").await, Err(SendError::Closed));

    let u = PipeBuilder::new(cli, Proto::Udp)
        .dest(lo0(Family::V4))
        .open()
        .await;
    assert!(
        matches!(u, Err(OpenError::Dest(_))),
        "port 0 is not a destination"
    );
    let sink = raw_udp(Family::V4);
    let u = client(srv, Proto::Udp, sink.get_ref().local_addr().unwrap()).await;
    u.send(b"before").await.unwrap();
    assert_eq!(raw_recv(&sink, WAIT).await.expect("datagram").0, b"before");
    u.close().await;
    assert_eq!(u.send(b"after").await, Err(SendError::Closed));
    assert_eq!(u.recv_timeout(WAIT).await, Err(RecvError::Closed));
    assert!(u.is_closed());
}

/// Open an echo server on `bind`, serve one client, close the server first (so its side of
/// the connection lingers in TIME_WAIT) and wait for the client to see it. Returns the address.
async fn serve_once<S: Runtime, C: Runtime>(
    srv: S,
    cli: C,
    bind: SocketAddr,
    reuse_addr: bool,
) -> Result<SocketAddr, OpenError> {
    let server = echo_builder(srv, Proto::Tcp, Family::V4)
        .bind(bind)
        .conf(Conf {
            reuse_addr,
            ..Conf::default()
        })
        .open()
        .await?;
    let addr = server.local_addr().unwrap();
    let c = client(cli, Proto::Tcp, addr).await;
    round_trip(&c, b"once").await;
    server.close().await;
    within(WAIT, "client sees the server close", c.closed()).await;
    Ok(addr)
}

/// With `reuse_addr` a server can reopen its port right after closing; without it the port is
/// still held by the closed connection and opening fails with `Bind` (address in use).
pub async fn port_reuse_after_close<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let addr = serve_once(srv.clone(), cli.clone(), lo0(Family::V4), true)
        .await
        .unwrap();
    let again = serve_once(srv.clone(), cli.clone(), addr, true)
        .await
        .expect("reopen with reuse_addr");
    assert_eq!(again, addr);

    let addr = serve_once(srv.clone(), cli.clone(), lo0(Family::V4), false)
        .await
        .unwrap();
    match serve_once(srv, cli, addr, false).await {
        Err(OpenError::Bind { addr: a, source }) => {
            assert_eq!(a, addr);
            assert_eq!(source.kind(), ErrorKind::AddrInUse);
        }
        other => panic!("expected Bind(AddrInUse), got {other:?}"),
    }
}

/// One bind address (a route) shared by many pipes: with `reuse_addr`, several UDP pipes bind
/// the same address and each sends from it; without, the second bind fails. A port-0 route
/// can be reused by any number of pipes (P2PD wrote the first pipe's port back into it).
pub async fn shared_bind_address<R: Runtime>(rt: R) {
    let reuse = Conf {
        reuse_addr: true,
        ..Conf::default()
    };
    let sinks: Vec<_> = (0..3).map(|_| raw_udp(Family::V4)).collect();
    let first = PipeBuilder::new(rt.clone(), Proto::Udp)
        .bind(lo0(Family::V4))
        .dest(sinks[0].get_ref().local_addr().unwrap())
        .conf(reuse.clone())
        .open()
        .await
        .unwrap();
    let shared = first.local_addr().unwrap();
    let mut pipes = vec![first];
    for sink in &sinks[1..] {
        let p = PipeBuilder::new(rt.clone(), Proto::Udp)
            .bind(shared)
            .dest(sink.get_ref().local_addr().unwrap())
            .conf(reuse.clone())
            .open()
            .await;
        pipes.push(p.expect("bind a shared address with reuse_addr"));
    }
    for (i, (p, sink)) in pipes.iter().zip(&sinks).enumerate() {
        assert_eq!(p.local_addr(), Some(shared));
        p.send(format!("pipe {i}").as_bytes()).await.unwrap();
        let (data, from) = raw_recv(sink, WAIT).await.expect("datagram");
        assert_eq!((data, from), (format!("pipe {i}").into_bytes(), shared));
    }
    let taken = PipeBuilder::new(rt.clone(), Proto::Udp)
        .bind(shared)
        .open()
        .await;
    assert!(
        matches!(&taken, Err(OpenError::Bind { source, .. }) if source.kind() == ErrorKind::AddrInUse),
        "without reuse_addr: {taken:?}"
    );
    for p in &pipes {
        p.close().await;
    }

    let server = echo_server(rt.clone(), Proto::Tcp, Family::V4).await;
    let route = lo0(Family::V4);
    let mut ports = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        for _ in 0..5 {
            let p = PipeBuilder::new(rt.clone(), proto)
                .bind(route)
                .dest(server.local_addr().unwrap())
                .open()
                .await
                .expect("open on a shared route");
            ports.push((proto, p.local_addr().unwrap().port()));
        }
    }
    assert_eq!(
        route,
        lo0(Family::V4),
        "the route is a value: opening never changes it"
    );
    let before = ports.len();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), before, "each pipe got its own port");
    server.close().await;
}

/// Wrapping existing std sockets (P2PD's `sock=`): an unbound-dest UDP socket with a given
/// destination, a connected UDP socket, a connected TCP stream, a TCP listener.
pub async fn wrap_existing_socket<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let udp_echo = echo_server(srv.clone(), Proto::Udp, fam).await;
    let tcp_echo = echo_server(srv.clone(), Proto::Tcp, fam).await;

    let std_udp = std::net::UdpSocket::bind(lo0(fam)).unwrap();
    let local = std_udp.local_addr().unwrap();
    let p = PipeBuilder::new(cli.clone(), Proto::Udp)
        .socket(std_udp)
        .dest(udp_echo.local_addr().unwrap())
        .open()
        .await
        .unwrap();
    assert_eq!(p.local_addr(), Some(local), "the socket is used as it is");
    assert_eq!(p.dest(), udp_echo.local_addr());
    round_trip(&p, b"wrapped udp").await;
    p.close().await;

    let std_udp = std::net::UdpSocket::bind(lo0(fam)).unwrap();
    std_udp.connect(udp_echo.local_addr().unwrap()).unwrap();
    let p = PipeBuilder::new(cli.clone(), Proto::Udp)
        .socket(std_udp)
        .open()
        .await
        .unwrap();
    assert_eq!(
        p.dest(),
        udp_echo.local_addr(),
        "a connected UDP socket's peer is the destination"
    );
    round_trip(&p, b"connected udp").await;
    p.close().await;

    let stream = std::net::TcpStream::connect(tcp_echo.local_addr().unwrap()).unwrap();
    let local = stream.local_addr().unwrap();
    let p = PipeBuilder::new(cli.clone(), Proto::Tcp)
        .socket(stream)
        .open()
        .await
        .unwrap();
    assert_eq!(
        (p.local_addr(), p.dest()),
        (Some(local), tcp_echo.local_addr())
    );
    round_trip(&p, b"wrapped tcp").await;
    p.close().await;

    let listener = std::net::TcpListener::bind(lo0(fam)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .socket(listener)
        .on_message(|m, pipe| async move {
            let _ = pipe.send_to(&m.data, m.from).await;
        })
        .open()
        .await
        .unwrap();
    assert_eq!(server.local_addr(), Some(addr));
    let c = client(cli.clone(), Proto::Tcp, addr).await;
    round_trip(&c, b"wrapped listener").await;
    c.close().await;
    server.close().await;

    let wrong = PipeBuilder::new(cli.clone(), Proto::Udp)
        .socket(std::net::TcpListener::bind(lo0(fam)).unwrap())
        .open()
        .await;
    assert!(matches!(wrong, Err(OpenError::BadSocket(_))), "{wrong:?}");
    let other_family: SocketAddr = match fam {
        Family::V4 => "[::1]:9".parse().unwrap(),
        Family::V6 => "127.0.0.1:9".parse().unwrap(),
    };
    let wrong = PipeBuilder::new(cli.clone(), Proto::Udp)
        .socket(std::net::UdpSocket::bind(lo0(fam)).unwrap())
        .dest(other_family)
        .open()
        .await;
    assert!(
        matches!(wrong, Err(OpenError::FamilyMismatch { dest, .. }) if dest == other_family),
        "{wrong:?}"
    );
    let wrong = PipeBuilder::new(cli, Proto::Tcp)
        .socket(std::net::TcpListener::bind(lo0(fam)).unwrap())
        .dest(tcp_echo.local_addr().unwrap())
        .open()
        .await;
    assert!(matches!(wrong, Err(OpenError::BadSocket(_))), "{wrong:?}");
    udp_echo.close().await;
    tcp_echo.close().await;
}

/// `open_socket` returns the configured socket instead of a pipe: UDP bound, a TCP client
/// connected, a TCP server listening; the conf's socket options are on it. `sock_only` makes
/// `open` refuse loudly instead of being ignored.
pub async fn open_socket_returns_configured_socket<R: Runtime>(rt: R, fam: Family) {
    let s = PipeBuilder::new(rt.clone(), Proto::Udp)
        .bind(lo0(fam))
        .open_socket()
        .await
        .unwrap();
    let local = s.local_addr().unwrap().as_socket().unwrap();
    assert_eq!(local.ip(), lo(fam));
    assert_ne!(local.port(), 0);
    assert_eq!(s.r#type().unwrap(), socket2::Type::DGRAM);
    assert!(!s.broadcast().unwrap());
    assert!(!s.reuse_address().unwrap());

    let opts = Conf {
        reuse_addr: true,
        broadcast: fam == Family::V4,
        linger: Some(Duration::ZERO),
        ..Conf::default()
    };
    let s = PipeBuilder::new(rt.clone(), Proto::Udp)
        .bind(lo0(fam))
        .conf(opts.clone())
        .open_socket()
        .await
        .unwrap();
    assert!(s.reuse_address().unwrap());
    if fam == Family::V4 {
        assert!(s.broadcast().unwrap());
    }
    if fam == Family::V6 {
        assert!(s.only_v6().unwrap(), "an IPv6 pipe socket is v6-only");
    }

    let server = echo_server(rt.clone(), Proto::Tcp, fam).await;
    let s = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .to(server.local_addr().unwrap())
        .conf(opts.clone())
        .open_socket()
        .await
        .unwrap();
    assert_eq!(
        s.peer_addr().unwrap().as_socket(),
        server.local_addr(),
        "connected"
    );
    assert_eq!(s.linger().unwrap(), Some(Duration::ZERO));
    // The socket is usable as it is: wrap it in a pipe and talk through it.
    let p = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .socket(std::net::TcpStream::from(s))
        .open()
        .await
        .unwrap();
    round_trip(&p, b"via open_socket").await;
    p.close().await;
    server.close().await;

    let l = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .bind(lo0(fam))
        .open_socket()
        .await
        .unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let l = std::net::TcpListener::from(l);
    let _conn = std::net::TcpStream::connect(addr).expect("the server socket is listening");
    l.set_nonblocking(false).unwrap();
    assert!(l.accept().is_ok());

    let sock_only = Conf {
        sock_only: true,
        ..Conf::default()
    };
    let refused = PipeBuilder::new(rt.clone(), Proto::Udp)
        .bind(lo0(fam))
        .conf(sock_only.clone())
        .open()
        .await;
    assert!(matches!(refused, Err(OpenError::SockOnly)), "{refused:?}");
    assert!(PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(fam))
        .conf(sock_only)
        .open_socket()
        .await
        .is_ok());
}
