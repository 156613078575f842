//! The processes of one measurement. The orchestrator starts a `pair` (inside its own network
//! namespace when `unshare -n` works); the pair starts the `server` (and for the relay
//! workload the echo server and the `relay`), then the `client`, and reports the client's
//! `RESULT` line, plus the server's RSS for the many-connections workload.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::rt::{self, announce, raise_nofile, rss_kib, run_smol, run_tokio, watch_stdin};
use crate::spec::{Flavour, Imp, Res, Spec, Workload, CHUNK};
use crate::{pipes, raw_smol, raw_tokio, tls};

/// `--role server <spec>`: serve until stdin closes. A TLS server first prints
/// `CERT <hex DER>`, the certificate it made, for the client to trust.
pub fn server(spec: Spec) -> Res {
    raise_nofile()?;
    watch_stdin(true);
    let (w, count, fl) = (spec.workload, spec.count, spec.flavour);
    let tls = if w.is_tls() {
        let (tls, cert) = tls::server()?;
        println!("CERT {cert}");
        Some(tls)
    } else {
        None
    };
    match (spec.imp, fl.is_tokio()) {
        (Imp::Pipes, true) => run_tokio(fl, move || async move {
            let p = pipes::server(pipe_tokio::Tokio::current(), w, count, tls).await?;
            announce(p.local_addr().ok_or("no local address")?.port());
            p.closed().await;
            Err("the server closed".into())
        }),
        (Imp::Pipes, false) => run_smol(fl, move |ex| async move {
            let p = pipes::server(rt::pipe_smol(&ex), w, count, tls).await?;
            announce(p.local_addr().ok_or("no local address")?.port());
            p.closed().await;
            Err("the server closed".into())
        }),
        (Imp::Raw, true) => run_tokio(fl, move || raw_tokio::server(w, count, tls)),
        (Imp::Raw, false) if w.is_tls() => Err("no raw smol TLS server".into()),
        (Imp::Raw, false) => run_smol(fl, move |ex| raw_smol::server(ex, w, count)),
        (imp, _) => Err(format!("no {} server", imp.name()).into()),
    }
}

/// `--role client <spec> <addr> [<cert hex>]`: run the workload, print `RESULT key=value ...`.
/// A TLS client trusts the server's certificate (`CERT` of the server) alone.
pub fn client(spec: Spec, addr: SocketAddr, cert: Option<&str>) -> Res {
    raise_nofile()?;
    watch_stdin(false);
    let (w, count, fl) = (spec.workload, spec.count, spec.flavour);
    let tls = match (w.is_tls(), cert) {
        (true, Some(c)) => Some(tls::client(c)?),
        (true, None) => return Err("a TLS client needs the server's certificate".into()),
        (false, _) => None,
    };
    let metrics = match (spec.imp, fl.is_tokio()) {
        (Imp::Pipes, true) => run_tokio(fl, move || async move {
            pipes::client(pipe_tokio::Tokio::current(), w, count, addr, tls).await
        }),
        (Imp::Pipes, false) => run_smol(fl, move |ex| async move {
            pipes::client(rt::pipe_smol(&ex), w, count, addr, tls).await
        }),
        (Imp::Raw, true) => run_tokio(fl, move || raw_tokio::client(w, count, addr, tls)),
        (Imp::Raw, false) if w.is_tls() => Err("no raw smol TLS client".into()),
        (Imp::Raw, false) => run_smol(fl, move |ex| raw_smol::client(ex, w, count, addr)),
        (imp, _) => Err(format!("no {} client", imp.name()).into()),
    }?;
    let words: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", words.join(" "));
    Ok(())
}

/// `--role relay <impl> <flavour> <to>`: relay 127.0.0.1:<free port> to `to` until stdin closes.
pub fn relay(imp: Imp, fl: Flavour, to: SocketAddr) -> Res {
    raise_nofile()?;
    watch_stdin(true);
    match (imp, fl.is_tokio()) {
        (Imp::Pipes | Imp::PipesCopy, true) => run_tokio(fl, move || async move {
            let p = pipes::relay(pipe_tokio::Tokio::current(), to, imp == Imp::Pipes).await?;
            announce(p.local_addr().ok_or("no local address")?.port());
            p.closed().await;
            Err("the relay closed".into())
        }),
        (Imp::Pipes | Imp::PipesCopy, false) => run_smol(fl, move |ex| async move {
            let p = pipes::relay(rt::pipe_smol(&ex), to, imp == Imp::Pipes).await?;
            announce(p.local_addr().ok_or("no local address")?.port());
            p.closed().await;
            Err("the relay closed".into())
        }),
        (Imp::Raw, true) => run_tokio(fl, move || raw_tokio::relay(to)),
        (Imp::Raw, false) => run_smol(fl, move |ex| raw_smol::relay(ex, to)),
        (imp, _) => Err(format!("no {} relay", imp.name()).into()),
    }
}

