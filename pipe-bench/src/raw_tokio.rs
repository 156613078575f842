//! Raw tokio: plain `TcpListener`/`TcpStream`/`UdpSocket` loops, one task per connection,
//! servers read up to 64 KiB into a per-thread buffer (pipes' default `reader_limit`), TCP_NODELAY on every stream (pipes
//! set it too). Also the relay workload's fixed client and echo server.
//!
//! TLS: tokio-rustls over the same loops, with the rustls configs of pipes' `Tls` values
//! (see `crate::tls`); a TLS server reads into a 64 KiB buffer of the connection (the
//! decrypting stream has no `try_read` to borrow the thread's buffer with), and every write
//! is flushed, as an application must with tokio-rustls.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use pipe_io::Tls;

use crate::pipes::{final_report, parse_reply};
use crate::rt::{announce, held, secs, STUCK};
use crate::spec::{
    metric, warmup, Metrics, Res, Workload, CHUNK, CONNECT_WORKERS, CREDIT, DGRAM, MSG, SYNC_EVERY,
    WINDOW,
};

/// Run the server of `w` on 127.0.0.1 (a free port) forever, after announcing its port; in
/// TLS with `tls`'s rustls config for the TLS workloads.
pub async fn server(w: Workload, count: u64, tls: Option<Tls>) -> Res {
    let local: SocketAddr = "127.0.0.1:0".parse()?;
    match w {
        Workload::TlsPingPong | Workload::TlsBulk => {
            let acceptor = TlsAcceptor::from(crate::tls::server_config(
                tls.as_ref().ok_or("a TLS server needs a config")?,
            )?);
            let l = TcpListener::bind(local).await?;
            announce(l.local_addr()?.port());
            loop {
                let (s, _) = l.accept().await?;
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    s.set_nodelay(true)?;
                    let s = timeout(STUCK, acceptor.accept(s)).await??;
                    if w == Workload::TlsBulk {
                        tls_sink(s, count).await
                    } else {
                        tls_echo(s).await
                    }
                });
            }
        }
        Workload::UdpPingPong | Workload::UdpStream => {
            let sock = UdpSocket::bind(local).await?;
            announce(sock.local_addr()?.port());
            let mut buf = vec![0u8; 65_536];
            let mut got = 0u64;
            loop {
                let (n, from) = sock.recv_from(&mut buf).await?;
                if w == Workload::UdpPingPong {
                    sock.send_to(&buf[..n], from).await?;
                    continue;
                }
                match buf[..n].first() {
                    Some(b'D') => {
                        got += 1;
                        if got % CREDIT == 0 {
                            sock.send_to(&got.to_le_bytes(), from).await?;
                        }
                    }
                    Some(b'F') => {
                        sock.send_to(&final_report(got), from).await?;
                    }
                    _ => {}
                }
            }
        }
        _ => {
            let l = TcpListener::bind(local).await?;
            announce(l.local_addr()?.port());
            loop {
                let (s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let _ = if w == Workload::TcpBulk {
                        sink(s, count).await
                    } else {
                        echo(s).await
                    };
                });
            }
        }
    }
}

thread_local! {
    /// Servers read into one 64 KiB buffer per thread (`readable` + `try_read`, no `.await`
    /// while it is borrowed), as pipes do: an idle connection holds no buffer, and an echo
    /// copies out what it writes back, as pipes' messages do.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// Wait for data and read it into the thread's buffer; `f` sees it before the next `.await`.
async fn read_scratch<T>(s: &TcpStream, f: impl Fn(&[u8]) -> T) -> io::Result<T> {
    loop {
        s.readable().await?;
        let res = SCRATCH.with(|b| {
            let mut b = b.borrow_mut();
            s.try_read(&mut b).map(|n| f(&b[..n]))
        });
        match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn echo(mut s: TcpStream) -> Res {
    s.set_nodelay(true)?;
    loop {
        let data = read_scratch(&s, <[u8]>::to_vec).await?;
        if data.is_empty() {
            return Ok(());
        }
        s.write_all(&data).await?;
    }
}

/// Count bytes; acknowledge with one byte every `count`.
async fn sink(mut s: TcpStream, count: u64) -> Res {
    s.set_nodelay(true)?;
    let mut got = 0u64;
    loop {
        let n = read_scratch(&s, <[u8]>::len).await?;
        if n == 0 {
            return Ok(());
        }
        got += n as u64;
        if got >= count {
            got -= count;
            s.write_all(b"k").await?;
        }
    }
}

/// TLS echo: read up to 64 KiB, write it back, flush.
async fn tls_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Res {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
        s.flush().await?;
    }
}

/// TLS sink: count bytes; acknowledge with one byte every `count`.
async fn tls_sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, count: u64) -> Res {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        got += n as u64;
        if got >= count {
            got -= count;
            s.write_all(b"k").await?;
            s.flush().await?;
        }
    }
}

