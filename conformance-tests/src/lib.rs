//! The conformance suite's harness.
//!
//! Every scenario in [`scenarios`] is an `async fn` generic over the runtime (`R: Runtime`), or
//! over two runtimes (`S` for the server side, `C` for the client side) where a scenario has
//! both. `tests/conformance.rs` instantiates each one per [`Harness`] (tokio current-thread,
//! smol, smol's driver under async-std's executor) and for tokio ↔ smol pairs
//! ([`run_tokio_main`], [`run_smol_main`]).
//!
//! Rules the scenarios follow: real sockets on 127.0.0.1 and ::1 only; waits are on events
//! (a message, a callback, a channel) with generous deadlines ([`WAIT`]); "nothing more"
//! is shown with counters (`Pipe::stats`) once the expected events are in, never by listening
//! for a quiet window; timings are asserted only as generous bounds. Raw peers use `smol::Async` (async-io), which runs under
//! any executor because async-io drives its reactor from its own thread when needed.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future;
use pipe_io::{BoxFuture, Family, Message, Pipe, PipeBuilder, Proto, Runtime};
use pipe_smol::Smol;
use pipe_tokio::Tokio;

pub mod scenarios;

/// Deadline for anything expected within milliseconds (this runs on loaded 2-core boxes).
pub const WAIT: Duration = Duration::from_secs(5);
/// Whole-scenario watchdog: a hung scenario fails instead of hanging the suite.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// One way to run the suite: a runtime for pipes and an executor to block on.
pub trait Harness {
    /// The pipes runtime.
    type R: Runtime;
    /// Shown in failure messages.
    const NAME: &'static str;
    /// The runtime value; called inside [`Harness::block_on`].
    fn runtime() -> Self::R;
    /// Run `f` to completion on this harness's executor.
    fn block_on<F: Future>(f: F) -> F::Output;
}

/// tokio, current-thread runtime.
#[derive(Debug)]
pub struct TokioRt;

impl Harness for TokioRt {
    type R = Tokio;
    const NAME: &'static str = "tokio";
    fn runtime() -> Tokio {
        Tokio::current()
    }
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f)
    }
}

/// smol: `smol::block_on`, background tasks on smol's global executor.
#[derive(Debug)]
pub struct SmolRt;

impl Harness for SmolRt {
    type R = Smol;
    const NAME: &'static str = "smol";
    fn runtime() -> Smol {
        Smol::default()
    }
    fn block_on<F: Future>(f: F) -> F::Output {
        smol::block_on(f)
    }
}

/// The smol driver under async-std's executor.
#[derive(Debug)]
pub struct AsyncStdRt;

impl Harness for AsyncStdRt {
    type R = Smol;
    const NAME: &'static str = "async-std";
    fn runtime() -> Smol {
        Smol::with_spawner(|f| {
            async_std::task::spawn(f);
        })
    }
    fn block_on<F: Future>(f: F) -> F::Output {
        async_std::task::block_on(f)
    }
}

/// Run one scenario on harness `H`, under the watchdog.
pub fn run<H: Harness, F, Fut>(f: F)
where
    F: FnOnce(H::R) -> Fut,
    Fut: Future<Output = ()>,
{
    H::block_on(async move { within(WATCHDOG, H::NAME, f(H::runtime())).await })
}

/// A tokio ↔ smol pair, tokio driving the test: the body runs in a tokio current-thread
/// runtime; smol pipes run on smol's global executor and async-io's reactor thread.
pub fn run_tokio_main<F, Fut>(f: F)
where
    F: FnOnce(Tokio, Smol) -> Fut,
    Fut: Future<Output = ()>,
{
    TokioRt::block_on(async move {
        within(
            WATCHDOG,
            "tokio main + smol",
            f(Tokio::current(), Smol::default()),
        )
        .await
    })
}

