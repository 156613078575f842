//! Zero-copy relaying (issue 13): the same bytes through `tcp_relay` whether its pipes splice
//! (`Conf::zero_copy`, the default) or copy (`tcp_relay_copying`), on both runtimes, over real
//! loopback sockets. Each case asserts the bytes (every byte compared, both ways) and which
//! path moved them: the relay's connection totals count spliced bytes (`spliced_in`: the
//! client → upstream direction, read by the accepted connection; `spliced_out`: the
//! upstream → client direction, written into it), so the zero-copy cases fail if the splice
//! path was not taken and the copying cases fail if it was.
//!
//! Scenarios: a 32 MiB echo both ways at once (the client shuts its write side after sending
//! and still gets the whole echo); a request, its FIN, then an answer sent only after the
//! upstream saw that EOF; and the reverse half-close: the upstream speaks first and shuts its
//! write side, then the client sends and the upstream reads it to the end.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use pipe_core::ConnTotals;

/// Generous: the box is shared and loaded, and the tests run unoptimised.
const WAIT: Duration = Duration::from_secs(120);

/// Seeded bytes (SplitMix64), so a misplaced or repeated chunk cannot pass.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compare, naming the first differing byte instead of printing megabytes.
fn same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: {} bytes, expected {}; first difference at {at:?}",
        got.len(),
        want.len()
    );
}

/// A relay of the runtime under test, with its listener (for the connection totals).
enum Relay {
    Tokio(tokio::runtime::Runtime, pipe_tokio::Pipe),
    Smol(pipe_smol::Pipe),
}

impl Relay {
    fn start(runtime: &str, up: SocketAddr, zero_copy: bool) -> Relay {
        Self::start_with(runtime, up, zero_copy, None)
    }

    /// With `stall`: the relay program's write-stall deadline (zero copy on).
    fn start_with(
        runtime: &str,
        up: SocketAddr,
        zero_copy: bool,
        stall: Option<Duration>,
    ) -> Relay {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let deadlines = examples::Deadlines {
            idle: None,
            write_stall: stall,
        };
        match runtime {
            "tokio" => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let server = rt.block_on(async {
                    let t = pipe_tokio::Tokio::current();
                    if stall.is_some() {
                        examples::relay::tcp_relay_with(t, listen, up, deadlines, None).await
                    } else if zero_copy {
                        examples::relay::tcp_relay(t, listen, up).await
                    } else {
                        examples::relay::tcp_relay_copying(t, listen, up).await
                    }
                });
                Relay::Tokio(rt, server.unwrap())
            }
            _ => {
                let server = smol::block_on(async {
                    let s = pipe_smol::Smol::default();
                    if stall.is_some() {
                        examples::relay::tcp_relay_with(s, listen, up, deadlines, None).await
                    } else if zero_copy {
                        examples::relay::tcp_relay(s, listen, up).await
                    } else {
                        examples::relay::tcp_relay_copying(s, listen, up).await
                    }
                });
                Relay::Smol(server.unwrap())
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Relay::Tokio(_, p) => p.local_addr(),
            Relay::Smol(p) => p.local_addr(),
        }
        .expect("listening")
    }

    fn totals(&self) -> ConnTotals {
        match self {
            Relay::Tokio(_, p) => p.conn_totals(),
            Relay::Smol(p) => p.conn_totals(),
        }
        .expect("a listener")
    }

    fn close(self) {
        match self {
            Relay::Tokio(rt, p) => rt.block_on(p.close()),
            Relay::Smol(p) => smol::block_on(p.close()),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.set_write_timeout(Some(WAIT)).unwrap();
    c
}

/// One upstream connection at a time, served by `serve` on its own thread.
fn upstream<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<T>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        serve(s)
    });
    (addr, t)
}

/// Send `data` on a thread, then shut the write side; read to EOF meanwhile.
fn send_and_read(mut c: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = c.try_clone().unwrap();
    let writer = thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("EOF within the deadline");
    writer.join().unwrap();
    got
}

