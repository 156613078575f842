//! The programs' command line: `--help`, `--version`, usage errors (exit 2, naming the flag),
//! runtime errors (exit 1), host names (`localhost`), `stun-client`'s default port, `-v`'s
//! connection log and Ctrl-C summary, and `echo-server --reliable` against a raw peer speaking
//! P2PD's reliable-UDP wire format. Loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ECHO: &str = env!("CARGO_BIN_EXE_echo-server");
const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const STUN_SERVER: &str = env!("CARGO_BIN_EXE_stun-server");
const STUN_CLIENT: &str = env!("CARGO_BIN_EXE_stun-client");

/// Every program, with the flags its `--help` must mention.
const PROGRAMS: &[(&str, &[&str])] = &[
    (env!("CARGO_BIN_EXE_demo"), &[]),
    (env!("CARGO_BIN_EXE_tcp-echo"), &["--runtime"]),
    (env!("CARGO_BIN_EXE_udp-stun"), &["--runtime", "SERVER"]),
    (
        ECHO,
        &[
            "--proto",
            "--bind",
            "--runtime",
            "--idle-timeout",
            "--write-stall",
            "--reliable",
            "--verbose",
        ],
    ),
    (
        RELAY,
        &[
            "--proto",
            "--listen",
            "--to",
            "--runtime",
            "--idle-timeout",
            "--write-stall",
            "--verbose",
        ],
    ),
    (env!("CARGO_BIN_EXE_interfaces"), &[]),
    (STUN_SERVER, &["--bind", "--runtime"]),
    (STUN_CLIENT, &["--bind", "--runtime", "SERVER"]),
];

fn name(bin: &str) -> &str {
    bin.rsplit('/').next().unwrap()
}

/// Run a program to its end (20 s at most): exit code, stdout, stderr.
fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start program");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {args:?} did not exit within 20 s", name(bin));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let code = status.code().expect("exited, not killed");
    (code, out.join().unwrap(), err.join().unwrap())
}

/// A server program, killed on drop; its stderr lines arrive on `err`.
struct Server {
    child: Child,
    addr: SocketAddr,
    err: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `bin` and read its `listening on <addr>` line.
    fn start(bin: &str, args: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let (etx, err) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            err,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("first line within 20 s");
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{}: first line was {line:?}", name(bin)))
            .parse()
            .expect("an address");
        server
    }

    /// The next stderr line that contains `what` (10 s at most).
    fn stderr_line(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {what:?} within 10 s"),
            }
        }
    }

    /// Send SIGINT (as Ctrl-C does) and wait for the exit code.
    fn interrupt(&mut self) -> i32 {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().expect("exited, not killed by the signal");
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGINT");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn help_exits_0_and_names_every_flag() {
    for (bin, flags) in PROGRAMS {
        for h in ["--help", "-h"] {
            let (code, out, err) = run(bin, &[h]);
            assert_eq!(code, 0, "{} {h}: {err}", name(bin));
            assert!(
                out.contains(&format!("usage: {}", name(bin))),
                "{}: {out}",
                name(bin)
            );
            for f in flags.iter().chain(&["--help", "--version"]) {
                assert!(
                    out.contains(f),
                    "{} --help does not mention {f}:\n{out}",
                    name(bin)
                );
            }
        }
    }
}

#[test]
fn version_exits_0() {
    for (bin, _) in PROGRAMS {
        for v in ["--version", "-V"] {
            let (code, out, _) = run(bin, &[v]);
            assert_eq!(code, 0);
            assert_eq!(
                out.trim(),
                format!("{} {} (pipes)", name(bin), env!("CARGO_PKG_VERSION"))
            );
        }
    }
}

