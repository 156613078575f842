//! `pipe-cat [--udp] HOST PORT` and `pipe-cat --listen [--udp] ADDR`: netcat on pipes. Stdin
//! goes to the peer, what the peer sends goes to stdout; on stdin's EOF a TCP pipe shuts its
//! write side (`Pipe::shutdown`, a half-close) and keeps reading until the peer closes.
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_signal::{Signal, Signals};
use bytes::Bytes;
use examples::cli::{self, HostPort, Opt, Pos, Spec, IDLE_TIMEOUT, RUNTIME, VERBOSE};
use examples::serve::Tally;
use examples::{run_on, Program, Res, Usage};
use futures_lite::{future, StreamExt};
use pipe_io::{Conf, EndReason, Filter, Pipe, PipeBuilder, Proto, Runtime};

static SPEC: Spec = Spec {
    name: "pipe-cat",
    about: "netcat on pipes: stdin to the peer, the peer to stdout",
    opts: &[
        Opt {
            long: "listen",
            short: Some('l'),
            value: None,
            required: false,
            help: "wait for one peer on ADDR instead of connecting to HOST PORT",
        },
        Opt {
            long: "udp",
            short: Some('u'),
            value: None,
            required: false,
            help: "UDP instead of TCP (one datagram per read of stdin, up to 65,507 bytes)",
        },
        RUNTIME,
        IDLE_TIMEOUT.help("end after SECS with no bytes either way (default: never)"),
        VERBOSE.help(
            "log the connection's open and close (peer, end reason, bytes) to stderr, and a \
             summary on Ctrl-C",
        ),
    ],
    positional: &[
        Pos {
            name: "HOST",
            required: true,
            help: "the host to connect to (a name or an IP address); with --listen: ADDR, \
                   where to listen (HOST:PORT, a name is resolved once, port 0: any free port)",
        },
        Pos {
            name: "PORT",
            required: false,
            help: "the port to connect to (1-65535; not with --listen)",
        },
    ],
    notes: "TCP: on stdin's EOF the write side is shut (the peer reads EOF) and pipe-cat reads \
            until the peer closes, then exits 0. With --listen it serves one peer (others are \
            refused), printing `listening on ADDR` on stderr first. UDP: with --listen the \
            first sender is the peer; pipe-cat runs until Ctrl-C or --idle-timeout. Ctrl-C \
            (SIGINT) or SIGTERM exits 0.",
};

/// Stdin read size: a UDP datagram's largest IPv4 payload (a TCP read takes the same).
const CHUNK: usize = 65_507;

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let listen = args.switch("listen");
        let proto = if args.switch("udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let idle = match args.get("idle-timeout") {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(s) if (0.0..=86_400.0).contains(&s) => {
                    (s > 0.0).then(|| Duration::from_secs_f64(s))
                }
                _ => {
                    return Err(Usage(format!(
                        "--idle-timeout: {v:?} is not a number of seconds from 0 to 86400"
                    ))
                    .into())
                }
            },
        };
        let target = match (listen, args.positional.as_slice()) {
            (true, [addr]) => Target::Listen(HostPort::parse("ADDR", addr, None)?),
            (true, [_, port]) => {
                return Err(Usage(format!(
                    "--listen takes one ADDR (HOST:PORT), not a PORT as well ({port:?})"
                ))
                .into())
            }
            (false, [host, port]) => {
                let port = match port.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => {
                        return Err(Usage(format!(
                            "PORT: {port:?} is not a port (a number from 1 to 65535)"
                        ))
                        .into())
                    }
                };
                if HostPort::parse("HOST", host, None).is_ok() {
                    return Err(Usage(format!(
                        "HOST: {host:?} holds a port: give the host, then the port"
                    ))
                    .into());
                }
                Target::Connect(HostPort::parse("HOST", host, Some(port))?)
            }
            (false, _) => {
                return Err(Usage("missing PORT (required without --listen)".into()).into())
            }
            (true, _) => unreachable!("the parser allows two positional arguments"),
        };
        let tally = args.switch("verbose").then(Tally::new);
        run_on(
            args.runtime()?,
            Cat {
                proto,
                target,
                idle,
                tally,
                log: Log::default(),
            },
        )
    })
}

enum Target {
    Connect(HostPort),
    Listen(HostPort),
}

struct Cat {
    proto: Proto,
    target: Target,
    idle: Option<Duration>,
    tally: Option<Arc<Tally>>,
    /// The session's peer (once open) and its bytes, for `-v`.
    log: Log,
}

