//! Row 9 of the hardening table, TLS handshake timeouts: hostile clients against
//! `echo-server --tls CERT KEY`, on tokio and on smol, on real loopback sockets (127.0.0.1
//! only), with a certificate `openssl req` makes at test time.
//!
//! - 1,000 clients connect and send nothing;
//! - 1,000 send a 5-byte partial TLS record header (`16 03 01 00 ff`) and nothing more;
//! - 100 trickle a ClientHello-looking prefix, one byte a second;
//! - all 2,100 at once: past the server's cap of `Conf::max_handshakes` (1,024) handshakes in
//!   progress, so that the first 1,024 are held to the deadline and the rest refused at once.
//!
//! The attackers connect back to back, as fast as the server accepts (at most 256 ahead of
//! it, so that the kernel's accept queue never overflows and blurs the timings; see
//! `attack`). Each attacker's connect and close (EOF or reset) are timed by a non-blocking
//! poll loop over every socket. Below the cap every attacker must be closed at the handshake deadline
//! (`Conf::ssl_handshake`, 4 s) ± 1 s while a genuine TLS client (pipes on tokio) completes
//! its handshake in under 1 s, five times during the attack. Past the cap see
//! [`flood_past_handshake_cap_tokio`]. Always: the server's memory stays flat (VmHWM − VmRSS
//! at start < 64 MiB) and its descriptors come back to their count at start after the
//! deadline. The server is a child process measured from outside (`/proc/<pid>/fd`,
//! `/proc/<pid>/status`); the tests hold [`LOCK`] so that they never run at the same time.
//! Run with `--nocapture` to see the figures.
//!
//! A missing `openssl` prints a loud SKIP line (a failure with `PIPES_REQUIRE_PEERS=1`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pipe_io::tls::{self, ServerName};
use pipe_io::{Conf, PipeBuilder, Proto, TlsClient};

mod support;
use support::{clients_that_fit, is_end, Server};

/// The tolerance around the handshake deadline, and the bound on "closed at once".
const SLACK: Duration = Duration::from_secs(1);

/// The library's close flush deadline (`Conf::close_timeout`).
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// The server's memory may grow by less than this (kB) over its RSS at start.
const MEMORY_BUDGET_KB: u64 = 64 << 10;

/// A genuine client's handshake must complete within this.
const GENUINE_LIMIT: Duration = Duration::from_secs(1);

/// A partial TLS record header: a handshake record of 255 bytes, none of which follow.
const PARTIAL_HEADER: [u8; 5] = [0x16, 0x03, 0x01, 0x00, 0xff];

/// The start of a ClientHello: record header (handshake, 512 bytes), handshake header
/// (ClientHello, 508 bytes), client version TLS 1.2, then the random. A trickler sends one
/// byte of it a second (it never gets far).
const HELLO_PREFIX: [u8; 16] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0xa5, 0x3c, 0xc3, 0x0f,
];

/// Held by every test, so that they never run at the same time.
static LOCK: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handshake deadline `echo-server` applies: the library's default.
fn deadline() -> Duration {
    Conf::default().ssl_handshake
}

/// The server's cap on handshakes in progress: the library's default.
fn cap() -> usize {
    Conf::default().max_handshakes
}

/// `cert.pem` and `key.pem` for localhost and 127.0.0.1, made once per test process; `None`
/// (after a loud SKIP line) without openssl.
fn cert() -> Option<&'static (PathBuf, PathBuf)> {
    static CERT: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    CERT.get_or_init(|| {
        support::have_openssl("tls_hostile").then(|| support::openssl_cert("hostile"))
    })
    .as_ref()
}

/// `echo-server --proto tcp --tls CERT KEY` on `runtime`.
fn tls_echo(runtime: &str, cert: &(PathBuf, PathBuf)) -> Server {
    let (c, k) = (
        cert.0.to_str().expect("path"),
        cert.1.to_str().expect("path"),
    );
    Server::echo("tcp", runtime, &["--tls", c, k])
}