/// What each case expects of the totals: the splice path taken both ways, or never. The
/// relay counts a write just after the system call, so the client may have the bytes a
/// moment before the count: wait (bounded) for the byte counts to settle first.
fn check_path(what: &str, relay: &Relay, zero_copy: bool, up: usize, down: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    let mut t = relay.totals();
    while (t.bytes_in, t.bytes_out) != (up as u64, down as u64)
        && std::time::Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(5));
        t = relay.totals();
    }
    assert_eq!(t.bytes_in, up as u64, "{what}: bytes in from the client");
    assert_eq!(t.bytes_out, down as u64, "{what}: bytes out to the client");
    if zero_copy && cfg!(target_os = "linux") {
        // The first read of a connection is copied (the engine decides after it).
        assert!(
            t.spliced_in * 2 > up as u64,
            "{what}: client → upstream spliced {} of {up}",
            t.spliced_in
        );
        assert!(
            t.spliced_out * 2 > down as u64,
            "{what}: upstream → client spliced {} of {down}",
            t.spliced_out
        );
    } else if !zero_copy {
        assert_eq!(
            (t.spliced_in, t.spliced_out),
            (0, 0),
            "{what}: zero_copy off"
        );
    }
}

/// 32 MiB each way at once through an echo; the client's FIN after its bytes, the echo's
/// FIN after the echo.
fn echo(runtime: &str, zero_copy: bool) {
    const LEN: usize = 32 << 20;
    let (up, server) = upstream(|mut s| {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0usize;
        loop {
            let k = s.read(&mut buf).expect("read within the deadline");
            if k == 0 {
                break;
            }
            s.write_all(&buf[..k]).unwrap();
            n += k;
        }
        s.shutdown(Shutdown::Write).unwrap();
        n
    });
    let relay = Relay::start(runtime, up, zero_copy);
    let data = pattern(1, LEN);
    let got = send_and_read(connect(relay.addr()), data.clone());
    assert_eq!(server.join().unwrap(), LEN, "the upstream got every byte");
    same("echo", &got, &data);
    check_path(&format!("{runtime} echo"), &relay, zero_copy, LEN, LEN);
    relay.close();
}

/// The client sends a request and its FIN; the upstream reads to that EOF, then answers and
/// sends its FIN.
fn request_then_answer(runtime: &str, zero_copy: bool) {
    let request = pattern(2, 4 << 20);
    let answer = pattern(3, 16 << 20);
    let a = answer.clone();
    let (up, server) = upstream(move |mut s| {
        let mut req = Vec::new();
        s.read_to_end(&mut req)
            .expect("the request, then EOF, within the deadline");
        s.write_all(&a).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        req
    });
    let relay = Relay::start(runtime, up, zero_copy);
    let got = send_and_read(connect(relay.addr()), request.clone());
    same(
        "the request at the upstream",
        &server.join().unwrap(),
        &request,
    );
    same("the answer after the client's FIN", &got, &answer);
    check_path(
        &format!("{runtime} request"),
        &relay,
        zero_copy,
        request.len(),
        answer.len(),
    );
    relay.close();
}

/// The reverse half-close: the upstream speaks first and shuts its write side; the client
/// reads to that EOF, then sends and shuts its own; the upstream reads it all.
fn upstream_closes_first(runtime: &str, zero_copy: bool) {
    let first = pattern(4, 16 << 20);
    let then = pattern(5, 4 << 20);
    let f = first.clone();
    let (up, server) = upstream(move |mut s| {
        s.write_all(&f).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("the client's bytes, then EOF, within the deadline");
        rest
    });
    let relay = Relay::start(runtime, up, zero_copy);
    let mut c = connect(relay.addr());
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("the upstream's bytes, then EOF, within the deadline");
    same("the upstream's bytes before its FIN", &got, &first);
    c.write_all(&then).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    same(
        "the client's bytes after the upstream's FIN",
        &server.join().unwrap(),
        &then,
    );
    // The relay's connection ends once both sides are shut: read its EOF.
    let mut tail = Vec::new();
    c.read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty());
    check_path(
        &format!("{runtime} reverse"),
        &relay,
        zero_copy,
        then.len(),
        first.len(),
    );
    relay.close();
}

