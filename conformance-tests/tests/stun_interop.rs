//! STUN interop with software no one here wrote, over real loopback sockets (127.0.0.1 and ::1
//! only), driven with blocking `std::net` sockets and pipe-core's sans-IO agents.
//!
//! - our `StunClient` against coturn's `turnserver --stun-only` (UDP and TCP);
//! - coturn's `turnutils_stunclient` and Debian's `stun` (stun-client 0.97) against our `StunServer`.
//!
//! Install the tools with `apt-get install -y coturn stun-client`; a missing binary (or no `::1`)
//! goes through `conformance_tests::loud_skip`: a loud `SKIP` line to stderr and the test passes,
//! or, with `PIPES_REQUIRE_PEERS=1` (as `.ci/run` sets), a failure. Every wait has a deadline and
//! every child process is killed by a drop guard.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipe_core::stun::{
    decode, message_len, Attribute, EncodeOptions, Message, ServerStats, StunClient,
    StunClientConfig, StunEvent, StunServer, StunServerConfig, TransactionId, Transport,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn have(binary: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| dir.join(binary).is_file())
}

#[track_caller]
fn skip(test: &str, why: &str) {
    conformance_tests::loud_skip(&format!("stun_interop::{test}"), why);
}

fn ipv6_loopback() -> bool {
    UdpSocket::bind((V6, 0)).is_ok()
}

/// Kills and reaps the child on every path out of the test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh scratch directory for a child's files; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("pipes-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port `p` with `p` and `p + 1` free for UDP and TCP on both loopbacks (coturn also takes
/// `p + 1` for RFC 5780). Released before use, so the caller retries if a race steals it.
fn free_port_pair() -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(probe) = UdpSocket::bind((V4, 0)) else {
            continue;
        };
        let p = probe.local_addr().unwrap().port();
        drop(probe);
        let Some(q) = p.checked_add(1) else { continue };
        let free = [p, q].iter().all(|&port| {
            let v6 = !ipv6_loopback()
                || (UdpSocket::bind((V6, port)).is_ok() && TcpListener::bind((V6, port)).is_ok());
            UdpSocket::bind((V4, port)).is_ok() && TcpListener::bind((V4, port)).is_ok() && v6
        });
        if free {
            return p;
        }
    }
    panic!("no free loopback port pair within 10 s");
}