/// `TcpExt: ListenOverflows` of `/proc/net/netstat`: SYNs and ACKs the kernel dropped because
/// a listener's accept queue was full (for the whole network namespace: other tests count
/// too).
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// What an attacker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing.
    Silent,
    /// [`PARTIAL_HEADER`], at once.
    Partial,
    /// [`HELLO_PREFIX`], one byte a second from its connect.
    Trickle,
}

const KINDS: [Kind; 3] = [Kind::Silent, Kind::Partial, Kind::Trickle];

/// One hostile client.
struct Attacker {
    kind: Kind,
    /// Dropped once the server has closed it.
    sock: Option<TcpStream>,
    connected: Instant,
    sent: usize,
    received: usize,
    /// Connect to EOF or reset.
    closed: Option<Duration>,
}

impl Attacker {
    fn connect(addr: SocketAddr, kind: Kind, i: usize) -> Attacker {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("attacker {i}: connect: {e}"));
        let connected = Instant::now();
        s.set_nodelay(true).expect("nodelay");
        s.set_nonblocking(true).expect("nonblocking");
        let mut a = Attacker {
            kind,
            sock: Some(s),
            connected,
            sent: 0,
            received: 0,
            closed: None,
        };
        if kind == Kind::Partial {
            a.write(&PARTIAL_HEADER, i);
        }
        a.step(&mut [0u8; 64], i);
        a
    }

    fn close(&mut self) {
        self.closed = Some(self.connected.elapsed());
        self.sock = None;
    }

    /// Write all of `bytes` (a few, into an empty send buffer); a reset closes.
    fn write(&mut self, bytes: &[u8], i: usize) {
        let Some(s) = self.sock.as_mut() else {
            return;
        };
        match s.write(bytes) {
            Ok(n) if n == bytes.len() => self.sent += n,
            Ok(n) => panic!("attacker {i}: only {n} of {} bytes written", bytes.len()),
            Err(e) if is_end(&e) => self.close(),
            Err(e) => panic!("attacker {i}: write: {e}"),
        }
    }

    /// Trickle a byte if one is due, then read what there is: whether it closed now.
    fn step(&mut self, buf: &mut [u8], i: usize) -> bool {
        if self.sock.is_none() {
            return false;
        }
        if self.kind == Kind::Trickle
            && self.sent < HELLO_PREFIX.len()
            && self.connected.elapsed() >= Duration::from_secs(self.sent as u64)
        {
            self.write(&HELLO_PREFIX[self.sent..=self.sent], i);
        }
        let Some(s) = self.sock.as_mut() else {
            return true;
        };
        loop {
            match s.read(buf) {
                // Bytes from the server (an alert, say): keep reading to its close.
                Ok(k) if k > 0 => self.received += k,
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_end(&e) => break,
                Err(e) => panic!("attacker {i}: read: {e}"),
            }
        }
        self.close();
        true
    }
}

/// One attempt of the genuine client.
#[derive(Debug)]
struct Attempt {
    /// When it started, since the attack's first connect.
    at: Duration,
    /// How long `open()` (connect and handshake) took.
    open: Duration,
    /// The handshake and an echo through the session, or why not.
    result: Result<(), String>,
}

/// A pipes TLS client on tokio, trusting `ca`, in its own thread: an attempt at each of
/// `start + offsets` (or as soon as the previous one is done).
fn genuine(
    addr: SocketAddr,
    ca: PathBuf,
    start: Instant,
    offsets: Vec<Duration>,
) -> JoinHandle<Vec<Attempt>> {
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let roots = tls::load_roots(&ca).expect("roots");
        let tls = TlsClient::new(roots)
            .server_name(ServerName::try_from("localhost").expect("name"))
            .build()
            .expect("TLS client");
        offsets
            .into_iter()
            .map(|off| {
                if let Some(wait) = (start + off).checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let at = start.elapsed();
                let (open, result) = rt.block_on(genuine_once(addr, tls.clone()));
                Attempt { at, open, result }
            })
            .collect()
    })
}