/// A tokio ↔ smol pair, smol driving the test: tokio runs (current-thread) on a second thread.
pub fn run_smol_main<F, Fut>(f: F)
where
    F: FnOnce(Tokio, Smol) -> Fut,
    Fut: Future<Output = ()>,
{
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let thread = std::thread::Builder::new()
        .name("tokio-side".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            handle_tx.send(rt.handle().clone()).expect("send handle");
            rt.block_on(async move {
                let _ = stop_rx.recv().await;
            });
        })
        .expect("spawn the tokio thread");
    let handle = handle_rx.recv().expect("tokio handle");
    let tokio = {
        let _guard = handle.enter();
        Tokio::current()
    };
    smol::block_on(within(
        WATCHDOG,
        "smol main + tokio thread",
        f(tokio, Smol::default()),
    ));
    drop(stop_tx);
    thread.join().expect("tokio thread");
}

// ---- time ---------------------------------------------------------------------------------

/// Sleep on async-io's timer (works under every executor here). Used only as a stimulus
/// (a slow callback, a gap between writes), never to wait for a result.
pub async fn sleep(d: Duration) {
    smol::Timer::after(d).await;
}

/// `f`, or `None` after `d`.
pub async fn timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

/// `f`, or a panic naming `what` after `d`.
pub async fn within<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match timeout(d, f).await {
        Some(t) => t,
        None => panic!("timed out after {d:?}: {what}"),
    }
}

/// Assert `elapsed` is at least `frac` of `nominal` (timer slack below, never above).
#[track_caller]
pub fn assert_at_least(elapsed: Duration, nominal: Duration, frac: f64, what: &str) {
    assert!(
        elapsed >= nominal.mul_f64(frac),
        "{what}: {elapsed:?} is under {frac} × {nominal:?}"
    );
}

/// Run `f` and return how long it took.
pub async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let t = f.await;
    (t, start.elapsed())
}

// ---- addresses ----------------------------------------------------------------------------

/// The loopback address of a family: 127.0.0.1 or ::1 (the only addresses this suite uses).
pub fn lo(fam: Family) -> IpAddr {
    match fam {
        Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Loopback, any port.
pub fn lo0(fam: Family) -> SocketAddr {
    SocketAddr::new(lo(fam), 0)
}

/// A port on loopback that refuses connections for as long as the returned socket lives:
/// bound, never listening, so no other test can take it meanwhile.
pub fn refusing_port(fam: Family) -> (socket2::Socket, SocketAddr) {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(lo0(fam)),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    s.bind(&lo0(fam).into()).expect("bind");
    let addr = s
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet");
    (s, addr)
}

// ---- pipes --------------------------------------------------------------------------------

/// A server on loopback whose message callback echoes every message to its sender.
pub async fn echo_server<R: Runtime>(rt: R, proto: Proto, fam: Family) -> Pipe<R> {
    echo_builder(rt, proto, fam)
        .open()
        .await
        .expect("open echo server")
}

/// The builder of [`echo_server`], for adding conf or callbacks.
pub fn echo_builder<R: Runtime>(rt: R, proto: Proto, fam: Family) -> PipeBuilder<R> {
    PipeBuilder::new(rt, proto)
        .bind(lo0(fam))
        .on_message(|msg, pipe| async move {
            let _ = pipe.send_to(&msg.data, msg.from).await;
        })
}

/// Builders of client pipes bound to loopback (a client binds the any-address by default,
/// and this suite never listens beyond loopback).
pub trait BuilderExt {
    /// A client of `dest`, bound to the loopback address of `dest`'s family.
    fn to(self, dest: SocketAddr) -> Self;
}

impl<R: Runtime> BuilderExt for PipeBuilder<R> {
    fn to(self, dest: SocketAddr) -> Self {
        self.bind(lo0(Family::of_addr(&dest))).dest(dest)
    }
}

/// A client of `dest`, bound to loopback.
pub async fn client<R: Runtime>(rt: R, proto: Proto, dest: SocketAddr) -> Pipe<R> {
    PipeBuilder::new(rt, proto)
        .to(dest)
        .open()
        .await
        .expect("open client")
}

/// The next message of the all-messages subscription, within [`WAIT`].
pub async fn recv_msg<R: Runtime>(p: &Pipe<R>) -> Message {
    p.recv_timeout(WAIT)
        .await
        .expect("recv failed")
        .expect("no message within WAIT")
}

/// Send `data` and expect it back (the peer echoes): proves a pipe still works.
pub async fn round_trip<R: Runtime>(p: &Pipe<R>, data: &[u8]) {
    p.send(data).await.expect("send");
    assert_eq!(&recv_msg(p).await.data[..], data);
}

/// Read exactly `n` bytes of TCP stream messages (raw chunks), within [`WAIT`].
pub async fn recv_bytes<R: Runtime>(p: &Pipe<R>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend_from_slice(&recv_msg(p).await.data);
    }
    out
}

// ---- raw peers ----------------------------------------------------------------------------

/// A plain UDP socket on loopback, async through async-io.
pub fn raw_udp(fam: Family) -> smol::Async<UdpSocket> {
    smol::Async::<UdpSocket>::bind(lo0(fam)).expect("bind raw UDP")
}

/// The next datagram on a raw socket, or `None` after `d`.
pub async fn raw_recv(s: &smol::Async<UdpSocket>, d: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = timeout(d, s.recv_from(&mut buf)).await?.expect("raw recv");
    buf.truncate(n);
    Some((buf, from))
}

/// A plain TCP connection to `addr`, async through async-io.
pub async fn raw_tcp(addr: SocketAddr) -> smol::Async<TcpStream> {
    within(
        WAIT,
        "raw TCP connect",
        smol::Async::<TcpStream>::connect(addr),
    )
    .await
    .expect("raw TCP connect")
}

/// Make the connection's close send RST instead of FIN (SO_LINGER 0).
pub fn set_rst_on_close(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

// ---- recording callbacks ------------------------------------------------------------------

/// An append-only log that callbacks write to and scenarios wait on.
#[derive(Debug)]
pub struct Log<T> {
    items: Arc<Mutex<Vec<T>>>,
    tx: smol::channel::Sender<()>,
    rx: smol::channel::Receiver<()>,
}

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        }
    }
}

