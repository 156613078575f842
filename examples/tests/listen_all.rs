//! `echo-server --bind all:PORT` (`PipeBuilder::listen_all`): one `listening on` line per
//! address, and a client reaches the echo server through each one.
//!
//! - Across real interfaces, in namespaces (support/netns.rs): the server's namespace `srv`
//!   has two veth interfaces, each with an IPv4, a global IPv6 and a link-local IPv6 address;
//!   this test's namespace holds the other ends. The server runs on tokio and on smol, over
//!   TCP and UDP; clients (pipes on tokio and on smol) reach it through each of the six
//!   addresses (link-local ones with this side's scope id), and a UDP echo comes back from the
//!   address it was sent to.
//! - On loopback, with no privilege: the lines name every loopback address on one port, and
//!   clients on both runtimes reach the server through each.

#[path = "support/netns.rs"]
mod netns;
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use futures_lite::future;
use pipe_io::{Filter, Listen, PipeBuilder, Proto, Runtime};

use netns::{in_netns, sh};

const WAIT: Duration = Duration::from_secs(5);

/// An echo-server started with `--bind all:PORT` (in `ns` when given), killed on drop, and
/// the addresses of its `listening on` lines.
struct AllServer {
    child: Child,
    addrs: Vec<SocketAddr>,
}

impl Drop for AllServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AllServer {
    fn start(ns: Option<&str>, proto: &str, bind: &str, runtime: &str) -> AllServer {
        let echo = env!("CARGO_BIN_EXE_echo-server");
        let args = ["--proto", proto, "--bind", bind, "--runtime", runtime];
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, echo]);
                c
            }
            None => Command::new(echo),
        };
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start echo-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // The lines come in one write: after the first, the rest are already buffered.
            let mut r = BufReader::new(stdout);
            let mut lines = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                lines.push(std::mem::take(&mut line));
                if r.buffer().is_empty() {
                    break;
                }
            }
            let _ = tx.send(lines);
            // Keep reading so the server never writes into a closed pipe.
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {}
        });
        let mut server = AllServer {
            child,
            addrs: Vec::new(),
        };
        let lines = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("`listening on` lines within 20 s");
        for l in &lines {
            let a = l
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("line {l:?} in {lines:?}"));
            server.addrs.push(a.parse().expect("a socket address"));
        }
        assert!(!server.addrs.is_empty(), "no `listening on` line");
        server
    }
}

/// One echo through `addr` (TCP or UDP) with a pipe on `rt`, bounded by [`WAIT`]: the reply's
/// source for UDP.
async fn echo_via<R: Runtime>(rt: R, proto: Proto, addr: SocketAddr) -> SocketAddr {
    let run = async {
        let c = PipeBuilder::new(rt.clone(), proto)
            .dest(addr)
            .open()
            .await
            .unwrap_or_else(|e| panic!("{proto:?} to {addr}: {e}"));
        let sub = c.subscribe(Filter::all()).unwrap();
        let text = format!("hello via {addr}");
        c.send(text.as_bytes()).await.unwrap();
        let got = c
            .recv_on(sub, Some(WAIT))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no echo through {addr} ({proto:?})"));
        assert_eq!(&got.data[..], text.as_bytes());
        c.close().await;
        got.from
    };
    future::or(run, async {
        smol::Timer::after(WAIT * 2).await;
        panic!(
            "{proto:?} echo through {addr}: no end within {:?}",
            WAIT * 2
        )
    })
    .await
}

/// `echo_via` on tokio (current-thread) and on smol.
fn echo_both(proto: Proto, addr: SocketAddr) -> [SocketAddr; 2] {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { echo_via(pipe_tokio::Tokio::current(), proto, addr).await });
    let smol = smol::block_on(echo_via(pipe_smol::Smol::default(), proto, addr));
    [tokio, smol]
}

fn proto_of(name: &str) -> Proto {
    if name == "tcp" {
        Proto::Tcp
    } else {
        Proto::Udp
    }
}

// ---- across two interfaces, in namespaces ---------------------------------------------------

/// This namespace's two interfaces and the server's addresses through each.
const SIDES: [(&str, &str, &str); 2] = [("a0", "a1", "1"), ("b0", "b1", "2")];

