//! What the programs' tests share: starting a program and reading its `listening on ADDR`
//! first line, measuring it from outside (`/proc/<pid>/fd`, `/proc/<pid>/status`), the loud
//! skip for a missing peer (a failure with `PIPES_REQUIRE_PEERS=1`), and the open-file limit.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// A program under test, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start one of our binaries and read its `listening on <addr>` first line.
    pub fn start(bin: &str, args: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().expect("addr"),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("first line within 20 s");
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {line:?}"))
            .parse()
            .expect("a socket address");
        server
    }

    /// `echo-server --proto PROTO --bind 127.0.0.1:0 --runtime RUNTIME` and `extra` flags.
    pub fn echo(proto: &str, runtime: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            "--proto",
            proto,
            "--bind",
            "127.0.0.1:0",
            "--runtime",
            runtime,
        ];
        args.extend_from_slice(extra);
        Server::start(env!("CARGO_BIN_EXE_echo-server"), &args)
    }

    /// `relay --proto PROTO --listen 127.0.0.1:0 --to TO --runtime RUNTIME` and `extra`.
    pub fn relay(proto: &str, runtime: &str, to: SocketAddr, extra: &[&str]) -> Server {
        let to = to.to_string();
        let mut args = vec![
            "--proto",
            proto,
            "--listen",
            "127.0.0.1:0",
            "--to",
            &to,
            "--runtime",
            runtime,
        ];
        args.extend_from_slice(extra);
        Server::start(env!("CARGO_BIN_EXE_relay"), &args)
    }

    /// Panics if the process has exited: a dead server holds no descriptors, and must not
    /// pass a test for it.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the server exited: {status}");
        }
    }

    /// Open descriptors: entries of `/proc/<pid>/fd`.
    pub fn fds(&mut self) -> usize {
        self.assert_alive();
        let dir = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {dir}: {e}"))
            .count()
    }

    /// The descriptor count once it holds still for 100 ms (at most 3 s): the count at start.
    pub fn settled_fds(&mut self) -> usize {
        let t0 = Instant::now();
        let (mut last, mut same) = (self.fds(), 0);
        while same < 5 && t0.elapsed() < Duration::from_secs(3) {
            thread::sleep(POLL);
            let n = self.fds();
            same = if n == last { same + 1 } else { 0 };
            last = n;
        }
        last
    }

    /// A `kB` figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
    pub fn status_kb(&mut self, key: &str) -> u64 {
        self.assert_alive();
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {path}"))
    }

    /// Poll until the descriptor count is at most `limit`; how long that took, or the count
    /// last seen.
    pub fn wait_fds_at_most(&mut self, limit: usize, within: Duration) -> Result<Duration, usize> {
        let t0 = Instant::now();
        loop {
            let n = self.fds();
            if n <= limit {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                return Err(n);
            }
            thread::sleep(POLL);
        }
    }
}

/// A missing peer: a loud SKIP line, or a panic with `PIPES_REQUIRE_PEERS=1`.
pub fn skip(test: &str, what: &str) {
    let line = format!("SKIP {test}: {what} is not installed (apt-get install {what})");
    if std::env::var_os("PIPES_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{line} (PIPES_REQUIRE_PEERS is set: a missing peer is a failure)");
    }
    let _ = writeln!(io::stderr().lock(), "\n!!!!! {line} !!!!!\n");
}

/// `openssl` is installed (else the loud skip for `test`).
pub fn have_openssl(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(test, "openssl");
    }
    ok
}

/// A fresh `cert.pem` and `key.pem` for localhost and 127.0.0.1 made by `openssl req`.
pub fn openssl_cert(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("pipes-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-days",
            "2",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        // An end-entity certificate (OpenSSL 3 marks `req -x509` certificates as CAs, which
        // webpki refuses as a server's certificate).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

/// Errors that mean the peer ended the connection.
pub fn is_end(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// The soft limit on open files of this process (the servers inherit it).
pub fn fd_soft_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    match line.split_whitespace().nth(3) {
        Some("unlimited") => usize::MAX,
        Some(v) => v.parse().expect("a number"),
        None => panic!("bad line {line:?}"),
    }
}

/// `want` clients if the fd limit fits them twice (our side and the server's) with 500 to
/// spare; else as many as fit, said loudly.
pub fn clients_that_fit(want: usize, test: &str) -> usize {
    let soft = fd_soft_limit();
    if soft >= want * 2 + 500 {
        return want;
    }
    let n = soft.saturating_sub(500) / 2;
    let _ = writeln!(
        io::stderr().lock(),
        "\n!!!!! {test}: the open-file limit is {soft}: {n} clients instead of {want} !!!!!\n"
    );
    assert!(n >= 50, "{test}: an open-file limit of {soft} is too low");
    n
}
