//! Raw smol: plain async-io `Async<TcpListener>`/`Async<TcpStream>`/`Async<UdpSocket>` loops
//! on the benchmark's `smol::Executor`, one task per connection,
//! servers read up to 64 KiB into a per-thread buffer,
//! TCP_NODELAY on every stream — the same shape as the raw tokio side.

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Timer};

use crate::pipes::{final_report, parse_reply};
use crate::rt::{announce, held, secs, STUCK};
use crate::spec::{
    metric, warmup, Metrics, Res, Workload, CHUNK, CONNECT_WORKERS, CREDIT, DGRAM, MSG, SYNC_EVERY,
    WINDOW,
};

type Ex = Arc<Executor<'static>>;

/// `fut`, or `None` after `d`.
async fn within<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(d).await;
        None
    })
    .await
}

/// Run the server of `w` on 127.0.0.1 (a free port) forever, after announcing its port.
pub async fn server(ex: Ex, w: Workload, count: u64) -> Res {
    let local: SocketAddr = "127.0.0.1:0".parse()?;
    match w {
        Workload::UdpPingPong | Workload::UdpStream => {
            let sock = Async::<UdpSocket>::bind(local)?;
            announce(sock.get_ref().local_addr()?.port());
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
            let l = Async::<TcpListener>::bind(local)?;
            announce(l.get_ref().local_addr()?.port());
            loop {
                let (s, _) = l.accept().await?;
                ex.spawn(async move {
                    let _ = if w == Workload::TcpBulk {
                        sink(s, count).await
                    } else {
                        echo(s).await
                    };
                })
                .detach();
            }
        }
    }
}

