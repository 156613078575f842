//! Routes across real interfaces, and offline behaviour, inside a network namespace this test
//! creates (`unshare -n`): a veth pair gives two interfaces with their own addresses, and the
//! namespace has no default route, so it is offline. Nothing leaves the namespace.
//!
//! The parent test re-runs itself inside the namespace. Where namespaces cannot be created
//! (no privilege), it prints a loud SKIP line saying why, or fails with it under
//! `PIPES_REQUIRE_PEERS=1` (`conformance_tests::loud_skip`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use pipe_io::{
    default_route, external_address, refresh_interfaces, ExternalConf, ExternalError, Family,
    Filter, OpenError, PipeBuilder, Proto, Runtime,
};

const A: &str = "10.77.1.1";
const B: &str = "10.77.2.1";
const LL: &str = "fe80::a";

/// Run `body` inside a fresh network namespace set up by [`setup`].
fn in_netns(test: &str, body: impl FnOnce()) {
    if std::env::var_os("PIPES_IN_NETNS").is_some() {
        setup();
        body();
        return;
    }
    let probe = Command::new("unshare")
        .args([
            "-n", "ip", "link", "add", "pva", "type", "veth", "peer", "name", "pvb",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return conformance_tests::loud_skip(
                test,
                &format!(
                    "cannot create a network namespace with a veth pair: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
        }
        Err(e) => {
            return conformance_tests::loud_skip(test, &format!("unshare/ip not available: {e}"))
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("PIPES_IN_NETNS", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "inside the namespace:\n{text}"
    );
}

fn setup() {
    for cmd in [
        "ip link set lo up",
        "ip link add pva type veth peer name pvb",
        &format!("ip addr add {A}/24 dev pva"),
        &format!("ip addr add {B}/24 dev pvb"),
        &format!("ip addr add {LL}/64 dev pva nodad"),
        "ip link set pva up",
        "ip link set pvb up",
    ] {
        let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
        assert!(st.success(), "{cmd}");
    }
}

fn run_both<FT: Future<Output = ()>, FS: Future<Output = ()>>(
    t: impl FnOnce(pipe_tokio::Tokio) -> FT,
    s: impl FnOnce(pipe_smol::Smol) -> FS,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { t(pipe_tokio::Tokio::current()).await });
    smol::block_on(s(pipe_smol::Smol::default()));
}

async fn two_interfaces<R: Runtime>(rt: R) {
    let list = refresh_interfaces().unwrap();
    let pva = list
        .iter()
        .find(|i| i.name == "pva")
        .expect("pva enumerated");
    let pvb = list
        .iter()
        .find(|i| i.name == "pvb")
        .expect("pvb enumerated");
    let route_a = pva
        .routes(Family::V4)
        .into_iter()
        .next()
        .expect("a route on pva");
    let route_b = pvb
        .routes(Family::V4)
        .into_iter()
        .next()
        .expect("a route on pvb");
    assert_eq!(route_a.nic(), A.parse::<IpAddr>().unwrap());
    assert_eq!(route_b.interface(), Some("pvb"));

    // A UDP server on route B sees a pipe on route A arrive from A's address.
    let server = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&route_b, 0)
        .open()
        .await
        .unwrap();
    let sub = server.subscribe(Filter::all()).unwrap();
    let client = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&route_a, 0)
        .dest(server.local_addr().unwrap())
        .open()
        .await
        .unwrap();
    client.send(b"from a").await.unwrap();
    let got = server
        .recv_on(sub, Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("datagram");
    assert_eq!(
        got.from.ip(),
        route_a.nic(),
        "the pipe on route A leaves from A's address"
    );

    // A TCP server on route B listens on B only: it cannot be reached through A's address.
    let tcp = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .route(&route_b, 0)
        .open()
        .await
        .unwrap();
    let port = tcp.local_addr().unwrap().port();
    let via_a = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .dest(SocketAddr::new(route_a.nic(), port))
        .open()
        .await;
    assert!(
        matches!(via_a, Err(OpenError::ConnectRefused { .. })),
        "{via_a:?}"
    );
    let via_b = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .route(&route_a, 0)
        .dest(SocketAddr::new(route_b.nic(), port))
        .open()
        .await
        .unwrap();
    assert_eq!(via_b.local_addr().unwrap().ip(), route_a.nic());

    // Binding to the device works here (root in the namespace).
    let dev = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&route_a.with_bind_device(), 0)
        .open()
        .await;
    assert!(dev.is_ok(), "{dev:?}");

    // IPv6 link-local: the route carries the scope id, and pipes on it talk.
    let ll = pva
        .routes(Family::V6)
        .into_iter()
        .find(|r| r.nic() == LL.parse::<IpAddr>().unwrap())
        .expect("link-local route");
    assert_eq!(ll.scope_id(), pva.index);
    let l1 = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&ll, 0)
        .open()
        .await
        .unwrap();
    let sub = l1.subscribe(Filter::all()).unwrap();
    let l2 = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&ll, 0)
        .dest(l1.local_addr().unwrap())
        .open()
        .await
        .unwrap();
    assert!(matches!(l1.local_addr().unwrap(), SocketAddr::V6(a) if a.scope_id() == pva.index));
    l2.send(b"link-local").await.unwrap();
    let got = l1
        .recv_on(sub, Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("link-local datagram");
    assert_eq!(&got.data[..], b"link-local");
}

#[test]
fn routes_across_two_interfaces() {
    in_netns("routes_across_two_interfaces", || {
        run_both(two_interfaces, two_interfaces)
    });
}

async fn offline<R: Runtime>(rt: R) {
    // No default route in the namespace: the default route falls back to loopback.
    let route = default_route(Family::V4);
    assert!(route.nic().is_loopback(), "{route}");
    // External lookup fails fast and typed (nothing can be sent: no route).
    let t0 = Instant::now();
    let conf = ExternalConf::new(vec![
        "203.0.113.1:3478".parse().unwrap(),
        "203.0.113.2:3478".parse().unwrap(),
    ]);
    let err = external_address(&rt, &route, &conf).await.unwrap_err();
    assert!(matches!(err, ExternalError::Unreachable { .. }), "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "offline error took {:?}",
        t0.elapsed()
    );
    // The route is still good for local pipes.
    let a = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&route, 0)
        .open()
        .await
        .unwrap();
    let sub = a.subscribe(Filter::all()).unwrap();
    let b = PipeBuilder::new(rt.clone(), Proto::Udp)
        .route(&route, 0)
        .dest(a.local_addr().unwrap())
        .open()
        .await
        .unwrap();
    b.send(b"still local").await.unwrap();
    assert!(a
        .recv_on(sub, Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .is_some());
}

#[test]
fn offline_default_route_and_external_lookup() {
    in_netns("offline_default_route_and_external_lookup", || {
        run_both(offline, offline)
    });
}