/// Run one Binding transaction with our client over `socket`, until an event or `deadline`.
fn bind_udp(
    socket: &UdpSocket,
    server: SocketAddr,
    conf: StunClientConfig,
    deadline: Instant,
) -> Option<StunEvent> {
    let mut client = StunClient::new(conf, u64::from(std::process::id()) ^ 0x5eed);
    client
        .start_binding(Instant::now(), server, Transport::Udp)
        .unwrap();
    let mut buf = [0u8; 1500];
    loop {
        while let Some(tx) = client.poll_transmit() {
            socket.send_to(&tx.payload, tx.dest).unwrap();
        }
        if let Some(event) = client.poll_event() {
            return Some(event);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let wake = client.poll_timeout().unwrap_or(deadline).min(deadline);
        socket
            .set_read_timeout(Some(
                wake.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => client.handle_input(Instant::now(), from, &buf[..n]),
            Err(_) => client.handle_timeout(Instant::now()),
        }
    }
}

fn quick_client() -> StunClientConfig {
    let mut conf = StunClientConfig::default();
    conf.rto = Duration::from_millis(100);
    conf
}

/// Start coturn STUN-only on `ip` (loopback) and wait until it answers a Binding request.
fn start_coturn(ip: IpAddr, dir: &TempDir) -> (ChildGuard, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let port = free_port_pair();
        let log = std::fs::File::create(dir.0.join("turnserver.log")).unwrap();
        let child = Command::new("turnserver")
            .arg("-n") // no config file: only the flags below
            .args([
                "--stun-only",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--simple-log",
            ])
            .args([
                "--listening-ip",
                &ip.to_string(),
                "--relay-ip",
                &ip.to_string(),
            ])
            .args(["--listening-port", &port.to_string()])
            .args(["--log-file", "stdout"])
            .arg("--pidfile")
            .arg(dir.0.join("turnserver.pid"))
            .arg("--userdb")
            .arg(dir.0.join("turndb"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver");
        let mut guard = ChildGuard(child);
        let server = SocketAddr::new(ip, port);
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        let ready_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
        while Instant::now() < ready_by {
            if let Ok(Some(_)) = guard.0.try_wait() {
                break; // exited: most likely lost the port race; retry with another
            }
            let attempt = Instant::now() + Duration::from_millis(500);
            if let Some(StunEvent::Success { .. }) =
                bind_udp(&socket, server, quick_client(), attempt)
            {
                return (guard, server);
            }
        }
        drop(guard);
        let log = std::fs::read_to_string(dir.0.join("turnserver.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "turnserver never answered on {server}; log:\n{log}"
        );
    }
}

#[test]
fn coturn_answers_our_client() {
    if !have("turnserver") {
        return skip(
            "coturn",
            "turnserver not installed (apt-get install coturn)",
        );
    }
    for ip in [V4, V6] {
        if ip == V6 && !ipv6_loopback() {
            skip("coturn", "no ::1 on this machine, IPv6 leg not run");
            continue;
        }
        let dir = TempDir::new("coturn");
        let (_coturn, server) = start_coturn(ip, &dir);
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        let me = socket.local_addr().unwrap();
        for fingerprint in [false, true] {
            let mut conf = quick_client();
            conf.fingerprint = fingerprint;
            let event = bind_udp(
                &socket,
                server,
                conf,
                Instant::now() + Duration::from_secs(10),
            );
            match event {
                Some(StunEvent::Success {
                    mapped,
                    response_origin,
                    ..
                }) => {
                    assert_eq!(mapped, me, "coturn saw us elsewhere");
                    assert_eq!(response_origin, Some(server));
                }
                other => panic!("coturn on {server}: {other:?}"),
            }
        }
        check_raw_response(&socket, server, me);
        check_tcp(server);
    }
}

/// Decode coturn's full answer ourselves: it carries SOFTWARE and (asked for) FINGERPRINT.
fn check_raw_response(socket: &UdpSocket, server: SocketAddr, me: SocketAddr) {
    let id = TransactionId(*b"pipes-interp");
    let request = Message::binding_request(id).encode_with(&EncodeOptions {
        integrity_key: None,
        fingerprint: true,
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        socket.send_to(&request, server).unwrap();
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let msg = decode(&buf[..n]).expect("coturn's response decodes");
        if msg.transaction_id != id || from != server {
            continue;
        }
        assert_eq!(msg.mapped_address(), Some(me));
        assert!(msg.has_fingerprint());
        let software = msg.attributes.iter().find_map(|a| match a {
            Attribute::Software(s) => Some(s.clone()),
            _ => None,
        });
        assert!(software
            .unwrap_or_default()
            .to_lowercase()
            .contains("coturn"));
        return;
    }
    panic!("no raw answer from coturn at {server}");
}

/// One Binding over TCP, framed with `message_len`.
fn check_tcp(server: SocketAddr) {
    let mut stream =
        TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("coturn TCP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let me = stream.local_addr().unwrap();
    let mut client = StunClient::new(StunClientConfig::default(), 77);
    client
        .start_binding(Instant::now(), server, Transport::Tcp)
        .unwrap();
    let tx = client.poll_transmit().unwrap();
    stream.write_all(&tx.payload).unwrap();
    let mut frame = vec![0u8; 20];
    stream.read_exact(&mut frame).unwrap();
    let len = message_len(&frame).expect("STUN header");
    assert!(len <= 2048, "frame of {len} bytes");
    frame.resize(len, 0);
    stream.read_exact(&mut frame[20..]).unwrap();
    client.handle_input(Instant::now(), server, &frame);
    match client.poll_event() {
        Some(StunEvent::Success { mapped, .. }) => assert_eq!(mapped, me),
        other => panic!("coturn over TCP: {other:?}"),
    }
}

/// Our responder on a blocking UDP socket in a thread; stopped and joined on drop.
struct OurServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    answered_to: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<ServerStats>>,
}

impl OurServer {
    fn start(ip: IpAddr) -> Self {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answered_to = Arc::new(Mutex::new(Vec::new()));
        let (stop2, answered2) = (stop.clone(), answered_to.clone());
        let thread = std::thread::spawn(move || {
            let mut server = StunServer::new(StunServerConfig::default());
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = server.handle(Instant::now(), addr, from, &buf[..n]) {
                    let _ = socket.send_to(&answer, from);
                    answered2.lock().unwrap().push(from);
                }
            }
            server.stats()
        });
        Self {
            addr,
            stop,
            answered_to,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> ServerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for OurServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Run a command to completion or kill it at the deadline; returns (exited ok, stdout+stderr).
fn run(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if status.is_some() {
        let _ = guard.0.stdout.take().unwrap().read_to_string(&mut out);
        let _ = guard.0.stderr.take().unwrap().read_to_string(&mut out);
    }
    let ok = status.is_some_and(|s| s.success());
    (
        ok,
        if status.is_none() {
            format!("<killed after {limit:?}>")
        } else {
            out
        },
    )
}

#[test]
fn turnutils_stunclient_against_our_server() {
    if !have("turnutils_stunclient") {
        return skip(
            "turnutils_stunclient",
            "not installed (apt-get install coturn)",
        );
    }
    for ip in [V4, V6] {
        if ip == V6 && !ipv6_loopback() {
            skip(
                "turnutils_stunclient",
                "no ::1 on this machine, IPv6 leg not run",
            );
            continue;
        }
        let server = OurServer::start(ip);
        let port = server.addr.port().to_string();
        let (ok, out) = run(
            Command::new("turnutils_stunclient").args(["-p", &port, &ip.to_string()]),
            Duration::from_secs(20),
        );
        let answered = server.answered_to.lock().unwrap().clone();
        let stats = server.finish();
        assert!(
            ok,
            "turnutils_stunclient failed against {ip}:{port}:\n{out}"
        );
        assert!(
            !answered.is_empty(),
            "we answered nothing: {stats:?}\n{out}"
        );
        // Its output prints the mapped address as "<ip>:<port>" (IPv6 without brackets).
        let seen = answered
            .iter()
            .any(|a| out.contains(&format!("UDP reflexive addr: {}:{}", a.ip(), a.port())));
        assert!(seen, "no reflexive address among {answered:?} in:\n{out}");
    }
}

/// Our RFC 5780 server on four blocking sockets, (A,p), (A,q), (B,p), (B,q), one thread, one
/// `StunServer`; each reply sent from the socket it names.
struct FourSockets {
    primary: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ServerStats>>,
}

impl FourSockets {
    fn start(a: IpAddr, b: IpAddr) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let sockets = loop {
            assert!(
                Instant::now() < deadline,
                "no free port pair on {a} and {b}"
            );
            let p = free_port_pair();
            let q = p + 1;
            let addrs = [(a, p), (a, q), (b, p), (b, q)];
            let socks: Vec<_> = addrs
                .iter()
                .filter_map(|x| UdpSocket::bind(*x).ok())
                .collect();
            if socks.len() == 4 {
                break socks;
            }
        };
        for s in &sockets {
            s.set_nonblocking(true).unwrap();
        }
        let primary = sockets[0].local_addr().unwrap();
        let alternate = sockets[3].local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conf = StunServerConfig::default();
            conf.alternate = Some((primary, alternate));
            let mut server = StunServer::new(conf);
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let mut idle = true;
                for s in &sockets {
                    let Ok((n, from)) = s.recv_from(&mut buf) else {
                        continue;
                    };
                    idle = false;
                    let local = s.local_addr().unwrap();
                    if let Some(reply) =
                        server.handle_request(Instant::now(), local, from, &buf[..n])
                    {
                        if let Some(out) = sockets
                            .iter()
                            .find(|o| o.local_addr().ok() == Some(reply.from))
                        {
                            let _ = out.send_to(&reply.payload, reply.to);
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            server.stats()
        });
        Self {
            primary,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> ServerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for FourSockets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Debian's `stun` (stun-client 0.97, vovida) speaks RFC 3489 only: no magic cookie, IPv4
/// only. Our server answers it as RFC 8489 §11 says (cookie copied, MAPPED-ADDRESS), so the
/// tool gets its mapped address; with `--alt`-style four sockets (127.0.0.1 and 127.0.0.2,
/// both loopback) its change-request tests pass too and it reports no NAT ("Open"). coturn
/// (which keeps RFC 3489 compatibility) is the reference the tool is checked against.
#[test]
fn debian_stun_client() {
    if !have("stun") {
        return skip(
            "debian_stun",
            "stun not installed (apt-get install stun-client)",
        );
    }
    // One address: the Binding test works, the change tests get 420.
    let server = OurServer::start(V4);
    let (_, out) = run(
        Command::new("stun").args([server.addr.to_string(), "-v".into()]),
        Duration::from_secs(30),
    );
    let answered = server.answered_to.lock().unwrap().clone();
    let stats = server.finish();
    assert!(stats.answered_classic > 0, "{stats:?}\n{out}");
    let me = answered.first().expect("answered someone");
    assert!(
        out.contains(&format!("MappedAddress = {}:{}", me.ip(), me.port())),
        "{out}"
    );

    // Four sockets on two loopback addresses: the full RFC 3489 test.
    let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let four = FourSockets::start(V4, b);
    let (_, out) = run(
        Command::new("stun").arg(four.primary.to_string()),
        Duration::from_secs(30),
    );
    let stats = four.finish();
    assert!(
        stats.answered_changed > 0,
        "no change request honoured: {stats:?}\n{out}"
    );
    assert!(
        out.contains("Primary: Open"),
        "stun vs our RFC 5780 server:\n{out}"
    );

    if !have("turnserver") {
        return skip(
            "debian_stun",
            "turnserver not installed, tool sanity check against coturn not run",
        );
    }
    let dir = TempDir::new("coturn-stun");
    let (_coturn, coturn) = start_coturn(V4, &dir);
    let (_, out) = run(
        Command::new("stun").arg(coturn.to_string()),
        Duration::from_secs(20),
    );
    assert!(
        out.contains("Primary: ") && !out.contains("could not reach"),
        "stun vs coturn:\n{out}"
    );
}