/// Linked by hand (the library API, no relay program): bytes are spliced both ways until a
/// subscription wants to see them; from then on that side copies again, and the subscription
/// gets exactly what came after it while the link still forwards it.
async fn subscribing_goes_back_to_copying<R: pipe_io::Runtime>(rt: R) {
    use pipe_io::{Filter, PipeBuilder, Proto, SubId};
    let (up_addr, server) = upstream(|mut s| {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k @ 1..) = s.read(&mut buf) {
            s.write_all(&buf[..k]).unwrap();
        }
    });
    let listener = PipeBuilder::new(rt.clone(), Proto::Tcp)
        .bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .open()
        .await
        .unwrap();
    let c = connect(listener.local_addr().unwrap());
    let conn = listener.accept().await.unwrap();
    let up = PipeBuilder::new(rt, Proto::Tcp)
        .dest(up_addr)
        .open()
        .await
        .unwrap();
    conn.link(&up).unwrap();
    up.link(&conn).unwrap();
    up.unsubscribe(SubId::ALL).unwrap();

    // Bulk both ways: spliced after the first read of each side.
    let data = pattern(7, 8 << 20);
    let mut w = c.try_clone().unwrap();
    let d = data.clone();
    let writer = thread::spawn(move || w.write_all(&d).unwrap());
    let mut r = c.try_clone().unwrap();
    let mut got = vec![0u8; data.len()];
    r.read_exact(&mut got)
        .expect("the echo within the deadline");
    writer.join().unwrap();
    same("the bulk echo", &got, &data);
    let (c1, u1) = (conn.stats().unwrap(), up.stats().unwrap());
    if cfg!(target_os = "linux") {
        assert!(c1.spliced_in > 0, "client → upstream spliced: {c1:?}");
        assert!(u1.spliced_in > 0, "upstream → client spliced: {u1:?}");
    }

    // Both sides subscribe: the next bytes are copied, seen, and still forwarded.
    conn.subscribe(Filter::all()).unwrap();
    up.subscribe(Filter::all()).unwrap();
    let msg = b"seen by both subscriptions";
    let mut w = c.try_clone().unwrap();
    w.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    r.read_exact(&mut back)
        .expect("the echo within the deadline");
    assert_eq!(&back, msg);
    for (side, p) in [("connection", &conn), ("upstream", &up)] {
        let mut seen = Vec::new();
        while seen.len() < msg.len() {
            let m = p
                .recv()
                .await
                .unwrap()
                .expect("a message within recv_timeout");
            seen.extend_from_slice(&m.data);
        }
        assert_eq!(
            &seen, msg,
            "{side}: the subscription got the bytes after it"
        );
    }
    let (c2, u2) = (conn.stats().unwrap(), up.stats().unwrap());
    assert_eq!(c2.spliced_in, c1.spliced_in, "connection: copying again");
    assert_eq!(u2.spliced_in, u1.spliced_in, "upstream: copying again");
    assert_eq!(c2.bytes_in, c1.bytes_in + msg.len() as u64);

    w.shutdown(Shutdown::Write).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).expect("EOF within the deadline");
    assert!(tail.is_empty());
    server.join().unwrap();
    listener.close().await;
}

#[test]
fn subscribing_goes_back_to_copying_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { subscribing_goes_back_to_copying(pipe_tokio::Tokio::current()).await });
}

#[test]
fn subscribing_goes_back_to_copying_smol() {
    smol::block_on(subscribing_goes_back_to_copying(pipe_smol::Smol::default()));
}

/// A runtime without the splice capability: tokio's, with every `TcpIo` method but the two
/// splice ones delegated, so the seam's defaults (`Unsupported`) are what the driver gets.
mod no_splice {
    use std::io;
    use std::net::SocketAddr;
    use std::time::Instant;

    use pipe_io::{BoxFuture, ListenerIo, Runtime, TcpIo};
    use pipe_tokio::Tokio;

    #[derive(Debug, Clone)]
    pub struct NoSplice(pub Tokio);

