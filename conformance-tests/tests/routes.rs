//! Pipes on routes, on tokio and smol; external-address lookup by STUN against our own
//! responders and coturn. Loopback only.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipe_core::stun::{StunServer, StunServerConfig};
use pipe_io::{
    default_route, external_address, interfaces, ExternalCache, ExternalConf, ExternalError,
    Family, OpenError, Pipe, PipeBuilder, Proto, Route, Runtime,
};

fn on_tokio<F: Future<Output = ()>>(f: impl FnOnce(pipe_tokio::Tokio) -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { f(pipe_tokio::Tokio::current()).await });
}

fn on_smol<F: Future<Output = ()>>(f: impl FnOnce(pipe_smol::Smol) -> F) {
    smol::block_on(f(pipe_smol::Smol::default()));
}

/// A STUN responder pipe on `route`.
async fn responder<R: Runtime>(rt: R, route: &Route) -> Pipe<R> {
    let agent = Arc::new(Mutex::new(StunServer::new(StunServerConfig::default())));
    PipeBuilder::new(rt, Proto::Udp)
        .route(route, 0)
        .on_message(move |msg, pipe| {
            let agent = agent.clone();
            async move {
                let local = pipe.local_addr().unwrap();
                let answer =
                    agent
                        .lock()
                        .unwrap()
                        .handle(Instant::now(), local, msg.from, &msg.data);
                if let Some(a) = answer {
                    pipe.send_to(&a, msg.from).await.unwrap();
                }
            }
        })
        .open()
        .await
        .unwrap()
}

async fn pipes_on_routes<R: Runtime>(rt: R) {
    for family in [Family::V4, Family::V6] {
        let route = Route::loopback(family);
        // One route serves many pipes; opening never changes it.
        let before = route.clone();
        let server = PipeBuilder::new(rt.clone(), Proto::Tcp)
            .route(&route, 0)
            .on_message(|m, p| async move {
                let _ = p.send_to(&m.data, m.from).await;
            })
            .open()
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        assert_eq!(addr.ip(), route.nic());
        let mut clients = Vec::new();
        for i in 0..3u8 {
            let c = PipeBuilder::new(rt.clone(), Proto::Tcp)
                .route(&route, 0)
                .dest(addr)
                .open()
                .await
                .unwrap();
            assert_eq!(
                c.local_addr().unwrap().ip(),
                route.nic(),
                "client leaves from the route's address"
            );
            c.send(&[i; 4]).await.unwrap();
            let echo = c
                .recv_timeout(Duration::from_secs(5))
                .await
                .unwrap()
                .expect("echo");
            assert_eq!(&echo.data[..], &[i; 4]);
            clients.push(c);
        }
        let udp_a = PipeBuilder::new(rt.clone(), Proto::Udp)
            .route(&route, 0)
            .open()
            .await
            .unwrap();
        let udp_b = PipeBuilder::new(rt.clone(), Proto::Udp)
            .route(&route, 0)
            .dest(udp_a.local_addr().unwrap())
            .open()
            .await
            .unwrap();
        let sub = udp_a.subscribe(pipe_io::Filter::all()).unwrap();
        udp_b.send(b"on route").await.unwrap();
        let got = udp_a
            .recv_on(sub, Some(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("datagram");
        assert_eq!(got.from, udp_b.local_addr().unwrap());
        assert_eq!(route, before, "opening pipes never mutates the route");
        server.close().await;
    }
    // The any-address route listens on every local address, loopback included.
    let any = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&Route::any(Family::V4), 0)
        .open()
        .await
        .unwrap();
    assert!(any.local_addr().unwrap().ip().is_unspecified());
}

#[test]
fn pipes_on_routes_tokio() {
    on_tokio(pipes_on_routes);
}

#[test]
fn pipes_on_routes_smol() {
    on_smol(pipes_on_routes);
}

async fn external_lookup<R: Runtime>(rt: R) {
    for family in [Family::V4, Family::V6] {
        let route = Route::loopback(family);
        let s1 = responder(rt.clone(), &route).await;
        let s2 = responder(rt.clone(), &route).await;
        let servers = vec![s1.local_addr().unwrap(), s2.local_addr().unwrap()];
        let mapped = external_address(&rt, &route, &ExternalConf::new(servers.clone()))
            .await
            .unwrap();
        assert_eq!(mapped.ip(), route.nic(), "loopback maps to itself");
        // The cache answers from memory while fresh: with the servers gone it still knows.
        let cache = ExternalCache::new();
        let with_ext = cache
            .resolve(&rt, &route, &ExternalConf::new(servers.clone()))
            .await
            .unwrap();
        assert_eq!(with_ext.external(), Some(route.nic()));
        s1.close().await;
        s2.close().await;
        let again = cache
            .resolve(&rt, &route, &ExternalConf::new(servers.clone()))
            .await
            .unwrap();
        assert_eq!(again, with_ext);
        // Uncached, with nobody answering: a typed timeout, bounded by the conf.
        let mut quick = ExternalConf::new(servers);
        quick.timeout = Duration::from_millis(600);
        let t0 = Instant::now();
        let err = external_address(&rt, &route, &quick).await.unwrap_err();
        assert!(
            matches!(err, ExternalError::Timeout(_) | ExternalError::AllFailed),
            "{err:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Cancelled by dropping: a lookup raced against a short timer just stops.
        let ext = external_address(&rt, &route, &quick);
        let cancelled = futures_lite::future::or(async { Some(ext.await) }, async {
            rt.sleep_until(Instant::now() + Duration::from_millis(50))
                .await;
            None
        })
        .await;
        assert!(cancelled.is_none());
    }
    let err = external_address(
        &rt,
        &Route::loopback(Family::V4),
        &ExternalConf::new(vec!["[::1]:3478".parse().unwrap()]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExternalError::NoServers), "{err:?}");
}

#[test]
fn external_address_tokio() {
    on_tokio(external_lookup);
}

#[test]
fn external_address_smol() {
    on_smol(external_lookup);
}

#[test]
fn interfaces_and_default_routes() {
    let list = interfaces().unwrap();
    let lo = list
        .iter()
        .find(|i| i.loopback)
        .expect("a loopback interface");
    assert!(lo.has("127.0.0.1".parse().unwrap()));
    assert!(lo.up);
    // Enumerated once, shared.
    assert!(Arc::ptr_eq(&list, &interfaces().unwrap()));
    for family in [Family::V4, Family::V6] {
        let r = default_route(family);
        assert_eq!(r.family(), family);
        assert!(!r.nic().is_unspecified());
        // The default route's address is local: a pipe can bind it.
        let s = std::net::UdpSocket::bind(r.bind_addr(0));
        assert!(s.is_ok(), "{r}: {s:?}");
    }
    // Link-local IPv6 routes carry their interface's scope id.
    for i in list.iter() {
        for r in i.routes(Family::V6) {
            if let IpAddr::V6(v6) = r.nic() {
                if v6.is_unicast_link_local() {
                    assert_eq!(r.scope_id(), i.index, "{r}");
                    assert!(matches!(r.bind_addr(0), SocketAddr::V6(a) if a.scope_id() == i.index));
                }
            }
        }
    }
}

#[test]
fn bind_device_errors_are_typed() {
    on_tokio(|rt| async move {
        let route = Route::new(
            Some("no-such-if0".into()),
            0,
            "127.0.0.1".parse().unwrap(),
            0,
        )
        .with_bind_device();
        let err = PipeBuilder::new(rt, Proto::Udp)
            .route(&route, 0)
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, OpenError::BindDevice { device, .. } if device == "no-such-if0"),
            "{err:?}"
        );
    });
}