thread_local! {
    /// Servers read into one 64 KiB buffer per thread (inside `read_with`, so no `.await`
    /// holds it): an idle connection holds no buffer. Echoes copy out what they write back.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// Read what is there into the thread's buffer; `f` sees it before the next `.await`.
async fn read_scratch<T>(s: &Async<TcpStream>, f: impl Fn(&[u8]) -> T) -> io::Result<T> {
    s.read_with(|t| {
        SCRATCH.with(|b| {
            let mut b = b.borrow_mut();
            let n = (&*t).read(&mut b)?;
            Ok(f(&b[..n]))
        })
    })
    .await
}

async fn echo(s: Async<TcpStream>) -> Res {
    s.get_ref().set_nodelay(true)?;
    loop {
        let data = read_scratch(&s, <[u8]>::to_vec).await?;
        if data.is_empty() {
            return Ok(());
        }
        (&s).write_all(&data).await?;
    }
}

async fn sink(s: Async<TcpStream>, count: u64) -> Res {
    s.get_ref().set_nodelay(true)?;
    let mut got = 0u64;
    loop {
        let n = read_scratch(&s, <[u8]>::len).await?;
        if n == 0 {
            return Ok(());
        }
        got += n as u64;
        if got >= count {
            got -= count;
            (&s).write_all(b"k").await?;
        }
    }
}

/// Run the client of `w` against `addr`.
pub async fn client(ex: Ex, w: Workload, count: u64, addr: SocketAddr) -> Res<Metrics> {
    match w {
        Workload::TcpPingPong => tcp_pingpong(count, addr).await,
        Workload::TcpBulk => tcp_bulk(count, addr).await,
        Workload::UdpPingPong => udp_pingpong(count, addr).await,
        Workload::UdpStream => udp_stream(count, addr).await,
        Workload::ConnectClose => connect_close(count, addr).await,
        Workload::Many => many(ex, count, addr).await,
        Workload::Relay => Err("the relay client is raw tokio".into()),
        Workload::TlsPingPong | Workload::TlsBulk => Err("no raw smol TLS".into()),
    }
}

async fn connect(addr: SocketAddr) -> Res<Async<TcpStream>> {
    let s = Async::<TcpStream>::connect(addr).await?;
    s.get_ref().set_nodelay(true)?;
    Ok(s)
}

async fn tcp_round(s: &Async<TcpStream>, msg: &[u8], buf: &mut [u8]) -> Res {
    let mut s = s;
    s.write_all(msg).await?;
    within(STUCK, s.read_exact(&mut buf[..msg.len()]))
        .await
        .ok_or("no echo")??;
    Ok(())
}

async fn tcp_pingpong(n: u64, addr: SocketAddr) -> Res<Metrics> {
    let s = connect(addr).await?;
    let (msg, mut buf) = ([0x5a; MSG], [0u8; MSG]);
    for _ in 0..warmup(n) {
        tcp_round(&s, &msg, &mut buf).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        tcp_round(&s, &msg, &mut buf).await?;
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
    within(STUCK, s.read_exact(&mut ack))
        .await
        .ok_or("no acknowledgement")??;
    Ok(vec![metric("rate", total as f64 / secs(t) / 1e6)])
}

fn udp_client(addr: SocketAddr) -> Res<Async<UdpSocket>> {
    let s = Async::<UdpSocket>::bind(([0, 0, 0, 0], 0))?;
    s.get_ref().connect(addr)?;
    Ok(s)
}

async fn udp_pingpong(n: u64, addr: SocketAddr) -> Res<Metrics> {
    let s = udp_client(addr)?;
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
            if within(Duration::from_millis(200), s.recv(&mut buf))
                .await
                .is_some()
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
    let s = udp_client(addr)?;
    let (data, mut buf) = ([b'D'; DGRAM], vec![0u8; 65_536]);
    let (mut sent, mut credited, mut stalls) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    while sent < total {
        if sent - credited < WINDOW {
            s.send(&data).await?;
            sent += 1;
            continue;
        }
        match within(Duration::from_millis(20), s.recv(&mut buf)).await {
            Some(n) => {
                if let Some((false, c)) = parse_reply(&buf[..n?]) {
                    credited = credited.max(c);
                }
            }
            None => {
                stalls += 1;
                credited = sent;
            }
        }
    }
    for _ in 0..50 {
        s.send(b"F").await?;
        let deadline = Instant::now() + Duration::from_millis(100);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(n) = within(left, s.recv(&mut buf)).await else {
                break;
            };
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
        let s = connect(addr).await?;
        if i % SYNC_EVERY == SYNC_EVERY - 1 {
            tcp_round(&s, &[0x5a; MSG], &mut buf).await?;
        }
        drop(s);
    }
    Ok(vec![metric("rate", n as f64 / secs(t))])
}

async fn many(ex: Ex, n: u64, addr: SocketAddr) -> Res<Metrics> {
    let workers = CONNECT_WORKERS.min(n);
    let t = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let k = n / workers + u64::from(w < n % workers);
            ex.spawn(async move {
                let mut held = Vec::with_capacity(k as usize);
                let mut buf = [0u8; MSG];
                for _ in 0..k {
                    let s = connect(addr).await?;
                    tcp_round(&s, &[0x5a; MSG], &mut buf).await?;
                    held.push(s);
                }
                Res::Ok(held)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n as usize);
    for task in tasks {
        all.extend(task.await?);
    }
    let time = secs(t);
    held().await;
    Ok(vec![metric("time", time)])
}

/// A plain smol relay: per connection, two tasks copying 64 KiB reads each way; a side's EOF
/// shuts down the other side's write half.
pub async fn relay(ex: Ex, to: SocketAddr) -> Res {
    let l = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    announce(l.get_ref().local_addr()?.port());
    loop {
        let (down, _) = l.accept().await?;
        let ex2 = ex.clone();
        ex.spawn(async move {
            down.get_ref().set_nodelay(true)?;
            let up = connect(to).await?;
            let (down, up) = (Arc::new(down), Arc::new(up));
            let back = ex2.spawn(copy(up.clone(), down.clone()));
            let _ = copy(down, up).await;
            let _ = back.await;
            Res::Ok(())
        })
        .detach();
    }
}

async fn copy(from: Arc<Async<TcpStream>>, to: Arc<Async<TcpStream>>) -> Res {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = (&*from).read(&mut buf).await?;
        if n == 0 {
            to.get_ref().shutdown(std::net::Shutdown::Write)?;
            return Ok(());
        }
        (&*to).write_all(&buf[..n]).await?;
    }
}