#[test]
fn unknown_flags_exit_2_naming_the_flag() {
    for (bin, _) in PROGRAMS {
        let (code, out, err) = run(bin, &["--no-such-flag"]);
        assert_eq!(code, 2, "{}: {err}", name(bin));
        assert!(out.is_empty(), "{}: {out}", name(bin));
        assert!(
            err.contains("error: unknown flag --no-such-flag"),
            "{}: {err}",
            name(bin)
        );
        let (code, _, err) = run(bin, &["-q"]);
        assert_eq!(code, 2);
        assert!(err.contains("unknown flag -q"), "{}: {err}", name(bin));
    }
    // A misspelling gets the flag it was probably meant to be.
    let (code, _, err) = run(ECHO, &["--proto", "tcp", "--bnd", "127.0.0.1:0"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown flag --bnd (did you mean --bind?)"),
        "{err}"
    );
}

#[test]
fn bad_values_name_the_flag_in_plain_words() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            ECHO,
            &["--proto", "tcp", "--bind", "x"],
            r#"error: --bind: "x" is not an address (HOST:PORT)"#,
        ),
        (
            ECHO,
            &["--proto", "tcp", "--bind", "127.0.0.1:99999"],
            r#"error: --bind: "127.0.0.1:99999" has a bad port "99999""#,
        ),
        (
            ECHO,
            &["--proto", "sctp", "--bind", "127.0.0.1:0"],
            r#"error: --proto: "sctp" is not a protocol (tcp or udp)"#,
        ),
        (
            ECHO,
            &[
                "--proto",
                "tcp",
                "--bind",
                "127.0.0.1:0",
                "--runtime",
                "tokyo",
            ],
            r#"error: --runtime: "tokyo" is not a runtime (tokio or smol)"#,
        ),
        (
            ECHO,
            &[
                "--proto",
                "tcp",
                "--bind",
                "127.0.0.1:0",
                "--idle-timeout",
                "soon",
            ],
            r#"error: --idle-timeout: "soon" is not a number of seconds"#,
        ),
        (
            ECHO,
            &["--proto", "tcp", "--bind", "127.0.0.1:0", "--reliable"],
            "error: --reliable needs --proto udp",
        ),
        (
            RELAY,
            &[
                "--proto",
                "tcp",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "localhost",
            ],
            r#"error: --to: "localhost" is not an address (HOST:PORT)"#,
        ),
        (
            STUN_SERVER,
            &["--bind", "[::1"],
            r#"error: --bind: "[::1" is not an address (HOST:PORT)"#,
        ),
        (
            STUN_CLIENT,
            &["not a host"],
            r#"error: SERVER: "not a host" is not an address (HOST or HOST:PORT)"#,
        ),
        (
            ECHO,
            &[
                "--proto",
                "tcp",
                "--bind",
                "127.0.0.1:0",
                "--bind",
                "127.0.0.1:1",
            ],
            "error: --bind given twice (it takes one value)",
        ),
        (
            ECHO,
            &["--proto", "tcp", "--bind"],
            "error: --bind needs a value (ADDR)",
        ),
        (
            ECHO,
            &["--proto", "tcp", "--bind", "127.0.0.1:0", "extra"],
            r#"error: unexpected argument "extra""#,
        ),
    ];
    for (bin, args, want) in cases {
        let (code, _, err) = run(bin, args);
        assert_eq!(code, 2, "{} {args:?}: {err}", name(bin));
        assert!(err.starts_with(want), "{} {args:?}:\n{err}", name(bin));
        assert!(!err.contains("Error:"), "Debug output: {err}");
    }
}

#[test]
fn missing_required_flags_exit_2() {
    let cases: &[(&str, &[&str], &str)] = &[
        (ECHO, &[], "missing --proto tcp|udp"),
        (ECHO, &["--proto", "udp"], "missing --bind ADDR"),
        (
            RELAY,
            &["--proto", "tcp", "--listen", "127.0.0.1:0"],
            "missing --to ADDR",
        ),
        (STUN_SERVER, &[], "missing --bind ADDR"),
        (STUN_CLIENT, &[], "missing SERVER"),
    ];
    for (bin, args, want) in cases {
        let (code, _, err) = run(bin, args);
        assert_eq!(code, 2, "{} {args:?}: {err}", name(bin));
        assert!(err.contains(want), "{} {args:?}:\n{err}", name(bin));
        assert!(err.contains(&format!("usage: {}", name(bin))), "{err}");
    }
}

#[test]
fn runtime_errors_exit_1() {
    // A port already taken: the bind fails at run time.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for rt in ["tokio", "smol"] {
        let (code, out, err) = run(ECHO, &["--proto", "tcp", "--bind", &addr, "--runtime", rt]);
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty());
        assert!(err.starts_with("error: ") && err.contains(&addr), "{err}");
        assert!(!err.contains("Os {"), "Debug output: {err}");
    }
    // No STUN server there: "unreachable" is a runtime error too.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (code, out, err) = run(STUN_CLIENT, &[&addr]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.starts_with("error: "), "{err}");
}

