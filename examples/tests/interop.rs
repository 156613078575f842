//! Interop with code no one here wrote: CPython's socket module drives `echo-server`, and
//! the relay is tested with CPython (and socat, when installed) at both ends. Loopback only.
//! A missing peer prints a loud SKIP line, or fails the test when `PIPES_REQUIRE_PEERS=1` (as
//! `.ci/run` sets, after installing every peer). `skip` below is this crate's one way to skip;
//! it mirrors `conformance_tests::loud_skip` (examples does not depend on that crate).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process in its own process group, the whole group killed on drop: socat's forked
/// children (one per TCP connection or UDP peer, each with its `cat`) go with it.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.process_group(0).spawn().expect("spawn"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Skip `test` because `what` is not installed: a loud line straight to stderr (past the
/// harness's capture, so a passing run still shows it), or a panic with the same line when
/// `PIPES_REQUIRE_PEERS` is set to anything but empty or `0`.
#[track_caller]
fn skip(test: &str, what: &str) {
    let line = format!("SKIP {test}: {what} is not installed (apt-get install {what})");
    if std::env::var_os("PIPES_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{line} (PIPES_REQUIRE_PEERS is set: a missing peer is a failure)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n!!!!! {line} !!!!!\n");
}

/// Start one of our binaries and read its `listening on <addr>` line.
fn start(bin: &str, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start binary");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("first line within 20 s");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line was {line:?}"))
        .to_owned();
    (proc, addr)
}

/// Run a Python snippet with a deadline; it must exit 0.
fn python(script: &str, args: &[&str]) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "python exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("python did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CLIENT: &str = r#"
import socket, sys
proto, addr = sys.argv[1], sys.argv[2]
host, port = addr.rsplit(":", 1)
host = host.strip("[]")
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
for i in range(3):
    s = socket.socket(fam, kind)
    s.settimeout(5)
    s.connect((host, int(port)))
    for n in range(20):
        msg = b"interop %d %d " % (i, n) + bytes(range(64))
        if kind == socket.SOCK_DGRAM:
            # UDP may lose a datagram (a loaded machine): up to 3 tries of 5 s; an echo of
            # an earlier try is skipped.
            for attempt in range(3):
                s.sendall(msg)
                try:
                    got = s.recv(65536)
                    while got != msg and got.startswith(b"interop"):
                        got = s.recv(65536)
                    break
                except socket.timeout:
                    print("python", proto, addr, "no echo in 5 s, try", attempt + 2, file=sys.stderr)
            else:
                raise SystemExit("no echo after 3 tries")
            assert got == msg, (got, msg)
            continue
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed early")
            got += chunk
        assert got == msg, (got, msg)
    s.close()
print("python", proto, addr, "ok")
"#;

fn echo_server(runtime: &str) {
    if !have("python3") {
        return skip("echo_server", "python3");
    }
    for proto in ["tcp", "udp"] {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let (_p, addr) = start(
                env!("CARGO_BIN_EXE_echo-server"),
                &["--proto", proto, "--bind", bind, "--runtime", runtime],
            );
            python(CLIENT, &[proto, &addr]);
        }
    }
}

#[test]
fn echo_server_with_cpython_client_tokio() {
    echo_server("tokio");
}

#[test]
fn echo_server_with_cpython_client_smol() {
    echo_server("smol");
}

const ECHO_UPSTREAM: &str = r#"
import socket, sys, threading
proto = sys.argv[1]
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
if kind == socket.SOCK_DGRAM:
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)
s.listen(64)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn relay(runtime: &str) {
    if !have("python3") {
        return skip("relay", "python3");
    }
    for proto in ["tcp", "udp"] {
        let (_up, up_addr) = start("python3", &["-c", ECHO_UPSTREAM, proto]);
        let (_relay, relay_addr) = start(
            env!("CARGO_BIN_EXE_relay"),
            &[
                "--proto",
                proto,
                "--listen",
                "127.0.0.1:0",
                "--to",
                &up_addr,
                "--runtime",
                runtime,
            ],
        );
        python(CLIENT, &[proto, &relay_addr]);
    }
}

#[test]
fn relay_between_cpython_peers_tokio() {
    relay("tokio");
}

#[test]
fn relay_between_cpython_peers_smol() {
    relay("smol");
}

#[test]
fn relay_to_socat_echo() {
    if !have("socat") {
        return skip("relay_to_socat_echo", "socat");
    }
    if !have("python3") {
        return skip("relay_to_socat_echo", "python3");
    }
    // socat as the upstream echo server (TCP and UDP, forking per client). UDP uses
    // UDP-LISTEN with fork: one child per peer (each relay client's upstream socket), on a
    // socket connected to that peer, as the relay itself does. Not UDP-RECVFROM with fork (a
    // child per datagram): Debian's socat 1.7.4.4 races there. Its parent can peek a datagram
    // again before the child it forked for it has read it, and fork a second child, which
    // then reads the next datagram; when that one comes from another peer (the relay's next
    // client), that child never answers it and the parent never reads again (socat -d -d):
    // every later datagram was lost (seen: "no echo after 3 tries", about 1 run in 30 on a
    // loaded 2-core machine; socat's log showed two children forked for one packet).
    for (proto, listen) in [("tcp", "TCP-LISTEN"), ("udp", "UDP-LISTEN")] {
        let port = free_port(proto);
        let spec = format!("{listen}:{port},bind=127.0.0.1,fork,reuseaddr");
        // Its own process group, killed on drop: UDP-LISTEN's children never see an end.
        let _socat = Group::spawn(Command::new("socat").args([&spec, "EXEC:cat"]));
        wait_port(proto, port);
        let up = format!("127.0.0.1:{port}");
        let (_relay, relay_addr) = start(
            env!("CARGO_BIN_EXE_relay"),
            &["--proto", proto, "--listen", "127.0.0.1:0", "--to", &up],
        );
        python(CLIENT, &[proto, &relay_addr]);
    }
}

fn free_port(proto: &str) -> u16 {
    if proto == "tcp" {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn wait_port(proto: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let bound = if proto == "tcp" {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        } else {
            // A UDP port is taken when /proc/net/udp lists a socket on it: looked up, not
            // probed with a bind, which could hold the port at the instant socat binds it.
            let local = format!(":{port:04X}");
            std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| {
                t.lines().any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.ends_with(&local))
                })
            })
        };
        if bound {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("socat did not start on port {port}");
}
