//! The pipes side, written once over `pipe_io::Runtime`: run with `pipe_tokio::Tokio` or a
//! `pipe_smol::Smol` that spawns on the benchmark's own executor.
//!
//! Servers are pipes with an `on_message` callback (echo: `send_to(msg.data, msg.from)`);
//! clients use `send` and `recv`, as an application would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipe_io::{Conf, Pipe, PipeBuilder, Proto, Runtime, Tls};

use crate::rt::{held, secs, STUCK};
use crate::spec::{
    metric, warmup, Metrics, Res, Workload, CHUNK, CONNECT_WORKERS, CREDIT, DGRAM, MSG, SYNC_EVERY,
    WINDOW,
};

/// Open the server of `w` on 127.0.0.1 (a free port), in TLS with `tls` (`Conf::tls`).
/// Keep the returned pipe to keep it open.
pub async fn server<R: Runtime>(rt: R, w: Workload, count: u64, tls: Option<Tls>) -> Res<Pipe<R>> {
    let proto = match w {
        Workload::UdpPingPong | Workload::UdpStream => Proto::Udp,
        _ => Proto::Tcp,
    };
    let b = PipeBuilder::new(rt, proto).conf(Conf {
        tls,
        ..Conf::default()
    });
    let b = match w {
        Workload::TcpBulk | Workload::TlsBulk => {
            // Count bytes; acknowledge with one byte when `count` have arrived.
            let got = Arc::new(AtomicU64::new(0));
            b.on_message(move |msg, pipe| {
                let got = got.clone();
                async move {
                    let n = got.fetch_add(msg.data.len() as u64, Ordering::Relaxed)
                        + msg.data.len() as u64;
                    if n >= count {
                        got.fetch_sub(count, Ordering::Relaxed);
                        let _ = pipe.send_to(b"k", msg.from).await;
                    }
                }
            })
        }
        Workload::UdpStream => {
            // Count datagrams, credit every CREDIT, answer `F` with `R` + the total.
            let got = Arc::new(AtomicU64::new(0));
            b.on_message(move |msg, pipe| {
                let got = got.clone();
                async move {
                    match msg.data.first() {
                        Some(b'D') => {
                            let n = got.fetch_add(1, Ordering::Relaxed) + 1;
                            if n % CREDIT == 0 {
                                let _ = pipe.send_to(&n.to_le_bytes(), msg.from).await;
                            }
                        }
                        Some(b'F') => {
                            let _ = pipe
                                .send_to(&final_report(got.load(Ordering::Relaxed)), msg.from)
                                .await;
                        }
                        _ => {}
                    }
                }
            })
        }
        _ => b.on_message(|msg, pipe| async move {
            let _ = pipe.send_to(&msg.data, msg.from).await;
        }),
    };
    Ok(b.open().await?)
}

/// The relay under test: examples' TCP relay (linked pipes, accept hook), listening on a free
/// port of 127.0.0.1 and forwarding to `to`; zero copy where possible (the default), or always
/// copying (`Conf::zero_copy` off).
pub async fn relay<R: Runtime>(rt: R, to: SocketAddr, zero_copy: bool) -> Res<Pipe<R>> {
    let listen = "127.0.0.1:0".parse()?;
    if zero_copy {
        examples::relay::tcp_relay(rt, listen, to).await
    } else {
        examples::relay::tcp_relay_copying(rt, listen, to).await
    }
}

/// Run the client of `w` against `addr` (in TLS with `tls` for the TLS workloads).
pub async fn client<R: Runtime>(
    rt: R,
    w: Workload,
    count: u64,
    addr: SocketAddr,
    tls: Option<Tls>,
) -> Res<Metrics> {
    match w {
        Workload::TcpPingPong | Workload::TlsPingPong => {
            tcp_pingpong(open_tcp(rt, addr, tls).await?, count).await
        }
        Workload::TcpBulk | Workload::TlsBulk => {
            tcp_bulk(open_tcp(rt, addr, tls).await?, count).await
        }
        Workload::UdpPingPong => udp_pingpong(rt, count, addr).await,
        Workload::UdpStream => udp_stream(rt, count, addr).await,
        Workload::ConnectClose => connect_close(rt, count, addr).await,
        Workload::Many => many(rt, count, addr).await,
        Workload::Relay => Err("the relay client is raw tokio".into()),
    }
}

async fn open<R: Runtime>(rt: R, proto: Proto, addr: SocketAddr) -> Res<Pipe<R>> {
    Ok(PipeBuilder::new(rt, proto).dest(addr).open().await?)
}

/// A TCP client pipe, in TLS with `tls` (`open()` returns once the handshake is done).
async fn open_tcp<R: Runtime>(rt: R, addr: SocketAddr, tls: Option<Tls>) -> Res<Pipe<R>> {
    Ok(PipeBuilder::new(rt, Proto::Tcp)
        .dest(addr)
        .conf(Conf {
            tls,
            ..Conf::default()
        })
        .open()
        .await?)
}

/// One 64-byte message and its echo (TCP chunks may in principle split, so count bytes).
async fn tcp_round<R: Runtime>(p: &Pipe<R>, msg: &[u8]) -> Res {
    p.send(msg).await?;
    let mut got = 0;
    while got < msg.len() {
        got += p
            .recv()
            .await?
            .ok_or("no echo within recv_timeout")?
            .data
            .len();
    }
    Ok(())
}

async fn tcp_pingpong<R: Runtime>(p: Pipe<R>, n: u64) -> Res<Metrics> {
    let msg = [0x5a; MSG];
    for _ in 0..warmup(n) {
        tcp_round(&p, &msg).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        tcp_round(&p, &msg).await?;
    }
    let rate = n as f64 / secs(t);
    p.close().await;
    Ok(vec![metric("rate", rate)])
}

