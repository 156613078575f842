//! A deterministic runtime for driver tests: a virtual clock, a manual executor that polls
//! every task in spawn order, and sockets on loopback whose readiness the executor supplies.
//!
//! Readiness is "may be ready" (the seam's contract): a readiness future completes on its
//! second poll, so the I/O tasks retry their non-blocking operation once per round. The clock
//! moves only when the world is quiet (no socket operation moved a byte for a number of
//! rounds): it then jumps to the earliest pending timer. So a 30-second idle deadline is
//! tested in milliseconds, at exactly its virtual instant, whatever the machine's load.

#![allow(dead_code)]

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pipe_io::{BoxFuture, ListenerIo, Readiness, Runtime, TcpIo, UdpIo};

/// Rounds with no socket activity before the clock jumps to the next timer.
const QUIET_ROUNDS: u32 = 16;

struct Inner {
    epoch: Instant,
    now: Mutex<Instant>,
    tasks: Mutex<Vec<BoxFuture<()>>>,
    spawned: Mutex<Vec<BoxFuture<()>>>,
    /// Deadlines of sleeps that were pending in the last round.
    deadlines: Mutex<Vec<Instant>>,
    /// Bytes, datagrams or connections moved by any socket.
    activity: AtomicU64,
}

/// The simulated runtime. Clones share one executor and clock.
#[derive(Clone)]
pub struct Sim(Arc<Inner>);

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sim(t+{:?})", self.elapsed())
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        // Tests may read the clock; the core may not.
        #[allow(clippy::disallowed_methods)]
        let epoch = Instant::now();
        Sim(Arc::new(Inner {
            epoch,
            now: Mutex::new(epoch),
            tasks: Mutex::new(Vec::new()),
            spawned: Mutex::new(Vec::new()),
            deadlines: Mutex::new(Vec::new()),
            activity: AtomicU64::new(0),
        }))
    }

    /// Virtual time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        *self.0.now.lock().unwrap() - self.0.epoch
    }

    fn active(&self) {
        self.0.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// Run `fut` (and every task) until it completes, or panic once virtual time passes
    /// `limit`.
    pub fn block_on<T: Send + 'static>(
        &self,
        limit: Duration,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let out = Arc::new(Mutex::new(None));
        let slot = out.clone();
        self.spawn(Box::pin(async move {
            let t = fut.await;
            *slot.lock().unwrap() = Some(t);
        }));
        let mut cx = Context::from_waker(Waker::noop());
        let mut quiet = 0;
        let mut last = self.0.activity.load(Ordering::Relaxed);
        loop {
            let mut tasks = std::mem::take(&mut *self.0.tasks.lock().unwrap());
            tasks.append(&mut self.0.spawned.lock().unwrap());
            self.0.deadlines.lock().unwrap().clear();
            tasks.retain_mut(|t| t.as_mut().poll(&mut cx).is_pending());
            let mut all = self.0.tasks.lock().unwrap();
            let new = std::mem::take(&mut *all);
            *all = tasks;
            all.extend(new);
            drop(all);
            if let Some(t) = out.lock().unwrap().take() {
                return t;
            }
            let now = self.0.activity.load(Ordering::Relaxed);
            if now != last || !self.0.spawned.lock().unwrap().is_empty() {
                last = now;
                quiet = 0;
                continue;
            }
            quiet += 1;
            if quiet < QUIET_ROUNDS {
                continue;
            }
            quiet = 0;
            // Quiet: jump to the earliest timer (or creep forward a millisecond).
            let next = self.0.deadlines.lock().unwrap().iter().min().copied();
            let mut clock = self.0.now.lock().unwrap();
            *clock = match next {
                Some(d) if d > *clock => d,
                _ => *clock + Duration::from_millis(1),
            };
            assert!(
                *clock - self.0.epoch <= limit,
                "the simulation passed its limit of {limit:?} of virtual time"
            );
        }
    }
}

/// A future that is pending once, then ready: readiness that may be spurious.
struct Once(bool);

impl Future for Once {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

struct Sleep {
    sim: Sim,
    at: Instant,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if *self.sim.0.now.lock().unwrap() >= self.at {
            return Poll::Ready(());
        }
        self.sim.0.deadlines.lock().unwrap().push(self.at);
        Poll::Pending
    }
}