/// Run the client of `w` against `addr` (in TLS with `tls` for the TLS workloads).
pub async fn client(w: Workload, count: u64, addr: SocketAddr, tls: Option<Tls>) -> Res<Metrics> {
    if w.is_tls() {
        let s = tls_connect(addr, tls.as_ref().ok_or("a TLS client needs a config")?).await?;
        return match w {
            Workload::TlsBulk => tls_bulk(s, count).await,
            _ => tls_pingpong(s, count).await,
        };
    }
    match w {
        Workload::TcpPingPong => tcp_pingpong(count, addr).await,
        Workload::TcpBulk => tcp_bulk(count, addr).await,
        Workload::UdpPingPong => udp_pingpong(count, addr).await,
        Workload::UdpStream => udp_stream(count, addr).await,
        Workload::ConnectClose => connect_close(count, addr).await,
        Workload::Many => many(count, addr).await,
        Workload::Relay => relay_client(count, addr).await,
        Workload::TlsPingPong | Workload::TlsBulk => unreachable!("handled above"),
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect and finish the handshake (as pipes' `open()` does); check what was negotiated.
async fn tls_connect(addr: SocketAddr, tls: &Tls) -> Res<TlsStream> {
    let (config, name) = crate::tls::client_config(tls)?;
    let s = connect(addr).await?;
    let s = timeout(STUCK, TlsConnector::from(config).connect(name, s)).await??;
    crate::tls::check(s.get_ref().1)?;
    Ok(s)
}

async fn tls_round(s: &mut TlsStream, msg: &[u8], buf: &mut [u8]) -> Res {
    s.write_all(msg).await?;
    s.flush().await?;
    timeout(STUCK, s.read_exact(&mut buf[..msg.len()])).await??;
    Ok(())
}

async fn tls_pingpong(mut s: TlsStream, n: u64) -> Res<Metrics> {
    let (msg, mut buf) = ([0x5a; MSG], [0u8; MSG]);
    for _ in 0..warmup(n) {
        tls_round(&mut s, &msg, &mut buf).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        tls_round(&mut s, &msg, &mut buf).await?;
    }
    let rate = n as f64 / secs(t);
    // close_notify, as pipes' `close()` sends.
    let _ = s.shutdown().await;
    Ok(vec![metric("rate", rate)])
}

async fn tls_bulk(mut s: TlsStream, total: u64) -> Res<Metrics> {
    let chunk = vec![0xab; CHUNK];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(CHUNK as u64) as usize;
        s.write_all(&chunk[..k]).await?;
        sent += k as u64;
    }
    s.flush().await?;
    let mut ack = [0u8; 1];
    timeout(STUCK, s.read_exact(&mut ack)).await??;
    let rate = total as f64 / secs(t) / 1e6;
    let _ = s.shutdown().await;
    Ok(vec![metric("rate", rate)])
}

async fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn tcp_round(s: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> Res {
    s.write_all(msg).await?;
    timeout(STUCK, s.read_exact(&mut buf[..msg.len()])).await??;
    Ok(())
}

async fn tcp_pingpong(n: u64, addr: SocketAddr) -> Res<Metrics> {
    let mut s = connect(addr).await?;
    let (msg, mut buf) = ([0x5a; MSG], [0u8; MSG]);
    for _ in 0..warmup(n) {
        tcp_round(&mut s, &msg, &mut buf).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        tcp_round(&mut s, &msg, &mut buf).await?;
    }
    Ok(vec![metric("rate", n as f64 / secs(t))])
}

async fn tcp_bulk(total: u64, addr: SocketAddr) -> Res<Metrics> {
    let mut s = connect(addr).await?;
    let chunk = vec![0xab; CHUNK];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(CHUNK as u64) as usize;
        s.write_all(&chunk[..k]).await?;
        sent += k as u64;
    }
    let mut ack = [0u8; 1];
    timeout(STUCK, s.read_exact(&mut ack)).await??;
    Ok(vec![metric("rate", total as f64 / secs(t) / 1e6)])
}

async fn udp_client(addr: SocketAddr) -> Res<UdpSocket> {
    let s = UdpSocket::bind("0.0.0.0:0").await?;
    s.connect(addr).await?;
    Ok(s)
}

async fn udp_pingpong(n: u64, addr: SocketAddr) -> Res<Metrics> {
    let s = udp_client(addr).await?;
    let (msg, mut buf) = ([0x5a; MSG], vec![0u8; 65_536]);
    let mut resent = 0u64;
    let mut t = Instant::now();
    for i in 0..warmup(n) + n {
        if i == warmup(n) {
            t = Instant::now();
        }
        let mut tries = 0;
        loop {
            s.send(&msg).await?;
            if timeout(Duration::from_millis(200), s.recv(&mut buf))
                .await
                .is_ok()
            {
                break;
            }
            resent += 1;
            tries += 1;
            if tries == 50 {
                return Err("50 datagrams in a row lost".into());
            }
        }
    }
    Ok(vec![
        metric("rate", n as f64 / secs(t)),
        metric("resent", resent as f64),
    ])
}

async fn udp_stream(total: u64, addr: SocketAddr) -> Res<Metrics> {
    let s = udp_client(addr).await?;
    let (data, mut buf) = ([b'D'; DGRAM], vec![0u8; 65_536]);
    let (mut sent, mut credited, mut stalls) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    while sent < total {
        if sent - credited < WINDOW {
            s.send(&data).await?;
            sent += 1;
            continue;
        }
        match timeout(Duration::from_millis(20), s.recv(&mut buf)).await {
            Ok(n) => {
                if let Some((false, c)) = parse_reply(&buf[..n?]) {
                    credited = credited.max(c);
                }
            }
            Err(_) => {
                stalls += 1;
                credited = sent;
            }
        }
    }
    for _ in 0..50 {
        s.send(b"F").await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(n) = tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
            if let Some((true, got)) = parse_reply(&buf[..n?]) {
                let rate = got as f64 / secs(t);
                let loss = 100.0 * (total - got.min(total)) as f64 / total as f64;
                return Ok(vec![
                    metric("rate", rate),
                    metric("loss", loss),
                    metric("stalls", stalls as f64),
                ]);
            }
        }
    }
    Err("no final report from the receiver".into())
}

async fn connect_close(n: u64, addr: SocketAddr) -> Res<Metrics> {
    let mut buf = [0u8; MSG];
    let mut t = Instant::now();
    for i in 0..warmup(n) + n {
        if i == warmup(n) {
            t = Instant::now();
        }
        let mut s = connect(addr).await?;
        if i % SYNC_EVERY == SYNC_EVERY - 1 {
            tcp_round(&mut s, &[0x5a; MSG], &mut buf).await?;
        }
        drop(s);
    }
    Ok(vec![metric("rate", n as f64 / secs(t))])
}

async fn many(n: u64, addr: SocketAddr) -> Res<Metrics> {
    let workers = CONNECT_WORKERS.min(n);
    let t = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let k = n / workers + u64::from(w < n % workers);
            tokio::spawn(async move {
                let mut held = Vec::with_capacity(k as usize);
                let mut buf = [0u8; MSG];
                for _ in 0..k {
                    let mut s = connect(addr).await?;
                    tcp_round(&mut s, &[0x5a; MSG], &mut buf).await?;
                    held.push(s);
                }
                Res::Ok(held)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n as usize);
    for task in tasks {
        all.extend(task.await??);
    }
    let time = secs(t);
    held().await;
    Ok(vec![metric("time", time)])
}

/// The relay workload's client (the same for every relay): write `total` bytes in 64 KiB
/// writes while reading the echo back; done when all of it is back.
async fn relay_client(total: u64, addr: SocketAddr) -> Res<Metrics> {
    let s = connect(addr).await?;
    let (mut rd, mut wr) = s.into_split();
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0xab; CHUNK];
        let mut sent = 0u64;
        while sent < total {
            let k = (total - sent).min(CHUNK as u64) as usize;
            wr.write_all(&chunk[..k]).await?;
            sent += k as u64;
        }
        Res::Ok(wr)
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < total {
        let n = timeout(STUCK, rd.read(&mut buf)).await.map_err(|_| {
            format!("stalled: no echo for {STUCK:?} after {got} of {total} bytes")
        })??;
        if n == 0 {
            return Err(format!("the relay closed after {got} of {total} bytes").into());
        }
        got += n as u64;
    }
    let rate = total as f64 / secs(t) / 1e6;
    drop(writer.await??);
    Ok(vec![metric("rate", rate)])
}

/// A plain tokio relay: a task per connection, `copy_bidirectional_with_sizes` with 64 KiB
/// buffers (socat's `-b65536`).
pub async fn relay(to: SocketAddr) -> Res {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    announce(l.local_addr()?.port());
    let to = Arc::new(to);
    loop {
        let (mut down, _) = l.accept().await?;
        let to = to.clone();
        tokio::spawn(async move {
            down.set_nodelay(true)?;
            let mut up = connect(*to).await?;
            tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, CHUNK, CHUNK).await?;
            Res::Ok(())
        });
    }
}