#[test]
fn external_address_from_coturn() {
    let Some(port) = start_coturn() else { return };
    on_tokio(|rt| async move {
        for (family, ip) in [(Family::V4, "127.0.0.1"), (Family::V6, "::1")] {
            let server = SocketAddr::new(ip.parse().unwrap(), port.0);
            let route = Route::loopback(family);
            let mapped = external_address(&rt, &route, &ExternalConf::new(vec![server]))
                .await
                .unwrap();
            assert_eq!(mapped.ip(), route.nic());
        }
    });
}

/// coturn as a STUN-only server on loopback; `None` (through `loud_skip`, which fails the test
/// under `PIPES_REQUIRE_PEERS=1`) if not installed.
///
/// coturn binds its port for UDP and TCP on both 127.0.0.1 and ::1, and while any of the four
/// is taken it retries the bind forever ("Cannot bind local socket to addr: Address already
/// in use"), neither answering nor exiting. So the port is one that all four are free on, and
/// a turnserver that has not answered within 10 s (another socket took the port in between)
/// is replaced by one on another port, within 30 s in all.
fn start_coturn() -> Option<(u16, Child)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let port = free_coturn_port();
        let child = std::process::Command::new("turnserver")
            .args([
                "--stun-only",
                "--listening-ip",
                "127.0.0.1",
                "--listening-ip",
                "::1",
                "--listening-port",
                &port.to_string(),
                "--no-cli",
                "--log-file",
                "stdout",
                "--no-tls",
                "--no-dtls",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                conformance_tests::loud_skip(
                    "external_address_from_coturn",
                    &format!("cannot start turnserver: {e} (apt-get install coturn)"),
                );
                return None;
            }
        };
        let mut child = Child(child);
        // Wait until it answers.
        let probe =
            std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP probe on 127.0.0.1");
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let req =
            pipe_core::stun::Message::binding_request(pipe_core::stun::TransactionId([7; 12]))
                .encode();
        let ready_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
        let mut buf = [0u8; 512];
        while Instant::now() < ready_by {
            if let Ok(Some(_)) = child.0.try_wait() {
                break; // exited: retry on another port
            }
            let _ = probe.send_to(&req, ("127.0.0.1", port));
            if probe.recv_from(&mut buf).is_ok() {
                return Some((port, child));
            }
        }
        drop(child);
        assert!(
            Instant::now() < deadline,
            "turnserver did not answer within 30 s (last on port {port})"
        );
    }
}

/// A port free for UDP and TCP on 127.0.0.1 and ::1 (coturn's four listening sockets).
fn free_coturn_port() -> u16 {
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a UDP probe on 127.0.0.1")
            .local_addr()
            .expect("local addr")
            .port();
        let ips: [IpAddr; 2] = [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        if ips
            .iter()
            .all(|&ip| UdpSocket::bind((ip, port)).is_ok() && TcpListener::bind((ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no loopback port free for UDP and TCP on 127.0.0.1 and ::1 within 10 s");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
