//! `relay`: a socat-like forwarder built on linked pipes.
//!
//! TCP: each accepted connection gets its own upstream connection; the two are linked both
//! ways before the accepted connection reads its first byte (the listener's accept hook), so
//! the engine forwards every byte with no callback on the data path. When either side ends,
//! the other is closed.
//!
//! UDP: one listening socket serves every client. Each new client address gets its own
//! upstream pipe (like socat's `UDP-LISTEN:...,fork`); the upstream is linked back to the
//! listener with the client as the link's destination, so replies go to the right client.
//! The client-to-upstream direction goes through the listener's message callback, which picks
//! the client's upstream: a link cannot be added before a client's first datagram is read.
//!
//! Deadlines (`--idle-timeout`, `--write-stall`): a TCP connection or upstream that is idle,
//! or whose peer stops reading, ends, and so does its other side. A UDP client's upstream
//! socket is given back once idle for the idle timeout. The relay has no first-message
//! deadline: many protocols let the server speak first.
//!
//! With a [`Tally`] (`-v`), each client's open and close (its address, the end reason, bytes
//! from and to the client) go to stderr, and the relay prints a summary when stopped by
//! Ctrl-C. A UDP client "closes" when its upstream socket is given back.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use pipe_io::{Conf, Pipe, PipeBuilder, Proto, Runtime, SubId};

use crate::serve::{serve, Ended, Tally};
use crate::{Deadlines, Program, RateLimited, Res};

/// Most UDP clients with a live upstream; the oldest is closed past it.
const MAX_UDP_CLIENTS: usize = 4096;

/// Forward `listen` to `to` until killed, after printing `listening on <addr>`.
#[derive(Debug)]
pub struct Relay {
    /// TCP or UDP.
    pub proto: Proto,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to forward.
    pub to: SocketAddr,
    /// Idle and write-stall deadlines for both sides.
    pub deadlines: Deadlines,
    /// `-v`: log clients, and a summary on Ctrl-C.
    pub tally: Option<Arc<Tally>>,
    /// TLS toward clients (`--tls-listen CERT KEY`) and toward the upstream (`--tls-to`).
    pub tls: RelayTls,
}

/// The TLS sides of a TCP relay: terminate TLS from clients, originate it to the upstream,
/// or both (the relay then sees plaintext in between).
#[derive(Debug, Clone, Default)]
pub struct RelayTls {
    /// Serve TLS to clients with this config.
    pub listen: Option<pipe_io::Tls>,
    /// Connect to the upstream with TLS, with this (client) config.
    pub to: Option<pipe_io::Tls>,
}

impl Program for Relay {
    type Output = ();

    async fn run<R: Runtime>(self, rt: R) -> Res {
        let (tally, rt2) = (self.tally.clone(), rt.clone());
        let server = match self.proto {
            Proto::Tcp => {
                tcp_relay_tls(rt, self.listen, self.to, self.deadlines, tally, self.tls).await?
            }
            Proto::Udp => udp_relay(rt, self.listen, self.to, self.deadlines, tally).await?,
        };
        if serve(&server).await? == Ended::Signal {
            server.close().await;
            if let Some(t) = &self.tally {
                // TCP clients close with the listener; UDP clients' upstreams only when idle.
                if self.proto == Proto::Tcp {
                    t.settle(&rt2, std::time::Duration::from_secs(2)).await;
                }
                eprintln!("{}", t.summary("clients", true));
            }
        }
        Ok(())
    }
}

/// The conf of both sides of a relayed connection.
fn relay_conf(d: Deadlines) -> Conf {
    Conf {
        first_message_timeout: None,
        ..d.conf()
    }
}

/// No idle and no write-stall deadline.
const NO_DEADLINES: Deadlines = Deadlines {
    idle: None,
    write_stall: None,
};

/// A TCP relay from `listen` to `to`, with no deadlines (for benchmarks and embedding).
pub async fn tcp_relay<R: Runtime>(rt: R, listen: SocketAddr, to: SocketAddr) -> Res<Pipe<R>> {
    tcp_relay_with(rt, listen, to, NO_DEADLINES, None).await
}

/// A TCP relay like [`tcp_relay`] that never splices (`Conf::zero_copy` off): every byte is
/// read into user space and written out again (the copying path, for comparisons).
pub async fn tcp_relay_copying<R: Runtime>(
    rt: R,
    listen: SocketAddr,
    to: SocketAddr,
) -> Res<Pipe<R>> {
    let base = Conf {
        zero_copy: false,
        ..relay_conf(NO_DEADLINES)
    };
    tcp_relay_conf(rt, listen, to, base, None, RelayTls::default()).await
}

/// A TCP relay with deadlines and a log, no TLS.
pub async fn tcp_relay_with<R: Runtime>(
    rt: R,
    listen: SocketAddr,
    to: SocketAddr,
    deadlines: Deadlines,
    tally: Option<Arc<Tally>>,
) -> Res<Pipe<R>> {
    tcp_relay_tls(rt, listen, to, deadlines, tally, RelayTls::default()).await
}

/// A TCP relay from `listen` to `to`. An upstream that refuses or fails ends its client at
/// once. A `tally` logs each client's open and close. `tls` terminates and/or originates TLS.
pub async fn tcp_relay_tls<R: Runtime>(
    rt: R,
    listen: SocketAddr,
    to: SocketAddr,
    deadlines: Deadlines,
    tally: Option<Arc<Tally>>,
    tls: RelayTls,
) -> Res<Pipe<R>> {
    tcp_relay_conf(rt, listen, to, relay_conf(deadlines), tally, tls).await
}

