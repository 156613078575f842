//! Conf keys, each shown to change behaviour on real sockets. (`max_qsize`, `enable_msg_ids`
//! and `max_msg_ids` are in `recv`, `reuse_addr` in `lifecycle`, `send_retry` in `reliable`,
//! `framing` in `framing`.)

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, TcpStream};

use futures_lite::AsyncWriteExt;

use super::prelude::*;
use crate::TestDns;

/// `dns_timeout` bounds resolution: a lookup that never answers ends in `ResolveTimeout`
/// after about `dns_timeout`; a lookup slower than a short `dns_timeout` fails and succeeds
/// under a longer one. (This box is offline and real lookups fail at once, so the slow DNS is
/// a wrapper runtime: the seam's `resolve` is the one thing it changes.)
pub async fn dns_timeout_bounds_resolution<R: Runtime>(rt: R) {
    for t in [Duration::from_millis(300), Duration::from_millis(900)] {
        let open = PipeBuilder::new(TestDns::hang(rt.clone()), Proto::Tcp)
            .bind(lo0(Family::V4))
            .dest(("hangs.test", 80))
            .conf(Conf {
                dns_timeout: t,
                ..Conf::default()
            })
            .open();
        let (res, took) = timed(open).await;
        match res {
            Err(OpenError::ResolveTimeout { host, after }) => {
                assert_eq!((host.as_str(), after), ("hangs.test", t))
            }
            other => panic!("expected ResolveTimeout, got {other:?}"),
        }
        assert_at_least(took, t, 0.8, "dns_timeout");
        assert!(
            took < t + Duration::from_secs(3),
            "dns_timeout {t:?} took {took:?}"
        );
    }

    let server = echo_server(rt.clone(), Proto::Tcp, Family::V4).await;
    let port = server.local_addr().unwrap().port();
    // An answer far past the 100 ms timeout: the open races the lookup against the timer
    // and polls the lookup first, so with an answer due only 300 ms after the timer (as this
    // had), a thread held off the CPU for that long found both ready and opened (seen once on
    // a heavily loaded 2-core machine: "Ok(Pipe { .. })"). The lookup is dropped at the timeout.
    let slower = TestDns::delayed(rt.clone(), Duration::from_secs(10));
    let short = PipeBuilder::new(slower, Proto::Tcp)
        .bind(lo0(Family::V4))
        .dest(("slow.test", port))
        .conf(Conf {
            dns_timeout: Duration::from_millis(100),
            ..Conf::default()
        })
        .open()
        .await;
    assert!(
        matches!(short, Err(OpenError::ResolveTimeout { .. })),
        "{short:?}"
    );
    let slow = TestDns::delayed(rt.clone(), Duration::from_millis(400));
    let long = PipeBuilder::new(slow, Proto::Tcp)
        .bind(lo0(Family::V4))
        .dest(("slow.test", port))
        .conf(Conf {
            dns_timeout: Duration::from_secs(3),
            ..Conf::default()
        })
        .open()
        .await
        .expect("resolved within dns_timeout");
    round_trip(&long, b"resolved").await;
    long.close().await;
    server.close().await;
}

/// A connect that does not complete within the `connect` call (its SYN dropped by a full
/// accept queue, answered at the kernel's retry once the queue drains) still opens, through
/// the wait for writability: loopback connects otherwise always take the path where the
/// socket is connected when `connect` returns. The queue is drained only once the kernel shows
/// the pipe's socket in `SYN-SENT`, so the open is known to be waiting.
pub async fn connect_completes_after_a_retried_syn<R: Runtime>(rt: R) {
    let (listener, addr, fill) = full_backlog(Family::V4);
    let server = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while !syn_sent_to(addr) {
            assert!(
                std::time::Instant::now() < deadline,
                "no SYN-SENT socket to {addr}"
            );
            std::thread::yield_now();
        }
        listener.set_nonblocking(true).unwrap();
        // The queued connection, then (after the client's SYN retry, about 1 s) the pipe's.
        let mut accepted = Vec::new();
        let mut conn = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the pipe never connected"
            );
            match listener.accept() {
                Ok((s, peer)) => {
                    let peer = peer.as_socket().unwrap();
                    if fill.iter().any(|f| f.local_addr().unwrap() == peer) {
                        accepted.push(s);
                    } else {
                        break TcpStream::from(s);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut conn, &mut buf).unwrap();
        std::io::Write::write_all(&mut conn, &buf).unwrap();
        conn
    });
    let p = PipeBuilder::new(rt, Proto::Tcp)
        .to(addr)
        .conf(Conf {
            con_timeout: WAIT,
            ..Conf::default()
        })
        .open()
        .await
        .expect("connected at the SYN retry");
    round_trip(&p, b"retry").await;
    let _conn = server.join().unwrap();
    p.close().await;
}