impl<T: Clone + Debug> Default for Log<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Debug> Log<T> {
    /// An empty log.
    pub fn new() -> Self {
        let (tx, rx) = smol::channel::unbounded();
        Self {
            items: Arc::default(),
            tx,
            rx,
        }
    }

    /// Append (from a callback).
    pub fn push(&self, t: T) {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        let _ = self.tx.try_send(());
    }

    /// What was logged so far.
    pub fn snapshot(&self) -> Vec<T> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait until at least `n` entries are logged (panics after [`WAIT`]); returns them all.
    pub async fn wait_len(&self, n: usize) -> Vec<T> {
        self.wait_until(|v| v.len() >= n, &format!("{n} log entries"))
            .await
    }

    /// Wait until `pred` holds for the log (panics after [`WAIT`]).
    pub async fn wait_until(&self, pred: impl Fn(&[T]) -> bool, what: &str) -> Vec<T> {
        let deadline = Instant::now() + WAIT;
        loop {
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if timeout(left, self.rx.recv()).await.is_none() {
                panic!("timed out after {WAIT:?} waiting for {what}; log: {snap:?}");
            }
        }
    }

    /// Wait for `n` entries and assert there are no more so far. A second firing that would
    /// come later is caught by the scenario's checks after a later event (the pipe's or the
    /// server's close, a sentinel message), never by listening for a quiet window.
    pub async fn wait_exactly(&self, n: usize) -> Vec<T> {
        let snap = self.wait_len(n).await;
        assert_eq!(snap.len(), n, "expected exactly {n} entries: {snap:?}");
        snap
    }
}

/// A message as text, for readable assertions.
pub fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

// ---- a runtime with test DNS (never, late, or a given list) ------------------------------

/// Wraps a runtime and replaces its DNS, the seam of the resolution tests: the machine is
/// offline (real lookups fail at once), and every address it gives is a loopback one.
#[derive(Debug, Clone)]
pub struct TestDns<R> {
    inner: R,
    answer: DnsAnswer,
}

#[derive(Debug, Clone)]
enum DnsAnswer {
    /// Never: how `dns_timeout` is shown to bound resolution.
    Never,
    /// 127.0.0.1 (every name, the destination's port) after a delay.
    After(Duration),
    /// This list, as given (the destination's port is not applied), the way a name with
    /// several A and AAAA records resolves: the Happy Eyeballs tests.
    Fixed(Arc<Vec<SocketAddr>>),
}

impl<R: Runtime> TestDns<R> {
    /// DNS that never answers.
    pub fn hang(inner: R) -> Self {
        Self {
            inner,
            answer: DnsAnswer::Never,
        }
    }

