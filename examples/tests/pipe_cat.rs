//! `pipe-cat`: its command line (`--help`, `--version`, an unknown flag, bad addresses),
//! 100 MiB through stdin and stdout byte-exact against socat (pipe-cat connecting to a socat
//! echo, and pipe-cat listening for socat, both directions), and half-close: pipe-cat sends
//! a request, its stdin ends, and it still gets the whole answer (which the peer sends only
//! after reading EOF) from socat and from a CPython server. On tokio and smol. socat and
//! python3 are peers: missing, they are a loud skip (a failure with PIPES_REQUIRE_PEERS=1).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::{skip, POLL};

const BIN: &str = env!("CARGO_BIN_EXE_pipe-cat");
const MIB: usize = 1 << 20;
const RUNTIMES: [&str; 2] = ["tokio", "smol"];

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run pipe-cat")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version_exit_0() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("usage: pipe-cat"), "{text}");
    for flag in ["--listen", "--udp", "--runtime", "-v, --verbose"] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let o = run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8(o.stdout)
        .unwrap()
        .starts_with("pipe-cat "));
}

#[test]
fn an_unknown_flag_exits_2_naming_it() {
    let o = run(&["--frobnicate", "127.0.0.1", "9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown flag --frobnicate"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--lisen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean --listen"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_addresses_exit_2_naming_the_argument() {
    for (args, names) in [
        (&["bad host!", "80"][..], "HOST: \"bad host!\""),
        (&["127.0.0.1", "99999"][..], "PORT: \"99999\""),
        (&["127.0.0.1", "0"][..], "PORT: \"0\""),
        (
            &["127.0.0.1:80", "80"][..],
            "HOST: \"127.0.0.1:80\" holds a port",
        ),
        (&["127.0.0.1"][..], "missing PORT"),
        (&["--listen", "nowhere"][..], "ADDR: \"nowhere\""),
        (
            &["--listen", "127.0.0.1:99999"][..],
            "ADDR: \"127.0.0.1:99999\"",
        ),
        (
            &["--listen", "127.0.0.1", "80"][..],
            "--listen takes one ADDR",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(names), "{args:?}: {}", stderr(&o));
    }
    // A refused connection is a runtime error: exit 1, in plain words.
    let port = free_port();
    let o = run(&["127.0.0.1", &port.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
}

#[test]
fn a_hostname_is_accepted() {
    // `localhost` resolves; nothing listens on the port: the connect is refused (exit 1),
    // not a usage error.
    let port = free_port();
    let o = run(&["localhost", &port.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

// ---- peers -------------------------------------------------------------------------------

fn have(bin: &str, arg: &str, test: &str) -> bool {
    let ok = Command::new(bin)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(test, bin);
    }
    ok
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A socat server (`fork`: every connection gets its own `SYSTEM` command), killed on drop.
struct Socat(Child, SocketAddr);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Socat {
    /// `socat -t 30 TCP-LISTEN:PORT,bind=127.0.0.1,fork SYSTEM:<cmd>`, once it accepts.
    ///
    /// `-t 30`: once the client's FIN reaches socat, socat gives the command's output only
    /// `-t` seconds (0.5 by default) without data before it ends the connection, and an
    /// answering script that forks a thousand `cat`s can pause longer than that on a loaded
    /// machine (seen: 204,811 of 2,097,152 bytes of half_close_against_socat's answer). The
    /// connection still ends as soon as the command exits.
    fn serve(cmd: &str) -> Socat {
        let port = free_port();
        let child = Command::new("socat")
            .args(["-t", "30"])
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("SYSTEM:{cmd}"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start socat");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let s = Socat(child, addr);
        // Listening once a connect succeeds (its forked child sees EOF and exits).
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {addr}");
            thread::sleep(POLL);
        }
        s
    }
}

/// Deterministic bytes (xorshift), so a difference is a real one.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pipe-cat-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Run pipe-cat with `args`, `input` on its stdin (written by a thread, then closed), and
/// return its stdout, within `limit`.
fn cat_through(args: &[&str], input: Vec<u8>, limit: Duration) -> Vec<u8> {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pipe-cat");
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, limit, &format!("pipe-cat {args:?}"));
    writer.join().unwrap();
    out
}

/// The child's stdout once it exits 0, within `limit` (killed and a failure otherwise).
fn wait_output(mut child: Child, limit: Duration, what: &str) -> Vec<u8> {
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    // Read by the caller when it took the child's stderr.
    let stderr = child.stderr.take();
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {limit:?}; stderr: {}",
                err_reader.join().unwrap()
            );
        }
        thread::sleep(POLL);
    };
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{what}: {status}; stderr: {err}");
    out
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

// ---- 100 MiB -----------------------------------------------------------------------------

#[test]
fn hundred_mib_through_a_socat_echo_byte_exact() {
    let test = "hundred_mib_through_a_socat_echo_byte_exact";
    if !have("socat", "-V", test) {
        return;
    }
    // socat's SYSTEM:cat echoes, and closes after its input's EOF: pipe-cat's half-close.
    let echo = Socat::serve("cat");
    let port = echo.1.port().to_string();
    for (i, rt) in RUNTIMES.iter().enumerate() {
        let input = data(100 * MIB, 7 + i as u64);
        let t0 = Instant::now();
        let out = cat_through(
            &["--runtime", rt, "127.0.0.1", &port],
            input.clone(),
            Duration::from_secs(240),
        );
        assert_same(&out, &input, &format!("[{rt}] 100 MiB echoed"));
        eprintln!(
            "[{rt}] 100 MiB each way through socat in {:?}",
            t0.elapsed()
        );
    }
}

#[test]
fn hundred_mib_between_a_listening_pipe_cat_and_socat_byte_exact() {
    let test = "hundred_mib_between_a_listening_pipe_cat_and_socat_byte_exact";
    if !have("socat", "-V", test) {
        return;
    }
    for (i, rt) in RUNTIMES.iter().enumerate() {
        // socat to pipe-cat's stdout.
        let input = data(100 * MIB, 21 + i as u64);
        let file = temp_file(&format!("{rt}-in"), &input);
        let (cat, addr) = listening_cat(rt, Stdio::null());
        // Spawned, not waited for: pipe-cat's stdout must be read while socat sends.
        let mut socat = Command::new("socat")
            .arg("-u")
            .arg(format!("FILE:{}", file.display()))
            .arg(format!("TCP:{addr}"))
            .spawn()
            .expect("socat");
        let out = wait_output(cat, Duration::from_secs(240), "pipe-cat --listen");
        assert!(socat.wait().unwrap().success());
        assert_same(&out, &input, &format!("[{rt}] socat -> pipe-cat stdout"));

        // pipe-cat's stdin to socat.
        let sink = std::env::temp_dir().join(format!("pipe-cat-{}-{rt}-out", std::process::id()));
        let (mut cat, addr) = listening_cat(rt, Stdio::piped());
        let mut stdin = cat.stdin.take().unwrap();
        let to_send = input.clone();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&to_send);
        });
        let mut socat = Command::new("socat")
            .arg("-u")
            .arg(format!("TCP:{addr}"))
            .arg(format!("CREATE:{}", sink.display()))
            .spawn()
            .expect("socat");
        wait_output(cat, Duration::from_secs(240), "pipe-cat --listen (stdin)");
        writer.join().unwrap();
        assert!(socat.wait().unwrap().success());
        assert_same(
            &std::fs::read(&sink).unwrap(),
            &input,
            &format!("[{rt}] pipe-cat stdin -> socat"),
        );
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&sink);
    }
}