async fn tcp_bulk<R: Runtime>(p: Pipe<R>, total: u64) -> Res<Metrics> {
    let chunk = vec![0xab; CHUNK];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(CHUNK as u64) as usize;
        p.send(&chunk[..k]).await?;
        sent += k as u64;
    }
    p.recv_timeout(STUCK).await?.ok_or("no acknowledgement")?;
    let rate = total as f64 / secs(t) / 1e6;
    p.close().await;
    Ok(vec![metric("rate", rate)])
}

async fn udp_pingpong<R: Runtime>(rt: R, n: u64, addr: SocketAddr) -> Res<Metrics> {
    let p = open(rt, Proto::Udp, addr).await?;
    let msg = [0x5a; MSG];
    let mut resent = 0u64;
    for _ in 0..warmup(n) {
        udp_round(&p, &msg, &mut resent).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        udp_round(&p, &msg, &mut resent).await?;
    }
    let rate = n as f64 / secs(t);
    Ok(vec![metric("rate", rate), metric("resent", resent as f64)])
}

/// One datagram and its echo, resent after 200 ms without one.
async fn udp_round<R: Runtime>(p: &Pipe<R>, msg: &[u8], resent: &mut u64) -> Res {
    for _ in 0..50 {
        p.send(msg).await?;
        if p.recv_timeout(Duration::from_millis(200)).await?.is_some() {
            return Ok(());
        }
        *resent += 1;
    }
    Err("50 datagrams in a row lost".into())
}

/// The receiver's answer to `F`: `R` and the count of datagrams it got.
pub fn final_report(n: u64) -> [u8; 9] {
    let mut r = [b'R'; 9];
    r[1..].copy_from_slice(&n.to_le_bytes());
    r
}

/// Parse a credit (8 bytes) or a final report (9 bytes).
pub fn parse_reply(b: &[u8]) -> Option<(bool, u64)> {
    match b.len() {
        8 => Some((false, u64::from_le_bytes(b.try_into().ok()?))),
        9 if b[0] == b'R' => Some((true, u64::from_le_bytes(b[1..].try_into().ok()?))),
        _ => None,
    }
}

/// UDP stream: at most WINDOW datagrams beyond the last credit; a credit missing for 20 ms
/// (a loss) reopens the window. Then `F` until the receiver reports its total.
async fn udp_stream<R: Runtime>(rt: R, total: u64, addr: SocketAddr) -> Res<Metrics> {
    let p = open(rt, Proto::Udp, addr).await?;
    let data = [b'D'; DGRAM];
    let (mut sent, mut credited, mut stalls) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    while sent < total {
        if sent - credited < WINDOW {
            p.send(&data).await?;
            sent += 1;
            continue;
        }
        match p.recv_timeout(Duration::from_millis(20)).await? {
            Some(m) => {
                if let Some((false, n)) = parse_reply(&m.data) {
                    credited = credited.max(n);
                }
            }
            None => {
                stalls += 1;
                credited = sent;
            }
        }
    }
    let mut tries = 0;
    let got = loop {
        p.send(b"F").await?;
        let deadline = Instant::now() + Duration::from_millis(100);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(m) = p.recv_timeout(left).await? {
                if let Some((true, n)) = parse_reply(&m.data) {
                    let rate = n as f64 / secs(t);
                    let loss = 100.0 * (total - n.min(total)) as f64 / total as f64;
                    return Ok(vec![
                        metric("rate", rate),
                        metric("loss", loss),
                        metric("stalls", stalls as f64),
                    ]);
                }
            } else {
                break;
            }
        }
        tries += 1;
        if tries > 50 {
            break "no final report from the receiver";
        }
    };
    Err(got.into())
}

async fn connect_close<R: Runtime>(rt: R, n: u64, addr: SocketAddr) -> Res<Metrics> {
    let mut t = Instant::now();
    for i in 0..warmup(n) + n {
        if i == warmup(n) {
            t = Instant::now();
        }
        let p = open(rt.clone(), Proto::Tcp, addr).await?;
        if i % SYNC_EVERY == SYNC_EVERY - 1 {
            tcp_round(&p, &[0x5a; MSG]).await?;
        }
        p.close().await;
    }
    Ok(vec![metric("rate", n as f64 / secs(t))])
}

/// `n` connections, CONNECT_WORKERS connecting at a time; each echoes one message and stays
/// open until the pair has measured the server.
async fn many<R: Runtime>(rt: R, n: u64, addr: SocketAddr) -> Res<Metrics> {
    let workers = CONNECT_WORKERS.min(n);
    let (tx, rx) = async_channel::unbounded::<Res<Vec<Pipe<R>>>>();
    let t = Instant::now();
    for w in 0..workers {
        let k = n / workers + u64::from(w < n % workers);
        let (rt2, tx) = (rt.clone(), tx.clone());
        rt.spawn(Box::pin(async move {
            let res = async {
                let mut held = Vec::with_capacity(k as usize);
                for _ in 0..k {
                    let p = open(rt2.clone(), Proto::Tcp, addr).await?;
                    tcp_round(&p, &[0x5a; MSG]).await?;
                    held.push(p);
                }
                Ok(held)
            }
            .await;
            let _ = tx.send(res).await;
        }));
    }
    drop(tx);
    let mut all = Vec::with_capacity(n as usize);
    while let Ok(res) = rx.recv().await {
        all.extend(res?);
    }
    let time = secs(t);
    if all.len() as u64 != n {
        return Err(format!("{} of {n} connections", all.len()).into());
    }
    held().await;
    Ok(vec![metric("time", time)])
}