    #[derive(Debug)]
    pub struct Tcp(<Tokio as Runtime>::Tcp);

    #[derive(Debug)]
    pub struct Listener(<Tokio as Runtime>::Listener);

    impl Runtime for NoSplice {
        type Udp = <Tokio as Runtime>::Udp;
        type Tcp = Tcp;
        type Listener = Listener;
        fn now(&self) -> Instant {
            self.0.now()
        }
        fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
            self.0.sleep_until(deadline)
        }
        fn spawn(&self, future: BoxFuture<()>) {
            self.0.spawn(future)
        }
        fn udp(&self, socket: std::net::UdpSocket) -> io::Result<Self::Udp> {
            self.0.udp(socket)
        }
        fn tcp(&self, stream: std::net::TcpStream) -> io::Result<Tcp> {
            self.0.tcp(stream).map(Tcp)
        }
        fn listener(&self, listener: std::net::TcpListener) -> io::Result<Listener> {
            self.0.listener(listener).map(Listener)
        }
        fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
            self.0.resolve(host, port)
        }
    }

    pipe_io::delegate_readiness!(Tcp);

    impl TcpIo for Tcp {
        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.0.local_addr()
        }
        fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.try_read(buf)
        }
        fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
            self.0.try_write(buf)
        }
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.0.peer_addr()
        }
        fn take_error(&self) -> io::Result<Option<io::Error>> {
            self.0.take_error()
        }
        fn shutdown_write(&self) -> io::Result<()> {
            self.0.shutdown_write()
        }
    }

    impl ListenerIo for Listener {
        type Stream = Tcp;
        async fn accept(&self) -> io::Result<(Tcp, SocketAddr)> {
            self.0.accept().await.map(|(s, a)| (Tcp(s), a))
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.0.local_addr()
        }
    }
}

/// A runtime that cannot splice keeps the copying path with `zero_copy` on: the same bytes,
/// nothing spliced (the seam's default, as for any runtime but pipe-tokio and pipe-smol on
/// Linux).
#[test]
fn a_runtime_without_splice_copies() {
    const LEN: usize = 8 << 20;
    let (up, server) = upstream(|mut s| {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k @ 1..) = s.read(&mut buf) {
            s.write_all(&buf[..k]).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let relay = rt
        .block_on(async {
            let r = no_splice::NoSplice(pipe_tokio::Tokio::current());
            examples::relay::tcp_relay(r, listen, up).await
        })
        .unwrap();
    let data = pattern(8, LEN);
    let got = send_and_read(connect(relay.local_addr().unwrap()), data.clone());
    server.join().unwrap();
    same("echo without splice", &got, &data);
    let deadline = std::time::Instant::now() + WAIT;
    let mut t = relay.conn_totals().unwrap();
    while t.bytes_out != LEN as u64 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        t = relay.conn_totals().unwrap();
    }
    assert_eq!((t.bytes_in, t.bytes_out), (LEN as u64, LEN as u64));
    assert_eq!((t.spliced_in, t.spliced_out), (0, 0), "nothing spliced");
    rt.block_on(relay.close());
}

/// An upstream that never reads, behind a relay with a 1 s write-stall deadline: the client's
/// bytes are spliced until the upstream's buffers are full, then the reservation makes no
/// progress, the deadline ends the upstream (the engine's deadline runs while spliced bytes
/// wait), the relay closes the client, and every connection ends.
fn stalled_upstream(runtime: &str) {
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let (up, server) = upstream(move |s| {
        let _ = held.recv();
        drop(s);
    });
    let relay = Relay::start_with(runtime, up, true, Some(Duration::from_secs(1)));
    let c = connect(relay.addr());
    let mut w = c.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = pattern(9, 1 << 16);
        let mut sent = 0usize;
        while w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let mut r = c.try_clone().unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // EOF or a reset: the relay closed the client.
    let _ = r.read(&mut buf);
    let ended_after = t0.elapsed();
    // The deadline is 1 s after the last progress; 30 s is generous on a loaded machine.
    assert!(
        ended_after < Duration::from_secs(30),
        "{runtime}: the relay closed the client only after {ended_after:?}"
    );
    c.shutdown(Shutdown::Both).ok();
    let sent = writer.join().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut t = relay.totals();
    while t.ended < t.accepted && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        t = relay.totals();
    }
    eprintln!("[{runtime}] client closed after {ended_after:?}, {sent} bytes sent; {t:?}");
    assert_eq!(
        (t.accepted, t.ended),
        (1, 1),
        "{runtime}: the connection ended"
    );
    if cfg!(target_os = "linux") {
        assert!(
            t.spliced_in > 0,
            "{runtime}: spliced before the stall: {t:?}"
        );
    }
    drop(hold);
    server.join().unwrap();
    relay.close();
}