/// Open a TLS pipe to `addr` (timed), echo a line through it, close it.
async fn genuine_once(addr: SocketAddr, tls: pipe_io::Tls) -> (Duration, Result<(), String>) {
    let t = Instant::now();
    let opened = PipeBuilder::new(pipe_tokio::Tokio::current(), Proto::Tcp)
        .dest(addr)
        .conf(Conf {
            tls: Some(tls),
            ..Conf::default()
        })
        .open()
        .await;
    let open = t.elapsed();
    let p = match opened {
        Ok(p) => p,
        Err(e) => return (open, Err(format!("open: {e}"))),
    };
    let line = b"a genuine client\n";
    let result = async {
        p.send(line).await.map_err(|e| format!("send: {e}"))?;
        let mut got = Vec::new();
        while got.len() < line.len() {
            match p.recv_timeout(Duration::from_secs(2)).await {
                Ok(Some(m)) => got.extend_from_slice(&m.data),
                Ok(None) => return Err(format!("no echo in 2 s ({} bytes)", got.len())),
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        if got != line {
            return Err(format!("echo {got:?}"));
        }
        Ok(())
    }
    .await;
    p.close().await;
    (open, result)
}

/// What the genuine client should meet during the attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum During {
    /// A handshake within [`GENUINE_LIMIT`] (and an echo).
    Served,
}

/// The attackers, in connect order: the tricklers first (so that they are held when the
/// attack is past the cap), then silent and partial clients alternately.
fn connect_order(silent: usize, partial: usize, trickle: usize) -> Vec<Kind> {
    let mut order = vec![Kind::Trickle; trickle];
    for i in 0..silent.max(partial) {
        if i < silent {
            order.push(Kind::Silent);
        }
        if i < partial {
            order.push(Kind::Partial);
        }
    }
    order
}

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2?}", d))
}