/// What `-v` logs of the one session: its peer, why it ended, the bytes each way as
/// pipe-cat moved them (stdin to the peer, the peer to stdout).
#[derive(Default)]
struct Log {
    open: Mutex<Option<(&'static str, Option<SocketAddr>)>>,
    reason: Arc<Mutex<Option<EndReason>>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Program for Cat {
    type Output = ();

    async fn run<R: Runtime>(self, rt: R) -> Res {
        let mut signals = Signals::new([Signal::Int, Signal::Term])?;
        let tally = self.tally.clone();
        let session = async {
            let r = self.session(rt.clone()).await;
            Some(r)
        };
        let signal = async {
            signals.next().await;
            None
        };
        match future::or(session, signal).await {
            Some(r) => r,
            None => {
                if let Some(t) = &tally {
                    self.log_close(t, EndReason::Local);
                    eprintln!("{}", t.summary("connections", true));
                }
                Ok(())
            }
        }
    }
}

impl Cat {
    fn conf(&self) -> Conf {
        Conf {
            idle_timeout: self.idle,
            // One peer: a listener refuses the others.
            max_connections: 1,
            ..Conf::default()
        }
    }

    async fn session<R: Runtime>(&self, rt: R) -> Res {
        let what = if self.proto == Proto::Tcp {
            "tcp"
        } else {
            "udp"
        };
        match (&self.target, self.proto) {
            (Target::Connect(hp), proto) => {
                let pipe = PipeBuilder::new(rt.clone(), proto)
                    .dest((hp.host.as_str(), hp.port))
                    .conf(self.conf())
                    .open()
                    .await?;
                self.log_open(what, &pipe, pipe.dest());
                let res = if proto == Proto::Tcp {
                    tcp(pipe.clone(), &self.log).await
                } else {
                    udp(pipe.clone(), None, &self.log).await
                };
                self.finish(&rt, pipe).await;
                res
            }
            (Target::Listen(hp), Proto::Tcp) => {
                let addr = hp.resolve("ADDR", None)?;
                let server = PipeBuilder::new(rt.clone(), Proto::Tcp)
                    .bind(addr)
                    .conf(self.conf())
                    .open()
                    .await?;
                announce(server.local_addr())?;
                let conn = server.accept().await?;
                self.log_open(what, &conn, conn.dest());
                let res = tcp(conn.clone(), &self.log).await;
                self.finish(&rt, conn).await;
                server.close().await;
                res
            }
            (Target::Listen(hp), Proto::Udp) => {
                let addr = hp.resolve("ADDR", None)?;
                let pipe = PipeBuilder::new(rt.clone(), Proto::Udp)
                    .bind(addr)
                    .conf(self.conf())
                    .open()
                    .await?;
                pipe.subscribe(Filter::all())?;
                announce(pipe.local_addr())?;
                // The first sender is the peer.
                let first = loop {
                    match pipe.recv_timeout(Duration::MAX).await? {
                        Some(m) => break m,
                        None => continue,
                    }
                };
                self.log_open(what, &pipe, Some(first.from));
                write_out(&first.data)?;
                self.log.count_in(first.data.len());
                let res = udp(pipe.clone(), Some(first.from), &self.log).await;
                self.finish(&rt, pipe).await;
                res
            }
        }
    }

    /// `-v`: log the open now; keep the end reason for the close line.
    fn log_open<R: Runtime>(&self, what: &'static str, pipe: &Pipe<R>, peer: Option<SocketAddr>) {
        let Some(t) = &self.tally else { return };
        t.open(what, peer);
        *lock(&self.log.open) = Some((what, peer));
        let slot = self.log.reason.clone();
        pipe.add_end_cb(move |reason, _| {
            *lock(&slot) = Some(reason);
            async {}
        });
    }

    /// `-v`: the close line, once.
    fn log_close(&self, t: &Tally, fallback: EndReason) {
        if let Some((what, peer)) = lock(&self.log.open).take() {
            let reason = lock(&self.log.reason).take().unwrap_or(fallback);
            let (i, o) = (
                self.log.bytes_in.load(Relaxed),
                self.log.bytes_out.load(Relaxed),
            );
            t.close(what, peer, &reason, i, o);
        }
    }

    /// Close the pipe (what it queued still goes out), then log its close.
    async fn finish<R: Runtime>(&self, rt: &R, pipe: Pipe<R>) {
        pipe.close().await;
        if let Some(t) = &self.tally {
            // The end callback may still be on its way: wait a little for the real reason.
            let deadline = rt.now() + Duration::from_secs(1);
            while lock(&self.log.reason).is_none() && rt.now() < deadline {
                rt.sleep_until(rt.now() + Duration::from_millis(5)).await;
            }
            self.log_close(t, EndReason::Local);
        }
    }
}

impl Log {
    fn count_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    fn count_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `listening on ADDR` on stderr (stdout carries the peer's bytes).
fn announce(addr: Option<SocketAddr>) -> Res {
    let addr = addr.ok_or("no local address")?;
    let mut err = std::io::stderr().lock();
    writeln!(err, "listening on {addr}")?;
    err.flush()?;
    Ok(())
}

fn write_out(data: &[u8]) -> Res {
    let mut out = std::io::stdout().lock();
    out.write_all(data)?;
    out.flush()?;
    Ok(())
}

/// Stdin, read on a thread of its own (a blocking read), as chunks; closed at EOF.
fn stdin_chunks() -> smol::channel::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = smol::channel::bounded(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send_blocking(Ok(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send_blocking(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Stdout, written on a thread of its own: send chunks, drop the sender, then `finish` waits
/// until everything was written and flushed.
struct Stdout {
    tx: smol::channel::Sender<Bytes>,
    done: smol::channel::Receiver<std::io::Result<()>>,
}

impl Stdout {
    fn new() -> Self {
        let (tx, rx) = smol::channel::bounded::<Bytes>(8);
        let (done_tx, done) = smol::channel::bounded(1);
        std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            let mut res = Ok(());
            while let Ok(b) = rx.recv_blocking() {
                res = out.write_all(&b).and_then(
                    |()| {
                        if rx.is_empty() {
                            out.flush()
                        } else {
                            Ok(())
                        }
                    },
                );
                if res.is_err() {
                    break;
                }
            }
            let res = res.and_then(|()| out.flush());
            let _ = done_tx.send_blocking(res);
        });
        Stdout { tx, done }
    }

    async fn write(&self, b: Bytes) -> Res {
        self.tx
            .send(b)
            .await
            .map_err(|_| "stdout was closed".into())
    }

    async fn finish(self) -> Res {
        drop(self.tx);
        Ok(self
            .done
            .recv()
            .await
            .map_err(|_| "stdout writer failed")??)
    }
}

/// A TCP session: the pipe as a byte stream (so a slow stdout pauses the socket instead of
/// dropping bytes); stdin to the pipe, then `shutdown()` at its EOF; the pipe to stdout
/// until the peer's FIN. Done when the peer has closed and its bytes are on stdout (what is
/// left of stdin then is not sent).
async fn tcp<R: Runtime>(pipe: Pipe<R>, log: &Log) -> Res {
    let writer = pipe.clone();
    let mut stream = pipe.into_stream()?;
    let input = stdin_chunks();
    let up = async {
        while let Ok(chunk) = input.recv().await {
            let chunk = chunk?;
            match writer.send(&chunk).await {
                Ok(()) => log.count_out(chunk.len()),
                // The pipe ended (the peer reset, a deadline): the read side reports why.
                Err(pipe_io::SendError::Closed) => return future::pending::<Res>().await,
                Err(e) => return Err(e.into()),
            }
        }
        // stdin's EOF: a half-close, the peer reads EOF; we keep reading.
        writer.shutdown().await?;
        future::pending::<Res>().await
    };
    let down = async {
        let out = Stdout::new();
        loop {
            future::poll_fn(|cx| stream.poll_fill(cx)).await?;
            let buf = stream.buffered();
            if buf.is_empty() {
                break; // the peer's FIN
            }
            let n = buf.len();
            out.write(Bytes::copy_from_slice(buf)).await?;
            log.count_in(n);
            stream.consume(n);
        }
        out.finish().await
    };
    future::or(down, up).await
}

/// A UDP session: each stdin read is a datagram to the peer (`to`, or the pipe's
/// destination); each datagram from the peer goes to stdout. Runs until the pipe ends (its
/// idle deadline) or a signal.
async fn udp<R: Runtime>(pipe: Pipe<R>, to: Option<SocketAddr>, log: &Log) -> Res {
    let input = stdin_chunks();
    let up = async {
        while let Ok(chunk) = input.recv().await {
            let chunk = chunk?;
            match to {
                Some(peer) => pipe.send_to(&chunk, peer).await?,
                None => pipe.send(&chunk).await?,
            }
            log.count_out(chunk.len());
        }
        future::pending::<Res>().await
    };
    let down = async {
        let out = Stdout::new();
        let mut msgs = pipe.messages();
        while let Some(m) = msgs.next().await {
            if to.is_some_and(|peer| peer != m.from) {
                continue; // not the peer
            }
            let n = m.data.len();
            out.write(m.data).await?;
            log.count_in(n);
        }
        out.finish().await
    };
    future::or(down, up).await
}