async fn tcp_relay_conf<R: Runtime>(
    rt: R,
    listen: SocketAddr,
    to: SocketAddr,
    base: Conf,
    tally: Option<Arc<Tally>>,
    tls: RelayTls,
) -> Res<Pipe<R>> {
    let up_rt = rt.clone();
    let conf = Conf {
        tls: tls.listen,
        ..base.clone()
    };
    let up_conf = Conf {
        tls: tls.to,
        ..base
    };
    let log = Arc::new(RateLimited::default());
    let server = PipeBuilder::new(rt, Proto::Tcp)
        .bind(listen)
        .conf(conf)
        .on_accept(move |conn| {
            let (rt, conf, log) = (up_rt.clone(), up_conf.clone(), log.clone());
            if let Some(t) = &tally {
                t.open("tcp", conn.dest());
                let t = t.clone();
                conn.add_end_cb(move |reason, conn| {
                    t.close_stats("tcp", conn.dest(), &reason, conn.stats());
                    async {}
                });
            }
            async move {
                let opened = PipeBuilder::new(rt, Proto::Tcp)
                    .dest(to)
                    .conf(conf)
                    .open()
                    .await;
                let upstream = match opened {
                    Ok(u) => u,
                    Err(e) => {
                        log.eprint(format_args!("relay: upstream {to}: {e}"));
                        conn.close().await;
                        return;
                    }
                };
                if conn.link(&upstream).is_err() || upstream.link(&conn).is_err() {
                    conn.close().await;
                    return;
                }
                // Everything from upstream is forwarded; queueing a copy would only fill memory.
                let _ = upstream.unsubscribe(SubId::ALL);
                let down = conn.clone();
                upstream.add_end_cb(move |_, _| {
                    let down = down.clone();
                    async move { down.close().await }
                });
                // The connection's end callback owns the upstream: it lives as long as the
                // connection, and closes with it.
                let up = Mutex::new(Some(upstream));
                conn.add_end_cb(move |_, _| {
                    let up = up.lock().unwrap_or_else(|p| p.into_inner()).take();
                    async move {
                        if let Some(up) = up {
                            up.close().await;
                        }
                    }
                });
            }
        })
        .open()
        .await?;
    Ok(server)
}

struct Clients<R: Runtime> {
    by_addr: HashMap<SocketAddr, Pipe<R>>,
    order: VecDeque<SocketAddr>,
}

/// A UDP relay from `listen` to `to`. Each client's upstream socket is closed once idle for
/// the idle timeout (or when more than 4,096 clients are live, the oldest first). A `tally`
/// logs each client's open (its first datagram) and close (its upstream given back).
pub async fn udp_relay<R: Runtime>(
    rt: R,
    listen: SocketAddr,
    to: SocketAddr,
    deadlines: Deadlines,
    tally: Option<Arc<Tally>>,
) -> Res<Pipe<R>> {
    let clients = Arc::new(Mutex::new(Clients {
        by_addr: HashMap::new(),
        order: VecDeque::new(),
    }));
    let up_rt = rt.clone();
    let up_conf = Conf {
        idle_timeout: deadlines.idle,
        ..Conf::default()
    };
    let log = Arc::new(RateLimited::default());
    let server = PipeBuilder::new(rt, Proto::Udp)
        .bind(listen)
        .on_message(move |msg, listener| {
            let (clients, rt, conf, log, tally) = (
                clients.clone(),
                up_rt.clone(),
                up_conf.clone(),
                log.clone(),
                tally.clone(),
            );
            async move {
                let known = clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_addr
                    .get(&msg.from)
                    .cloned();
                let upstream = match known {
                    Some(u) => u,
                    None => match PipeBuilder::new(rt, Proto::Udp)
                        .dest(to)
                        .conf(conf)
                        .open()
                        .await
                    {
                        Ok(u) => {
                            let _ = u.unsubscribe(SubId::ALL);
                            // Replies from upstream go back out of the listener to this client.
                            if let Err(e) = u.link_with(&listener, Some(msg.from), None) {
                                log.eprint(format_args!("relay: link for {}: {e}", msg.from));
                                return;
                            }
                            // Idle (or closed): forget the client, so its socket is given back.
                            let (table, client) = (Arc::downgrade(&clients), msg.from);
                            if let Some(t) = tally {
                                t.open("udp", Some(client));
                                // The upstream's counters, seen from the client: what went
                                // up came in from the client, and the other way round.
                                u.add_end_cb(move |reason, u| {
                                    let s = u.stats().unwrap_or_default();
                                    t.close("udp", Some(client), &reason, s.bytes_out, s.bytes_in);
                                    async {}
                                });
                            }
                            u.add_end_cb(move |_, _| {
                                if let Some(t) = table.upgrade() {
                                    let mut c = t.lock().unwrap_or_else(|p| p.into_inner());
                                    c.by_addr.remove(&client);
                                    c.order.retain(|a| *a != client);
                                }
                                async {}
                            });
                            let evicted = {
                                let mut c = clients.lock().unwrap_or_else(|p| p.into_inner());
                                c.by_addr.insert(msg.from, u.clone());
                                c.order.push_back(msg.from);
                                if c.order.len() > MAX_UDP_CLIENTS {
                                    c.order.pop_front().and_then(|old| c.by_addr.remove(&old))
                                } else {
                                    None
                                }
                            };
                            // Closed outside the lock: its end callback takes the lock too.
                            drop(evicted);
                            u
                        }
                        Err(e) => {
                            log.eprint(format_args!("relay: upstream {to}: {e}"));
                            return;
                        }
                    },
                };
                match upstream.send(&msg.data).await {
                    Ok(()) | Err(pipe_io::SendError::Closed) => {}
                    Err(e) => log.eprint(format_args!("relay: to {to}: {e}")),
                }
            }
        })
        .open()
        .await?;
    Ok(server)
}