/// Whether the kernel has a TCP socket in `SYN-SENT` towards `addr` (IPv4).
fn syn_sent_to(addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    // /proc/net/tcp: "sl local rem st ...", addresses as little-endian hex "0100007F:1F90".
    let rem = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        addr.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == rem && f[3] == "02"
        })
}

/// A listener whose accept queue is full (listen(0), one connection queued, never accepted):
/// further SYNs are dropped, so a connect hangs. Returns the listener, its address, and the
/// connections that fill it (keep them alive).
fn full_backlog(fam: Family) -> (socket2::Socket, SocketAddr, Vec<TcpStream>) {
    let l = socket2::Socket::new(
        socket2::Domain::for_address(lo0(fam)),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    l.bind(&lo0(fam).into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fill.push(s),
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                return (l, addr, fill)
            }
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    panic!("a listen(0) backlog took 16 connections: cannot make a connect hang here");
}

/// `con_timeout` bounds a TCP connect that gets no answer: `ConnectTimeout` after about
/// `con_timeout`, for two different values.
pub async fn con_timeout_bounds_connect<R: Runtime>(rt: R) {
    let (_listener, addr, _fill) = full_backlog(Family::V4);
    for t in [Duration::from_millis(300), Duration::from_secs(1)] {
        let open = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .to(addr)
            .conf(Conf {
                con_timeout: t,
                ..Conf::default()
            })
            .open();
        let (res, took) = timed(open).await;
        match res {
            Err(OpenError::ConnectTimeout {
                addr: a,
                after,
                socket: None,
            }) => assert_eq!((a, after), (addr, t)),
            other => panic!("expected ConnectTimeout, got {other:?}"),
        }
        assert_at_least(took, t, 0.8, "con_timeout");
        assert!(
            took < t + Duration::from_secs(3),
            "con_timeout {t:?} took {took:?}"
        );
    }
}

/// `recv()` without a timeout waits the pipe's own `recv_timeout` (P2PD used the global one).
pub async fn recv_timeout_from_own_conf<R: Runtime>(rt: R) {
    let silent = raw_udp(Family::V4);
    for t in [Duration::from_millis(300), Duration::from_millis(1000)] {
        let p = PipeBuilder::new(rt.clone(), Proto::Udp)
            .to(silent.get_ref().local_addr().unwrap())
            .conf(Conf {
                recv_timeout: t,
                ..Conf::default()
            })
            .open()
            .await
            .unwrap();
        let (res, took) = timed(p.recv()).await;
        assert_eq!(res, Ok(None));
        assert_at_least(took, t, 0.8, "recv_timeout");
        assert!(
            took < t + Duration::from_millis(1500),
            "recv_timeout {t:?} took {took:?} (the default is 2 s)"
        );
        p.close().await;
    }
}

/// `broadcast` sets SO_BROADCAST: without it a send to loopback's broadcast address
/// (127.255.255.255) is refused by the OS (reported as `SendError::Io`, and the pipe goes on);
/// with it, the send goes out.
pub async fn broadcast_allows_broadcast_sends<R: Runtime>(rt: R) {
    let echo = echo_server(rt.clone(), Proto::Udp, Family::V4).await;
    let plain = client(rt.clone(), Proto::Udp, echo.local_addr().unwrap()).await;
    let bcast = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255)),
        plain.local_addr().unwrap().port(),
    );
    match plain.send_to(b"everyone", bcast).await {
        Err(e @ SendError::Io(_)) => {
            // The OS error is kept whole: kind, OS code (EACCES), and back as an io::Error.
            let SendError::Io(os) = &e else {
                unreachable!()
            };
            assert_eq!(os.kind(), ErrorKind::PermissionDenied);
            assert_eq!(os.raw_os_error(), Some(13));
            let io = std::io::Error::from(e);
            assert_eq!(
                (io.kind(), io.raw_os_error()),
                (ErrorKind::PermissionDenied, Some(13))
            );
        }
        other => panic!("expected EACCES without SO_BROADCAST, got {other:?}"),
    }
    round_trip(&plain, b"still usable").await;

    let b = PipeBuilder::new(rt, Proto::Udp)
        .to(echo.local_addr().unwrap())
        .conf(Conf {
            broadcast: true,
            ..Conf::default()
        })
        .open()
        .await
        .unwrap();
    b.send_to(b"everyone", bcast)
        .await
        .expect("broadcast allowed");
    round_trip(&b, b"usable").await;
    plain.close().await;
    b.close().await;
    echo.close().await;
}

