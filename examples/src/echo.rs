//! `echo-server`: echo every message back to its sender.
//!
//! TCP connections get the library's server deadlines (idle, first message, write stall), so
//! peers that stall, or send without reading, are closed. Errors are logged at most once a
//! second.
//!
//! `reliable` (UDP): the socket speaks P2PD's reliable UDP (`Conf::reliable_udp`): every data
//! frame is acknowledged by the engine, and its payload is echoed with `send_reliable`, which
//! the peer acknowledges in turn. Each echo runs in its own task, so a peer that never ACKs
//! delays no one else; at most [`MAX_RELIABLE_ECHOES`] wait at once (past that, messages are
//! acknowledged but not echoed, and a line is logged).
//!
//! With a [`Tally`] (`-v`), each TCP connection's open and close (peer, end reason, bytes in
//! and out) and each new UDP peer go to stderr, and the server prints a summary when stopped
//! by Ctrl-C.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipe_io::{Outcome, PipeBuilder, Proto, Runtime, SendError};

use crate::cli::Bind;
use crate::serve::{serve, serve_all, Ended, Tally};
use crate::{Deadlines, Program, RateLimited, Res};

/// Reliable echoes waiting for their ACK at once, at most.
pub const MAX_RELIABLE_ECHOES: usize = 1024;

/// UDP peers remembered for `-v`'s "open" lines; the set starts over past this many.
const MAX_UDP_PEERS: usize = 4096;

/// Echo until killed (or Ctrl-C), after printing `listening on <addr>`.
#[derive(Debug)]
pub struct EchoServer {
    /// TCP or UDP.
    pub proto: Proto,
    /// Where to listen: one address, or every address of every up interface
    /// (`--bind all:PORT`, [`pipe_io::PipeBuilder::listen_all`]).
    pub bind: Bind,
    /// Deadlines for TCP connections.
    pub deadlines: Deadlines,
    /// UDP: P2PD's reliable UDP, echoing with `send_reliable`.
    pub reliable: bool,
    /// `-v`: log connections, and a summary on Ctrl-C.
    pub tally: Option<Arc<Tally>>,
    /// TCP: serve TLS with this config (`--tls CERT KEY`).
    pub tls: Option<pipe_io::Tls>,
}

impl Program for EchoServer {
    type Output = ();

    async fn run<R: Runtime>(self, rt: R) -> Res {
        if self.reliable && self.proto != Proto::Udp {
            return Err(crate::Usage("--reliable needs --proto udp".into()).into());
        }
        let conf = match self.proto {
            Proto::Tcp => pipe_io::Conf {
                tls: self.tls.clone(),
                ..self.deadlines.conf()
            },
            // The UDP server is one socket for every peer: it never idles out.
            Proto::Udp => pipe_io::Conf {
                reliable_udp: self.reliable,
                ..pipe_io::Conf::default()
            },
        };
        let log = Arc::new(RateLimited::default());
        let (reliable, spawner, rt2) = (self.reliable, rt.clone(), rt.clone());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let udp_peers = match (&self.tally, self.proto) {
            (Some(_), Proto::Udp) => Some(Arc::new(Mutex::new(HashSet::new()))),
            _ => None,
        };
        let (msg_tally, msg_peers) = (self.tally.clone(), udp_peers.clone());
        let builder = PipeBuilder::new(rt, self.proto).conf(conf);
        let mut builder = if reliable {
            builder.on_message(move |msg, pipe| {
                note_udp_peer(&msg_tally, &msg_peers, msg.from);
                // The echo waits for its ACK (up to the retries' end) in its own task.
                if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_RELIABLE_ECHOES {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    log.eprint(format_args!(
                        "echo to {}: {MAX_RELIABLE_ECHOES} reliable echoes already waiting \
                         for ACKs; not echoed",
                        msg.from
                    ));
                } else {
                    let (in_flight, log) = (in_flight.clone(), log.clone());
                    spawner.spawn(Box::pin(async move {
                        match pipe.send_reliable(&msg.data, Some(msg.from)).await {
                            Ok(Outcome::Acked) | Err(SendError::Closed) => {}
                            Ok(Outcome::Unconfirmed) => log.eprint(format_args!(
                                "echo to {}: no ACK after every try",
                                msg.from
                            )),
                            Err(e) => log.eprint(format_args!("echo to {}: {e}", msg.from)),
                        }
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    }));
                }
                async {}
            })
        } else {
            builder.on_message(move |msg, pipe| {
                note_udp_peer(&msg_tally, &msg_peers, msg.from);
                let log = log.clone();
                async move {
                    match pipe.send_to(&msg.data, msg.from).await {
                        // The client left: nothing to report.
                        Ok(()) | Err(SendError::Closed) => {}
                        Err(e) => log.eprint(format_args!("echo to {}: {e}", msg.from)),
                    }
                }
            })
        };
        if let (Some(t), Proto::Tcp) = (&self.tally, self.proto) {
            let (up, end) = (t.clone(), t.clone());
            builder = builder
                .on_up(move |conn| {
                    up.open("tcp", conn.dest());
                    async {}
                })
                .on_end(move |reason, conn| {
                    // The listener ends too (it has no peer): only connections are counted.
                    if let Some(peer) = conn.dest() {
                        end.close_stats("tcp", Some(peer), &reason, conn.stats());
                    }
                    async {}
                });
        }
        // One server pipe, or one per address (the same callbacks on each).
        let (ended, udp) = match &self.bind {
            Bind::Addr(addr) => {
                let server = builder.bind(*addr).open().await?;
                let ended = serve(&server).await?;
                // A UDP server's counters are its own: read them before it closes.
                let udp = server.stats().filter(|_| self.proto == Proto::Udp);
                server.close().await;
                (ended, udp)
            }
            Bind::All(listen) => {
                let servers = builder.listen_all(listen.clone()).await?;
                let ended = serve_all(&servers).await?;
                let udp = (self.proto == Proto::Udp).then(|| {
                    let mut sum = pipe_io::Stats::default();
                    for s in servers.pipes().iter().filter_map(|p| p.stats()) {
                        sum.bytes_in += s.bytes_in;
                        sum.bytes_out += s.bytes_out;
                    }
                    sum
                });
                servers.close().await;
                (ended, udp)
            }
        };
        if ended == Ended::Signal {
            if let Some(t) = &self.tally {
                t.settle(&rt2, Duration::from_secs(2)).await;
                let summary = match udp {
                    Some(s) => {
                        t.add_bytes(s.bytes_in, s.bytes_out);
                        t.summary("UDP peers", false)
                    }
                    None => t.summary("connections", true),
                };
                eprintln!("{summary}");
            }
        }
        Ok(())
    }
}

/// `-v` on UDP: an "open" line for each peer's first datagram.
fn note_udp_peer(
    tally: &Option<Arc<Tally>>,
    peers: &Option<Arc<Mutex<HashSet<SocketAddr>>>>,
    from: SocketAddr,
) {
    let (Some(t), Some(peers)) = (tally, peers) else {
        return;
    };
    let new = {
        let mut p = peers.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() >= MAX_UDP_PEERS {
            p.clear();
        }
        p.insert(from)
    };
    if new {
        t.open("udp", Some(from));
    }
}
