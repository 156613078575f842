//! A STUN Binding responder on UDP pipes (these machines are offline, so the UDP example asks
//! this one by default), the RFC 5780 server on four sockets (`stun-server --alt`), and the NAT
//! behaviour report of `stun-client --nat`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pipe_core::stun::{NatReport, StunServer, StunServerConfig};
use pipe_io::{discover_nat, NatConfig, OpenError, Pipe, PipeBuilder, Proto, Route, Runtime};

use crate::Res;

/// Start a responder bound to `bind`; it answers until the returned pipe is closed or dropped.
/// Classic RFC 3489 clients are answered too; CHANGE-REQUEST asking for a change gets 420.
pub async fn start<R: Runtime>(rt: R, bind: SocketAddr) -> Result<Pipe<R>, OpenError> {
    let agent = Arc::new(Mutex::new(StunServer::new(StunServerConfig::default())));
    PipeBuilder::new(rt, Proto::Udp)
        .bind(bind)
        .on_message(move |msg, pipe| {
            let agent = agent.clone();
            async move {
                let Some(local) = pipe.local_addr() else {
                    return;
                };
                let reply = agent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .handle_request(Instant::now(), local, msg.from, &msg.data);
                if let Some(reply) = reply {
                    let _ = pipe.send_to(&reply.payload, reply.to).await;
                }
            }
        })
        .open()
        .await
}

/// The RFC 5780 server: sockets on `primary` (A:p), A:q, B:p and `alternate` (B:q), one
/// [`StunServer`] behind them (so rate limits hold per source across all four), each answer
/// sent from the socket the request asked for (CHANGE-REQUEST). Port 0 in `primary` or
/// `alternate` picks a free port. Returns the four pipes, primary first and alternate last;
/// the server answers until they are closed.
pub async fn start_rfc5780<R: Runtime>(
    rt: R,
    primary: SocketAddr,
    alternate: SocketAddr,
) -> Result<Vec<Pipe<R>>, OpenError> {
    // Open A:p and B:q first, so free ports are known, then the two crossed sockets.
    let pipes: Arc<Mutex<HashMap<SocketAddr, Pipe<R>>>> = Arc::default();
    let agent: Arc<Mutex<Option<StunServer>>> = Arc::default();
    let open = |addr: SocketAddr| {
        let (pipes, agent) = (pipes.clone(), agent.clone());
        PipeBuilder::new(rt.clone(), Proto::Udp)
            .bind(addr)
            .on_message(move |msg, pipe| {
                let (pipes, agent) = (pipes.clone(), agent.clone());
                async move {
                    let Some(local) = pipe.local_addr() else {
                        return;
                    };
                    let reply = agent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                        .and_then(|a| a.handle_request(Instant::now(), local, msg.from, &msg.data));
                    let Some(reply) = reply else { return };
                    let out = if reply.from == local {
                        Some(pipe)
                    } else {
                        let map = pipes.lock().unwrap_or_else(|p| p.into_inner());
                        map.get(&reply.from).cloned()
                    };
                    if let Some(out) = out {
                        let _ = out.send_to(&reply.payload, reply.to).await;
                    }
                }
            })
            .open()
    };
    let a = open(primary).await?;
    let b = open(alternate).await?;
    let (pa, pb) = (a.local_addr(), b.local_addr());
    let (Some(pa), Some(pb)) = (pa, pb) else {
        return Err(OpenError::Io(std::io::Error::other("no local address")));
    };
    let aq = open(SocketAddr::new(pa.ip(), pb.port())).await?;
    let bp = open(SocketAddr::new(pb.ip(), pa.port())).await?;
    let all = vec![a, aq, bp, b];
    {
        let mut map = pipes.lock().unwrap_or_else(|p| p.into_inner());
        for p in &all {
            if let Some(addr) = p.local_addr() {
                map.insert(addr, p.clone());
            }
        }
    }
    let mut conf = StunServerConfig::default();
    conf.alternate = Some((pa, pb));
    *agent.lock().unwrap_or_else(|p| p.into_inner()) = Some(StunServer::new(conf));
    Ok(all)
}

/// Run NAT behaviour discovery against `servers` from `bind` (or any address of the first
/// server's family) and format the report, one behaviour a line, the class last.
pub async fn nat_report<R: Runtime>(
    rt: R,
    servers: Vec<SocketAddr>,
    bind: Option<IpAddr>,
) -> Res<String> {
    let Some(first) = servers.first() else {
        return Err("no STUN server given".into());
    };
    let route = match bind {
        Some(ip) => Route::from_ip(ip),
        None => Route::any(pipe_io::Family::of_addr(first)),
    };
    let report = discover_nat(&rt, &route, &NatConfig::new(servers)).await?;
    Ok(format_report(&report))
}

/// The lines `stun-client --nat` prints.
pub fn format_report(r: &NatReport) -> String {
    let mut out = String::new();
    let opt = |a: Option<SocketAddr>| a.map_or("-".to_owned(), |a| a.to_string());
    let _ = writeln!(out, "server: {} (other {})", opt(r.server), opt(r.other));
    let _ = writeln!(out, "local: {}", r.local);
    let _ = writeln!(out, "mapped: {}", opt(r.mapped));
    let _ = writeln!(out, "mapping: {:?}", r.mapping);
    let _ = writeln!(out, "filtering: {:?}", r.filtering);
    let yn = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    let _ = writeln!(out, "port preserved: {}", yn(r.port_preserved));
    let _ = writeln!(out, "delta: {:?} {:?}", r.delta, r.mappings);
    let _ = writeln!(out, "hairpin: {}", yn(r.hairpin));
    let _ = writeln!(out, "class: {} ({})", r.class, r.class.p2pd_code());
    out
}