/// A TCP echo through the relay: `relay --to localhost:PORT` with `echo-server` behind it.
#[test]
fn relay_to_localhost() {
    for (echo_rt, relay_rt) in [("smol", "tokio"), ("tokio", "smol")] {
        // The echo server listens where `localhost` resolves first, as the relay will.
        let echo = Server::start(
            ECHO,
            &[
                "--proto",
                "tcp",
                "--bind",
                "localhost:0",
                "--runtime",
                echo_rt,
            ],
        );
        let to = format!("localhost:{}", echo.addr.port());
        let mut relay = Server::start(
            RELAY,
            &[
                "--proto",
                "tcp",
                "--listen",
                "localhost:0",
                "--to",
                &to,
                "--runtime",
                relay_rt,
                "-v",
            ],
        );
        let mut c = TcpStream::connect(relay.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = b"through the relay, by name";
        c.write_all(msg).unwrap();
        let mut got = vec![0; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, msg);
        let me = c.local_addr().unwrap().to_string();
        drop(c);
        let open = relay.stderr_line("open tcp");
        assert!(open.contains(&me), "{open}");
        let close = relay.stderr_line("close tcp");
        assert!(
            close.contains(&me)
                && close.contains(&format!("{n} bytes in, {n} bytes out", n = msg.len())),
            "{close}"
        );
        assert_eq!(relay.interrupt(), 0);
    }
}

/// `-v`: an open and a close line with byte counts for one connection, and the summary on
/// Ctrl-C, which exits 0.
#[test]
fn verbose_logs_connections_and_a_summary() {
    for rt in ["tokio", "smol"] {
        let echo = Server::start(
            ECHO,
            &[
                "--proto",
                "tcp",
                "--bind",
                "127.0.0.1:0",
                "--runtime",
                rt,
                "--verbose",
            ],
        );
        let mut c = TcpStream::connect(echo.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"0123456789").unwrap();
        let mut got = [0; 10];
        c.read_exact(&mut got).unwrap();
        let me = c.local_addr().unwrap();
        drop(c);
        assert_eq!(echo.stderr_line("open"), format!("open tcp {me}"));
        assert_eq!(
            echo.stderr_line("close"),
            format!("close tcp {me}: the peer closed the connection, 10 bytes in, 10 bytes out")
        );
        // One more, still open at the signal: the server closes it and counts it.
        let mut c = TcpStream::connect(echo.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"abc").unwrap();
        let mut got = [0; 3];
        c.read_exact(&mut got).unwrap();
        echo.stderr_line("open");
        let mut echo = echo;
        assert_eq!(echo.interrupt(), 0);
        assert!(echo
            .stderr_line("close tcp")
            .contains("3 bytes in, 3 bytes out"));
        assert_eq!(
            echo.stderr_line("summary"),
            "summary: 2 connections served (0 still open), 13 bytes in, 13 bytes out"
        );
        drop(c);
    }
}

/// `echo-server --reliable`: a raw peer speaking P2PD's reliable UDP (`seq u64 BE | flag u8 |
/// payload`; 0 data, 1 ACK of exactly 9 bytes, 2 plain) gets its ACK and an echoed data
/// frame, which it ACKs back; the server then sends nothing more (no retransmission).
#[test]
fn reliable_udp_echo_speaks_p2pd() {
    for rt in ["tokio", "smol"] {
        let echo = Server::start(
            ECHO,
            &[
                "--proto",
                "udp",
                "--reliable",
                "--bind",
                "127.0.0.1:0",
                "--runtime",
                rt,
            ],
        );
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let seq: u64 = 0x0102_0304_0506_0708;
        let mut frame = seq.to_be_bytes().to_vec();
        frame.push(0);
        frame.extend_from_slice(b"reliable hello");
        s.send_to(&frame, echo.addr).unwrap();
        let (mut ack, mut data) = (None, None);
        let mut buf = [0; 2048];
        while ack.is_none() || data.is_none() {
            let (n, from) = s.recv_from(&mut buf).expect("ACK and echo within 5 s");
            assert_eq!(from, echo.addr);
            let d = buf[..n].to_vec();
            assert!(n >= 9, "short frame {d:?}");
            match d[8] {
                1 => ack = Some(d),
                0 => data = Some(d),
                f => panic!("unexpected flag {f} in {d:?}"),
            }
        }
        let ack = ack.unwrap();
        assert_eq!(ack.len(), 9, "an ACK is exactly 9 bytes");
        assert_eq!(&ack[..8], &seq.to_be_bytes());
        let data = data.unwrap();
        assert_eq!(&data[9..], b"reliable hello");
        // ACK the echo back: the server is satisfied and retransmits nothing.
        let mut our_ack = data[..8].to_vec();
        our_ack.push(1);
        s.send_to(&our_ack, echo.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(3500)))
            .unwrap();
        match s.recv_from(&mut buf) {
            Err(_) => {}
            Ok((n, _)) => panic!("after our ACK the server sent {:?}", &buf[..n]),
        }
        // A retransmitted data frame is acked again and not echoed twice.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&frame, echo.addr).unwrap();
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &ack[..]);
    }
}

/// `stun-client localhost` asks port 3478: run when 3478 is free on loopback (the default-port
/// parsing is also a unit test in the program).
#[test]
fn stun_client_defaults_to_port_3478() {
    let ip = ("localhost", 0)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
        .ip();
    let port = SocketAddr::new(ip, 3478);
    if UdpSocket::bind(port).is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIP stun_client_defaults_to_port_3478: {port} is taken !!!!!\n"
        );
        return;
    }
    let mut server = Server::start(STUN_SERVER, &["--bind", &port.to_string()]);
    assert_eq!(server.addr, port);
    for rt in ["tokio", "smol"] {
        let (code, out, err) = run(STUN_CLIENT, &["localhost", "--runtime", rt]);
        assert_eq!(code, 0, "{err}");
        let mapped: SocketAddr = out.trim().parse().expect("a mapped address");
        assert_eq!(mapped.ip(), ip);
    }
    assert_eq!(server.interrupt(), 0);
}