#[test]
fn stalled_upstream_ends_at_the_write_stall_deadline_tokio() {
    stalled_upstream("tokio");
}

#[test]
fn stalled_upstream_ends_at_the_write_stall_deadline_smol() {
    stalled_upstream("smol");
}

macro_rules! cases {
    ($($name:ident: $f:ident($rt:literal, $zc:literal);)*) => {$(
        #[test]
        fn $name() {
            $f($rt, $zc);
        }
    )*};
}

cases! {
    echo_32mib_zero_copy_tokio: echo("tokio", true);
    echo_32mib_copying_tokio: echo("tokio", false);
    echo_32mib_zero_copy_smol: echo("smol", true);
    echo_32mib_copying_smol: echo("smol", false);
    request_fin_then_answer_zero_copy_tokio: request_then_answer("tokio", true);
    request_fin_then_answer_copying_tokio: request_then_answer("tokio", false);
    request_fin_then_answer_zero_copy_smol: request_then_answer("smol", true);
    request_fin_then_answer_copying_smol: request_then_answer("smol", false);
    upstream_fin_first_zero_copy_tokio: upstream_closes_first("tokio", true);
    upstream_fin_first_copying_tokio: upstream_closes_first("tokio", false);
    upstream_fin_first_zero_copy_smol: upstream_closes_first("smol", true);
    upstream_fin_first_copying_smol: upstream_closes_first("smol", false);
}

/// Not a check: rates through the relay, zero copy against copying, on both runtimes (256 MiB
/// one way into a discarding upstream, 64 KiB writes), with the average spliced chunk.
/// `cargo test --release -p examples --test splice_relay measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure() {
    const LEN: usize = 256 << 20;
    for runtime in ["tokio", "smol"] {
        for zero_copy in [true, false] {
            let (up, server) = upstream(|mut s| {
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0usize;
                while let Ok(k @ 1..) = s.read(&mut buf) {
                    n += k;
                }
                n
            });
            let relay = Relay::start(runtime, up, zero_copy);
            let mut c = connect(relay.addr());
            let chunk = pattern(6, 1 << 16);
            let cpu0 = relay_cpu();
            let t0 = std::time::Instant::now();
            for _ in 0..LEN / chunk.len() {
                c.write_all(&chunk).unwrap();
            }
            c.shutdown(Shutdown::Write).unwrap();
            assert_eq!(server.join().unwrap(), LEN);
            let secs = t0.elapsed().as_secs_f64();
            let cpu = relay_cpu() - cpu0;
            let t = relay.totals();
            eprintln!(
                "{runtime} zero_copy={zero_copy}: {:.0} MB/s, relay CPU {:.2} ms per MiB; \
                 spliced {} of {} bytes in, {} reads (avg {} B)",
                LEN as f64 / secs / 1e6,
                cpu * 1e3 / (LEN >> 20) as f64,
                t.spliced_in,
                t.bytes_in,
                t.received,
                t.bytes_in / t.received.max(1)
            );
            relay.close();
        }
    }
}

/// CPU time (user + system, seconds) of this process's runtime threads (tokio's workers,
/// smol's global executor): the relay's cost, whatever else loads the machine.
fn relay_cpu() -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !(comm.starts_with("tokio-r") || comm.starts_with("smol")) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: state is field 3; utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    total as f64 / tick
}