/// Run one attack of `silent`, `partial` and `trickle` clients (scaled down only if the fd
/// limit requires it) against a fresh `echo-server --tls` on `runtime`, with the genuine
/// client trying five times during it; check everything the module doc says.
fn attack(
    test: &str,
    runtime: &str,
    (silent, partial, trickle): (usize, usize, usize),
    during: During,
) {
    let _heavy = heavy();
    let Some(cert) = cert() else {
        return;
    };
    let (deadline, cap) = (deadline(), cap());
    let want = silent + partial + trickle;
    let n = clients_that_fit(want, test);
    let scale = |k: usize| if n == want { k } else { (k * n / want).max(1) };
    let order = connect_order(scale(silent), scale(partial), scale(trickle));
    let n = order.len();
    let mut server = tls_echo(runtime, cert);
    let fd0 = server.settled_fds();
    let rss0 = server.status_kb("VmRSS");

    // Connect every attacker, polling them all every 50 connects, and at most AHEAD
    // connects ahead of what the server has taken (seen from outside: the descriptors it
    // holds, and the attackers it has closed): the kernel's accept queue (1,024) then never
    // overflows. An overflow drops the handshake's last ACK, and the server accepts that
    // connection a second later (SYN-ACK retransmit): its "refused at once" would read as a
    // close 1 s after the connect. Fast as the server accepts, and no faster.
    const AHEAD: usize = 256;
    let overflows0 = listen_overflows();
    let mut buf = [0u8; 256];
    let mut attackers: Vec<Attacker> = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, &kind) in order.iter().enumerate() {
        attackers.push(Attacker::connect(server.addr, kind, i));
        if i % 50 != 49 {
            continue;
        }
        let since = Instant::now();
        loop {
            for (j, a) in attackers.iter_mut().enumerate() {
                a.step(&mut buf, j);
            }
            let closed = attackers.iter().filter(|a| a.sock.is_none()).count();
            let taken = closed + server.fds().saturating_sub(fd0);
            if attackers.len() <= taken + AHEAD {
                break;
            }
            assert!(
                since.elapsed() < SLACK,
                "the server took no connection for 1 s ({} connected, {taken} taken)",
                attackers.len()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
    let connect_time = start.elapsed();
    let overflows = listen_overflows()
        .zip(overflows0)
        .map_or_else(|| "?".to_owned(), |(b, a)| b.saturating_sub(a).to_string());
    let last_connect = attackers.last().map(|a| a.connected).expect("attackers");

    // The genuine client, five times during the attack (every try starts before the first
    // attacker's deadline, and ends within 1 s if it passes).
    let offsets = (0..5)
        .map(|k| Duration::from_millis(500 + 500 * k))
        .collect();
    let good = genuine(server.addr, cert.0.clone(), start, offsets);

    // Poll every socket until all are closed, or the last one is past its deadline + 1 s.
    let mut open = attackers.iter().filter(|a| a.sock.is_some()).count();
    let stop = last_connect + deadline + SLACK + Duration::from_millis(200);
    let (mut peak_fds, mut peak_rss, mut sampled) = (fd0, rss0, Instant::now());
    while open > 0 && Instant::now() < stop {
        let mut any = false;
        for (i, a) in attackers.iter_mut().enumerate() {
            if a.step(&mut buf, i) {
                open -= 1;
                any = true;
            }
        }
        if sampled.elapsed() >= Duration::from_millis(100) {
            peak_fds = peak_fds.max(server.fds());
            peak_rss = peak_rss.max(server.status_kb("VmRSS"));
            sampled = Instant::now();
        }
        if !any {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let attempts = good.join().expect("genuine client thread");
    let back = server.wait_fds_at_most(fd0, CLOSE_FLUSH + SLACK);
    let hwm = server.status_kb("VmHWM");
    let grown = hwm.saturating_sub(rss0);
    // After a flood past the cap, the genuine client is still served.
    let after = if n > cap {
        genuine(
            server.addr,
            cert.0.clone(),
            Instant::now(),
            vec![Duration::ZERO],
        )
        .join()
        .expect("genuine client thread")
    } else {
        Vec::new()
    };

    // Sort the attackers: refused (closed within 1 s of connecting, or of the last connect:
    // past the cap each one gives way when a later one connects, and on a loaded machine
    // the flood may take longer than 1 s), held (closed at the deadline ± 1 s), early (in
    // between), late (after the deadline + 1 s, or never). The two windows stay apart while
    // the flood takes less than the deadline − 2 s (asserted below).
    let (lo, hi) = (deadline - SLACK, deadline + SLACK);
    let refused = |a: &&Attacker| {
        a.closed
            .is_some_and(|c| c < SLACK || a.connected + c <= last_connect + SLACK)
    };
    let held = |a: &&Attacker| a.closed.is_some_and(|c| c >= lo && c <= hi);
    let n_refused = attackers.iter().filter(refused).count();
    let n_held = attackers.iter().filter(held).count();
    let early = attackers
        .iter()
        .filter(|a| !refused(a) && a.closed.is_some_and(|c| c < lo))
        .count();
    let late = attackers
        .iter()
        .filter(|a| a.closed.is_none_or(|c| c > hi))
        .count();
    let times = |f: &dyn Fn(&&Attacker) -> bool| {
        let v: Vec<Duration> = attackers
            .iter()
            .filter(f)
            .filter_map(|a| a.closed)
            .collect();
        (v.iter().min().copied(), v.iter().max().copied())
    };
    let (held_min, held_max) = times(&held);
    let (_, refused_max) = times(&refused);
    let by_kind: Vec<String> = KINDS
        .iter()
        .filter(|&&k| order.contains(&k))
        .map(|&k| {
            let of = |f: &dyn Fn(&&Attacker) -> bool| {
                attackers.iter().filter(|a| a.kind == k).filter(f).count()
            };
            format!(
                "{k:?} {} ({} held, {} refused)",
                of(&|_| true),
                of(&held),
                of(&refused)
            )
        })
        .collect();
    let received: usize = attackers.iter().map(|a| a.received).sum();
    let expect_held = n.min(cap);
    eprintln!(
        "[{runtime}] {test}: {n} attackers connected in {connect_time:.1?} ({}); {n_held} \
         closed at the deadline {deadline:?} ± {SLACK:?} (min {}, max {}), {n_refused} \
         refused at once (max {}), {early} early, {late} late or open; {received} bytes came \
         back to them; {overflows} listen-queue overflows in this network namespace meanwhile",
        by_kind.join(", "),
        fmt_ms(held_min),
        fmt_ms(held_max),
        fmt_ms(refused_max),
    );
    for (k, a) in attempts.iter().chain(&after).enumerate() {
        eprintln!(
            "[{runtime}] {test}: genuine client {}: at {:.1?}, open() took {:.1?}: {:?}",
            k + 1,
            a.at,
            a.open,
            a.result
        );
    }
    eprintln!(
        "[{runtime}] {test}: server fds {fd0} at start, {peak_fds} at peak, back {back:?} \
         after the attack; VmRSS {rss0} kB at start, {peak_rss} kB peak seen, VmHWM {hwm} \
         kB: grew {grown} kB ({} MiB)",
        grown >> 10
    );

    assert!(
        connect_time + 2 * SLACK < deadline,
        "the flood took {connect_time:?}: too slow to tell refused from held attackers"
    );
    assert_eq!(late, 0, "{late} attackers not closed by the deadline + 1 s");
    assert_eq!(
        early, 0,
        "{early} attackers closed after 1 s but before the deadline − 1 s ({overflows} \
         listen-queue overflows meanwhile)"
    );
    // Past the cap, each genuine handshake started during the flood also evicts the oldest
    // attacker (up to 5 of them): between cap − 5 and cap attackers are held.
    let genuine_evictions = if n > cap { 5 } else { 0 };
    assert!(
        n_held <= expect_held && n_held + genuine_evictions >= expect_held,
        "{n_held} attackers held to the deadline: the cap of {cap} handshakes in progress \
         should hold {expect_held} of {n} (less at most {genuine_evictions} given way to the \
         genuine client), connected in {connect_time:?}"
    );
    assert_eq!(
        n_refused,
        n - n_held,
        "{n_refused} attackers ended at once, of {n} (cap {cap}, {n_held} held)"
    );
    // Past the cap the oldest handshake gives way to each newcomer: the ones held to the
    // deadline are the newest. (The accept queue is FIFO and one thread connects, so accept
    // order is connect order; a few may swap at the boundary.)
    if let Some(last_refused) = attackers.iter().filter(refused).map(|a| a.connected).max() {
        let out_of_order = attackers
            .iter()
            .filter(|a| held(a) && a.connected < last_refused)
            .count();
        assert!(
            out_of_order <= 32,
            "{out_of_order} attackers held to the deadline connected before the last one that \
             gave way: the oldest handshakes should give way first"
        );
    }
    assert!(
        peak_fds >= fd0 + expect_held * 9 / 10,
        "the server never held the connections ({peak_fds} fds, start {fd0})"
    );
    // Handshakes past the cap are ended as newer ones arrive. The engine's count never passes
    // the cap (pipe-core's tests check it exactly); seen from outside, an evicted socket closes
    // a moment after the accept that evicted it (its task runs on another thread), so during
    // a burst a few hundred may still be closing: well under what holding every attacker
    // (2,100) would take.
    assert!(
        peak_fds <= fd0 + cap + cap / 2,
        "the server held {peak_fds} fds (start {fd0}): past its cap of {cap} handshakes \
         plus the evicted ones still closing"
    );
    assert_eq!(attempts.len(), 5, "genuine attempts");
    for (k, a) in attempts.iter().enumerate() {
        let k = k + 1;
        assert!(
            a.open < GENUINE_LIMIT,
            "genuine client {k} (at {:?}): open() took {:?} ({:?})",
            a.at,
            a.open,
            a.result
        );
        match during {
            During::Served => {
                if let Err(e) = &a.result {
                    panic!("genuine client {k} (at {:?}) during the attack: {e}", a.at);
                }
            }
        }
    }
    for a in &after {
        assert!(
            a.result.is_ok() && a.open < GENUINE_LIMIT,
            "the genuine client after the deadline: open() took {:?}: {:?}",
            a.open,
            a.result
        );
    }
    back.unwrap_or_else(|k| panic!("the server holds {k} fds after the attack (start {fd0})"));
    assert!(
        grown < MEMORY_BUDGET_KB,
        "server memory grew by {grown} kB (VmHWM {hwm} kB, start VmRSS {rss0} kB)"
    );
}

/// 1,000 clients connect and send nothing. Passes when each is closed (EOF or reset) at the
/// handshake deadline (4 s) ± 1 s after its connect, none earlier; a genuine TLS client
/// (pipes, tokio) completes its handshake in under 1 s and echoes a line, five times during
/// the attack; the server's VmHWM stays within 64 MiB of its VmRSS at start; its descriptors
/// come back to their count at start after the deadline.
#[test]
fn silent_clients_closed_at_handshake_deadline_tokio() {
    attack("silent", "tokio", (1000, 0, 0), During::Served);
}

/// As the tokio test, on smol.
#[test]
fn silent_clients_closed_at_handshake_deadline_smol() {
    attack("silent", "smol", (1000, 0, 0), During::Served);
}

/// 1,000 clients send a partial record header (`16 03 01 00 ff`) and nothing more; passes as
/// the silent clients' test.
#[test]
fn partial_record_clients_closed_at_handshake_deadline_tokio() {
    attack("partial record", "tokio", (0, 1000, 0), During::Served);
}

/// As the tokio test, on smol.
#[test]
fn partial_record_clients_closed_at_handshake_deadline_smol() {
    attack("partial record", "smol", (0, 1000, 0), During::Served);
}

/// 100 clients trickle a ClientHello-looking prefix, one byte a second (bytes keep coming,
/// but the handshake deadline counts from the accept); passes as the silent clients' test.
#[test]
fn trickling_clients_closed_at_handshake_deadline_tokio() {
    attack("trickle", "tokio", (0, 0, 100), During::Served);
}

/// As the tokio test, on smol.
#[test]
fn trickling_clients_closed_at_handshake_deadline_smol() {
    attack("trickle", "smol", (0, 0, 100), During::Served);
}

/// All 2,100 at once (the 100 tricklers first, then silent and partial clients alternately):
/// past the cap of 1,024 handshakes in progress. Each newcomer past the cap ends the oldest
/// handshake (`TlsError::HandshakeEvicted`), so the newest 1,024 are held to their deadline.
/// Passes when exactly 1,024 attackers are closed at the deadline ± 1 s and the other 1,076
/// (the oldest) within 1 s of their connect or of the flood's last connect, none in between
/// or later; the server never holds more than 1.5 × the cap descriptors over its start
/// (evicted sockets close asynchronously); a genuine client completes its
/// handshake in under 1 s five times during the flood (a flood cannot lock it out: it would
/// have to outpace every new connection) and once after it; memory and descriptors as the
/// silent clients' test.
#[test]
fn flood_past_handshake_cap_tokio() {
    attack(
        "flood past the cap",
        "tokio",
        (1000, 1000, 100),
        During::Served,
    );
}

/// As the tokio test, on smol.
#[test]
fn flood_past_handshake_cap_smol() {
    attack(
        "flood past the cap",
        "smol",
        (1000, 1000, 100),
        During::Served,
    );
}