fn two_interfaces() {
    sh("ip netns add srv && ip -n srv link set lo up");
    for (here, there, n) in SIDES {
        for line in [
            format!("ip link add {here} type veth peer name {there} netns srv"),
            // No automatic link-local address (and no DAD wait): the ones below only.
            format!("ip link set {here} addrgenmode none"),
            format!("ip -n srv link set {there} addrgenmode none"),
            format!("ip addr add 10.0.{n}.2/24 dev {here}"),
            format!("ip addr add fd00:{n}::2/64 dev {here} nodad"),
            format!("ip addr add fe80::{n}:2/64 dev {here} nodad"),
            format!("ip -n srv addr add 10.0.{n}.1/24 dev {there}"),
            format!("ip -n srv addr add fd00:{n}::1/64 dev {there} nodad"),
            format!("ip -n srv addr add fe80::{n}:1/64 dev {there} nodad"),
            format!("ip link set {here} up"),
            format!("ip -n srv link set {there} up"),
        ] {
            sh(&line);
        }
    }
    // Up means operationally up (carrier on both ends): wait for it, bounded.
    let t0 = std::time::Instant::now();
    loop {
        let out = Command::new("sh")
            .args(["-c", "ip -br link; ip -n srv -br link"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let up = |name: &str| {
            text.lines()
                .any(|l| l.starts_with(&format!("{name}@")) && l.contains(" UP "))
        };
        if SIDES.iter().all(|(here, there, _)| up(here) && up(there)) {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "veth links not up within {WAIT:?}:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The server's addresses through this side's interfaces: IPv4, global IPv6, and link-local
/// IPv6 with this side's scope id.
fn targets(port: u16) -> Vec<SocketAddr> {
    let ifaces = pipe_io::refresh_interfaces().unwrap();
    let mut out = Vec::new();
    for (here, _, n) in SIDES {
        let index = ifaces
            .iter()
            .find(|i| i.name == here)
            .unwrap_or_else(|| panic!("{here} enumerated"))
            .index;
        out.push(SocketAddr::new(
            format!("10.0.{n}.1").parse().unwrap(),
            port,
        ));
        out.push(SocketAddr::new(
            format!("fd00:{n}::1").parse().unwrap(),
            port,
        ));
        out.push(SocketAddr::V6(SocketAddrV6::new(
            format!("fe80::{n}:1").parse().unwrap(),
            port,
            0,
            index,
        )));
    }
    out
}

fn across_interfaces() {
    two_interfaces();
    let mut port = 7000;
    for runtime in ["tokio", "smol"] {
        for proto in ["tcp", "udp"] {
            port += 1;
            let server = AllServer::start(Some("srv"), proto, &format!("all:{port}"), runtime);
            println!(
                "echo-server --proto {proto} --runtime {runtime}: {:?}",
                server.addrs
            );
            // Every address of srv, both families, on the port asked: its two loopback
            // addresses and the six of the veth pairs (link-local ones with srv's scope ids).
            let ips: BTreeSet<IpAddr> = server.addrs.iter().map(|a| a.ip()).collect();
            let want: BTreeSet<IpAddr> = [
                "127.0.0.1",
                "10.0.1.1",
                "10.0.2.1",
                "::1",
                "fd00:1::1",
                "fd00:2::1",
                "fe80::1:1",
                "fe80::2:1",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
            assert_eq!(ips, want, "{:?}", server.addrs);
            assert!(server.addrs.iter().all(|a| a.port() == port));
            assert!(
                server.addrs.iter().all(|a| match a {
                    SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() => v6.scope_id() != 0,
                    _ => true,
                }),
                "link-local addresses carry their scope id: {:?}",
                server.addrs
            );
            for target in targets(port) {
                let from = echo_both(proto_of(proto), target);
                if proto == "udp" {
                    for f in from {
                        assert_eq!(f.ip(), target.ip(), "the echo leaves from {target}");
                        assert_eq!(f.port(), port);
                    }
                }
            }
        }
    }
}

#[test]
fn echo_server_bind_all_two_interfaces() {
    in_netns(
        "echo_server_bind_all_two_interfaces",
        Duration::from_secs(60),
        &[("ip", "iproute2")],
        across_interfaces,
    );
}

// ---- loopback, no privilege -----------------------------------------------------------------

/// `echo-server --bind all:0` on one port everywhere. With port 0, every address takes the
/// first address's free port, except where another socket (another program's, or another
/// test's) holds that port on it: that address takes its own free port (ARCHITECTURE.md,
/// "Listening everywhere"). That server is stopped and another started, up to 5 times; a
/// server that never shares its port fails here.
fn on_one_port(proto: &str, runtime: &str) -> AllServer {
    for attempt in 1..=5 {
        let server = AllServer::start(None, proto, "all:0", runtime);
        let port = server.addrs[0].port();
        if server.addrs.iter().all(|a| a.port() == port) {
            return server;
        }
        eprintln!(
            "[{runtime} {proto}] try {attempt}: port {port} was taken on another address: {:?}",
            server.addrs
        );
    }
    panic!("[{runtime} {proto}] 5 servers in a row did not get one port on every address");
}

#[test]
fn echo_server_bind_all_loopback() {
    for runtime in ["tokio", "smol"] {
        for proto in ["tcp", "udp"] {
            let server = on_one_port(proto, runtime);
            let port = server.addrs[0].port();
            assert_ne!(port, 0);
            // Every line names an address of an up interface, all on one port (port 0: the
            // first address's port everywhere).
            let possible: BTreeSet<IpAddr> = Listen::port(0)
                .routes()
                .unwrap()
                .iter()
                .map(|r| r.nic())
                .collect();
            for a in &server.addrs {
                assert!(possible.contains(&a.ip()), "{a} in {possible:?}");
                assert_eq!(a.port(), port, "{:?}", server.addrs);
            }
            // Through every loopback address (only those: nothing here talks to another
            // interface).
            let lo: Vec<SocketAddr> = server
                .addrs
                .iter()
                .copied()
                .filter(|a| a.ip().is_loopback())
                .collect();
            assert!(
                lo.iter().any(|a| a.ip() == IpAddr::from([127, 0, 0, 1])),
                "127.0.0.1 in {:?}",
                server.addrs
            );
            for target in lo {
                let from = echo_both(proto_of(proto), target);
                if proto == "udp" {
                    assert_eq!(from, [target, target]);
                }
            }
        }
    }
}

#[test]
fn echo_server_bind_all_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--proto", "tcp", "--bind", "all:x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("all:PORT needs a port"), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("all:PORT"));
}