    /// DNS that answers 127.0.0.1 (every name) after `delay`.
    pub fn delayed(inner: R, delay: Duration) -> Self {
        Self {
            inner,
            answer: DnsAnswer::After(delay),
        }
    }

    /// Every name resolves to `addrs`, in this order.
    pub fn fixed(inner: R, addrs: Vec<SocketAddr>) -> Self {
        Self {
            inner,
            answer: DnsAnswer::Fixed(Arc::new(addrs)),
        }
    }
}

impl<R: Runtime> Runtime for TestDns<R> {
    type Udp = R::Udp;
    type Tcp = R::Tcp;
    type Listener = R::Listener;

    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        self.inner.sleep_until(deadline)
    }
    fn spawn(&self, future: BoxFuture<()>) {
        self.inner.spawn(future)
    }
    fn udp(&self, socket: UdpSocket) -> io::Result<Self::Udp> {
        self.inner.udp(socket)
    }
    fn tcp(&self, stream: TcpStream) -> io::Result<Self::Tcp> {
        self.inner.tcp(stream)
    }
    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Self::Listener> {
        self.inner.listener(listener)
    }
    fn resolve(&self, _host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let answer = self.answer.clone();
        Box::pin(async move {
            match answer {
                DnsAnswer::Never => future::pending().await,
                DnsAnswer::After(d) => {
                    sleep(d).await;
                    Ok(vec![SocketAddr::new(lo(Family::V4), port)])
                }
                DnsAnswer::Fixed(addrs) => Ok(addrs.as_ref().clone()),
            }
        })
    }
}

/// How many of this host's TCP sockets are connecting (SYN_SENT) to `addr`, from Linux's
/// `/proc/net/tcp` or `tcp6` (`None` where it cannot be read). Shows whether a connection
/// attempt is still open: closing the socket removes its entry at once.
pub fn syn_sent_to(addr: SocketAddr) -> Option<usize> {
    let file = if addr.is_ipv6() {
        "/proc/net/tcp6"
    } else {
        "/proc/net/tcp"
    };
    let text = std::fs::read_to_string(file).ok()?;
    let port = format!(":{:04X}", addr.port());
    Some(
        text.lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[2].ends_with(&port) && f[3] == "02"
            })
            .count(),
    )
}

/// A loopback address whose TCP connects hang (no SYN-ACK) for as long as the returned
/// sockets live: a listener with a backlog of 0 that never accepts, its one accept-queue
/// place taken by a connection made here. Linux drops SYNs to a listener whose accept queue
/// is full, so a connect to it stays in progress: a dead address that stays on loopback.
pub fn hanging_port(fam: Family) -> (socket2::Socket, TcpStream, SocketAddr) {
    let l = socket2::Socket::new(
        socket2::Domain::for_address(lo0(fam)),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    l.bind(&lo0(fam).into()).expect("bind");
    l.listen(0).expect("listen");
    let addr = l
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet");
    let filler = TcpStream::connect_timeout(&addr, WAIT).expect("fill the accept queue");
    (l, filler, addr)
}

/// The environment setting that turns every skip into a failure: `PIPES_REQUIRE_PEERS=1`.
/// `.ci/run` sets it, so a green CI run means every interop peer really ran.
pub const REQUIRE_PEERS: &str = "PIPES_REQUIRE_PEERS";

/// True when [`REQUIRE_PEERS`] is set to anything but empty or `0`.
pub fn peers_required() -> bool {
    std::env::var_os(REQUIRE_PEERS).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The one way a test of this crate skips for want of a real peer (a binary, privilege for a
/// network namespace, `::1`). Without [`REQUIRE_PEERS`] it prints a loud skip line straight
/// to the process's stderr, past the test harness's output capture, so a passing run still
/// shows it. With `PIPES_REQUIRE_PEERS=1` it panics with the same line: the test fails.
#[track_caller]
pub fn loud_skip(test: &str, why: &str) {
    let line = format!("SKIP {test}: {why}");
    if peers_required() {
        panic!("{line} ({REQUIRE_PEERS} is set: a missing peer is a failure)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n!!!!! {line} !!!!!\n");
}

/// The README's examples compile and run as doc tests, so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