/// A child process whose stdout lines arrive on a channel.
pub struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Res<Proc> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.into(),
            child,
            lines,
        })
    }

    /// A process started with this executable in `role`.
    pub fn role(name: &str, role: &str, args: &[String]) -> Res<Proc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--role").arg(role).args(args);
        Self::spawn(name, cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the first line starting with `prefix`, before `deadline`.
    pub fn expect(&self, prefix: &str, deadline: Instant) -> Res<String> {
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("{}: no {prefix:?} in time", self.name))?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no {prefix:?} in time", self.name).into())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before {prefix:?}", self.name).into())
                }
            }
        }
    }

    /// Close its stdin: servers and relays exit, a holding client lets go.
    pub fn release(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Release, give it a second to exit, then kill it.
    pub fn finish(mut self) {
        self.release();
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn local(port: &str) -> Res<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>()?)))
}

/// `--role pair <spec> [--netns] <timeout secs>`: one measurement; prints `RESULT ...`.
pub fn pair(spec: Spec, netns: bool, timeout: Duration) -> Res {
    if netns {
        let ok = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?
            .success();
        if !ok {
            return Err("ip link set lo up failed".into());
        }
    }
    let deadline = Instant::now() + timeout;
    let mut procs = Vec::new();
    let res = run_pair(spec, deadline, &mut procs);
    for p in procs.into_iter().rev() {
        p.finish();
    }
    println!("RESULT {}", res?);
    Ok(())
}

fn run_pair(spec: Spec, deadline: Instant, procs: &mut Vec<Proc>) -> Res<String> {
    if spec.workload == Workload::Relay {
        return run_relay(spec, deadline, procs);
    }
    let server = Proc::role("server", "server", &spec.args())?;
    let cert = if spec.workload.is_tls() {
        Some(server.expect("CERT ", deadline)?)
    } else {
        None
    };
    let addr = local(&server.expect("PORT ", deadline)?)?;
    let base = rss_kib(server.pid())?;
    let spid = server.pid();
    procs.push(server);
    let mut args = spec.args();
    args.push(addr.to_string());
    args.extend(cert);
    procs.push(Proc::role("client", "client", &args)?);
    let client = procs.last_mut().ok_or("no client")?;
    let mut extra = String::new();
    if spec.workload == Workload::Many {
        client.expect("HOLD", deadline)?;
        // Let the last echoes' callbacks and buffers settle: connections are now idle.
        std::thread::sleep(Duration::from_millis(300));
        let held = rss_kib(spid)?;
        let per = held.saturating_sub(base) as f64 / spec.count as f64;
        extra = format!(
            " rss_per_conn_kib={per} server_rss_base_kib={base} server_rss_held_kib={held}"
        );
        client.release();
    }
    Ok(format!("{}{extra}", client.expect("RESULT ", deadline)?))
}

/// Client (raw tokio, current-thread) → relay under test → echo server (raw tokio,
/// current-thread). `Direct` skips the relay.
fn run_relay(spec: Spec, deadline: Instant, procs: &mut Vec<Proc>) -> Res<String> {
    let fixed = Spec {
        imp: Imp::Raw,
        flavour: Flavour::TokioCt,
        ..spec
    };
    let echo = Proc::role("echo", "server", &fixed.args())?;
    let echo_addr = local(&echo.expect("PORT ", deadline)?)?;
    procs.push(echo);
    let addr = match spec.imp {
        Imp::Direct => echo_addr,
        Imp::Socat => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut cmd = Command::new("socat");
            cmd.arg(format!("-b{CHUNK}"))
                .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
                .arg(format!("TCP:{echo_addr}"));
            procs.push(Proc::spawn("socat", cmd)?);
            let addr = local(&port.to_string())?;
            while std::net::TcpStream::connect(addr).is_err() {
                if Instant::now() > deadline {
                    return Err("socat did not listen".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            addr
        }
        imp => {
            let relay = Proc::role(
                "relay",
                "relay",
                &[
                    imp.name().into(),
                    spec.flavour.name().into(),
                    echo_addr.to_string(),
                ],
            )?;
            let addr = local(&relay.expect("PORT ", deadline)?)?;
            procs.push(relay);
            addr
        }
    };
    let mut args = fixed.args();
    args.push(addr.to_string());
    procs.push(Proc::role("client", "client", &args)?);
    procs.last().ok_or("no client")?.expect("RESULT ", deadline)
}