/// `linger`: by default a closing client sends FIN (the server's connection ends with
/// `PeerClosed`); with `linger: Some(0)` it resets (`Reset`).
pub async fn linger_zero_resets<S: Runtime, C: Runtime>(srv: S, cli: C) {
    for (linger, want) in [
        (None, EndReason::PeerClosed),
        (Some(Duration::ZERO), EndReason::Reset),
    ] {
        let ends: Log<(PipeId, EndReason)> = Log::new();
        let e = ends.clone();
        let server = echo_builder(srv.clone(), Proto::Tcp, Family::V4)
            .on_end(move |r, p| {
                let e = e.clone();
                async move { e.push((p.id(), r)) }
            })
            .open()
            .await
            .unwrap();
        let c = PipeBuilder::new(cli.clone(), Proto::Tcp)
            .to(server.local_addr().unwrap())
            .conf(Conf {
                linger,
                ..Conf::default()
            })
            .open()
            .await
            .unwrap();
        round_trip(&c, b"hello").await;
        let conn = server.connections()[0].id();
        c.close().await;
        assert_eq!(
            ends.wait_exactly(1).await,
            [(conn, want.clone())],
            "linger {linger:?}"
        );
        server.close().await;
        // The listener's end comes after: still one end for the connection.
        assert_eq!(
            ends.wait_exactly(2).await,
            [(conn, want.clone()), (server.id(), EndReason::Local)],
            "linger {linger:?}"
        );
    }
}

/// `reader_limit` bounds the size of one TCP read, so with `Framing::Raw` no message is
/// larger; the default (64 KiB) reads a 4 KiB write at once.
pub async fn reader_limit_bounds_chunks<R: Runtime>(rt: R) {
    for limit in [512, Conf::default().reader_limit] {
        let sizes: Log<usize> = Log::new();
        let s = sizes.clone();
        let server = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .bind(lo0(Family::V4))
            .conf(Conf {
                reader_limit: limit,
                ..Conf::default()
            })
            .on_message(move |m, _| {
                let s = s.clone();
                async move { s.push(m.data.len()) }
            })
            .open()
            .await
            .unwrap();
        let mut raw = raw_tcp(server.local_addr().unwrap()).await;
        raw.write_all(&[7u8; 4096]).await.unwrap();
        let got = sizes
            .wait_until(|v| v.iter().sum::<usize>() >= 4096, "4096 bytes")
            .await;
        assert_eq!(got.iter().sum::<usize>(), 4096);
        if limit == 512 {
            assert!(
                got.iter().all(|&n| n <= 512),
                "chunks over reader_limit: {got:?}"
            );
            assert!(got.len() >= 8);
        } else {
            assert!(
                got.iter().any(|&n| n > 512),
                "a 4 KiB write read in small pieces: {got:?}"
            );
        }
        server.close().await;
    }
}

/// `do_close: false` hands the socket of a failed connect back (P2PD's hole punching retries
/// from the same port); the default closes it.
pub async fn do_close_false_keeps_socket<R: Runtime>(rt: R) {
    let (_hold, refused) = refusing_port(Family::V4);
    let keep = Conf {
        do_close: false,
        ..Conf::default()
    };
    let err = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .bind(lo0(Family::V4))
        .dest(refused)
        .conf(keep)
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(err, OpenError::ConnectRefused { addr, socket: Some(_) } if addr == refused),
        "{err:?}"
    );
    let sock = err.into_socket().expect("the socket is handed back");
    let local = sock.local_addr().unwrap().as_socket().unwrap();
    assert_eq!(local.ip(), lo(Family::V4));
    assert_ne!(local.port(), 0, "still bound to its port");
    assert_eq!(sock.r#type().unwrap(), socket2::Type::STREAM);

    let err = PipeBuilder::new(rt, Proto::Tcp)
        .to(refused)
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(err, OpenError::ConnectRefused { socket: None, .. }),
        "{err:?}"
    );
    assert!(err.into_socket().is_none());
}