impl Runtime for Sim {
    type Udp = SimUdp;
    type Tcp = SimTcp;
    type Listener = SimListener;

    fn now(&self) -> Instant {
        *self.0.now.lock().unwrap()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(Sleep {
            sim: self.clone(),
            at: deadline,
        })
    }
    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawned.lock().unwrap().push(future);
    }
    fn udp(&self, socket: UdpSocket) -> io::Result<SimUdp> {
        socket.set_nonblocking(true)?;
        Ok(SimUdp(socket, self.clone()))
    }
    fn tcp(&self, stream: TcpStream) -> io::Result<SimTcp> {
        stream.set_nonblocking(true)?;
        Ok(SimTcp(stream, self.clone()))
    }
    fn listener(&self, listener: TcpListener) -> io::Result<SimListener> {
        listener.set_nonblocking(true)?;
        Ok(SimListener(listener, self.clone()))
    }
    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            let ip = host.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::NotFound, "the simulation has no DNS")
            })?;
            Ok(vec![SocketAddr::new(ip, port)])
        })
    }
}

/// Count an operation that moved something as activity.
fn counted<T>(sim: &Sim, r: io::Result<T>) -> io::Result<T> {
    if r.is_ok() {
        sim.active();
    }
    r
}

pub struct SimUdp(UdpSocket, Sim);
pub struct SimTcp(TcpStream, Sim);
pub struct SimListener(TcpListener, Sim);

macro_rules! once_ready {
    ($($t:ty),+) => {$(
        impl Readiness for $t {
            async fn readable(&self) -> io::Result<()> {
                Once(false).await;
                Ok(())
            }
            async fn writable(&self) -> io::Result<()> {
                Once(false).await;
                Ok(())
            }
        }
    )+};
}
once_ready!(SimUdp, SimTcp);

impl UdpIo for SimUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        counted(&self.1, self.0.recv_from(buf))
    }
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        counted(&self.1, self.0.send_to(buf, to))
    }
}

impl TcpIo for SimTcp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        counted(&self.1, (&self.0).read(buf))
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match (&self.0).write(buf) {
            // A write that moved nothing is not activity.
            Ok(0) => Ok(0),
            r => counted(&self.1, r),
        }
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.0.take_error()
    }
}

impl ListenerIo for SimListener {
    type Stream = SimTcp;
    async fn accept(&self) -> io::Result<(SimTcp, SocketAddr)> {
        loop {
            match self.0.accept() {
                Ok((s, a)) => {
                    self.1.active();
                    s.set_nonblocking(true)?;
                    return Ok((SimTcp(s, self.1.clone()), a));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Once(false).await,
                Err(e) => return Err(e),
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A raw TCP peer driven from inside the simulation (non-blocking std socket).
pub struct Peer(pub TcpStream, Sim);

impl Peer {
    /// Connect to `addr` (loopback: the connect completes at once).
    pub fn connect(sim: &Sim, addr: SocketAddr) -> Peer {
        Self::connect_with(sim, addr, None)
    }

    /// Connect with a small receive buffer: a peer that does not read fills up fast and
    /// stays full (the kernel does not grow a window nobody drains).
    pub fn connect_small(sim: &Sim, addr: SocketAddr) -> Peer {
        Self::connect_with(sim, addr, Some(4096))
    }

    fn connect_with(sim: &Sim, addr: SocketAddr, rcvbuf: Option<usize>) -> Peer {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("peer socket");
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        sock.connect(&addr.into()).expect("peer connect");
        let s: TcpStream = sock.into();
        s.set_nonblocking(true).unwrap();
        sim.active();
        Peer(s, sim.clone())
    }

    /// Write all of `data`, yielding to the simulation while the socket is full.
    pub async fn write_all(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.0.write(data) {
                Ok(n) => {
                    self.1.active();
                    data = &data[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Once(false).await,
                Err(e) => panic!("peer write: {e}"),
            }
        }
    }

    /// Read until EOF or reset; the bytes read before it.
    pub async fn read_to_eof(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => {
                    self.1.active();
                    got.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Once(false).await,
                Err(_) => return got,
            }
        }
    }
}

/// Yield to the simulation once.
pub async fn yield_once() {
    Once(false).await
}

/// Yield to the simulation for `n` rounds (every task is polled each round).
pub async fn yield_rounds(n: usize) {
    for _ in 0..n {
        yield_once().await;
    }
}