/// `pipe-cat --listen 127.0.0.1:0`, and the address from its `listening on` line (stderr).
fn listening_cat(rt: &str, stdin: Stdio) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "--runtime", rt, "127.0.0.1:0"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pipe-cat --listen");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(err).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = tx.send(first);
        // Keep draining, so the program never blocks on stderr.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("listening line");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .parse()
        .unwrap();
    // wait_output takes stderr again: give it an empty pipe.
    child.stderr = None;
    (child, addr)
}

// ---- half-close --------------------------------------------------------------------------

/// What the servers below answer to a request, once they have read it to EOF: a line with
/// its length, then 2 MiB of its bytes repeated (so the answer needs many writes after the
/// client's FIN).
fn answer(request: &[u8]) -> Vec<u8> {
    let mut a = format!("{} bytes\n", request.len()).into_bytes();
    while a.len() < 2 * MIB {
        a.extend_from_slice(request);
    }
    a.truncate(2 * MIB);
    a
}

#[test]
fn half_close_against_socat() {
    let test = "half_close_against_socat";
    if !have("socat", "-V", test) {
        return;
    }
    // The shell reads the whole request (to EOF) before it answers.
    let script = std::env::temp_dir().join(format!("pipe-cat-{}-answer.sh", std::process::id()));
    std::fs::write(
        &script,
        r#"req=$(mktemp)
cat > "$req"
size=$(wc -c < "$req")
[ "$size" -gt 0 ] || exit 0
head="$size bytes"
printf '%s
' "$head"
n=$(( 2 * 1024 * 1024 / size + 2 ))
i=0
while [ $i -lt $n ]; do cat "$req"; i=$((i + 1)); done | head -c $(( 2 * 1024 * 1024 - ${#head} - 1 ))
rm -f "$req"
"#,
    )
    .unwrap();
    let server = Socat::serve(&format!("sh {}", script.display()));
    let port = server.1.port().to_string();
    for rt in RUNTIMES {
        let request = b"GET /answer please\n".repeat(100);
        let out = cat_through(
            &["--runtime", rt, "127.0.0.1", &port],
            request.clone(),
            Duration::from_secs(60),
        );
        assert_same(&out, &answer(&request), &format!("[{rt}] socat's answer"));
    }
    let _ = std::fs::remove_file(&script);
}

#[test]
fn half_close_against_cpython() {
    let test = "half_close_against_cpython";
    if !have("python3", "--version", test) {
        return;
    }
    // One connection per run: read to EOF, then answer (length line, then 2 MiB of the
    // request repeated), then close.
    let py = r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
for _ in range(int(sys.argv[1])):
    c, _ = s.accept()
    req = b""
    while True:
        b = c.recv(65536)
        if not b: break
        req += b
    ans = b"%d bytes\n" % len(req)
    while len(ans) < 2 * 1024 * 1024: ans += req
    c.sendall(ans[:2 * 1024 * 1024])
    c.close()
"#;
    let mut server = Command::new("python3")
        .args(["-c", py, &RUNTIMES.len().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().to_string();
    for rt in RUNTIMES {
        let request = format!("POST /{rt} half-closed\n").repeat(50).into_bytes();
        let out = cat_through(
            &["--runtime", rt, "127.0.0.1", &port],
            request.clone(),
            Duration::from_secs(60),
        );
        assert_same(&out, &answer(&request), &format!("[{rt}] CPython's answer"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = server.try_wait().unwrap() {
            assert!(s.success(), "python3: {s}");
            break;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            panic!("the CPython server did not finish");
        }
        thread::sleep(POLL);
    }
}

#[test]
fn verbose_logs_open_and_close_with_byte_counts() {
    let test = "verbose_logs_open_and_close_with_byte_counts";
    if !have("socat", "-V", test) {
        return;
    }
    let echo = Socat::serve("cat");
    let port = echo.1.port().to_string();
    for rt in RUNTIMES {
        let mut child = Command::new(BIN)
            .args(["-v", "--runtime", rt, "localhost", &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"twelve bytes")
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        child.stderr = None;
        let out = wait_output(child, Duration::from_secs(30), "pipe-cat -v");
        assert_eq!(out, b"twelve bytes");
        let log = err_reader.join().unwrap();
        assert!(log.contains(&format!("open tcp 127.0.0.1:{port}")), "{log}");
        assert!(
            log.contains("12 bytes in, 12 bytes out"),
            "[{rt}] the close line: {log}"
        );
    }
}
