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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use pipe_io::{Pipe, PipeBuilder, Proto, Runtime, SubId};

use crate::{Program, Res};

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
}

impl Program for Relay {
    type Output = ();

    async fn run<R: Runtime>(self, rt: R) -> Res {
        let server = match self.proto {
            Proto::Tcp => tcp_relay(rt, self.listen, self.to).await?,
            Proto::Udp => udp_relay(rt, self.listen, self.to).await?,
        };
        crate::announce(server.local_addr())?;
        server.closed().await;
        Ok(())
    }
}

/// A TCP relay from `listen` to `to`.
pub async fn tcp_relay<R: Runtime>(rt: R, listen: SocketAddr, to: SocketAddr) -> Res<Pipe<R>> {
    let up_rt = rt.clone();
    let server = PipeBuilder::new(rt, Proto::Tcp)
        .bind(listen)
        .on_accept(move |conn| {
            let rt = up_rt.clone();
            async move {
                let upstream = match PipeBuilder::new(rt, Proto::Tcp).dest(to).open().await {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("relay: upstream {to}: {e}");
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

/// A UDP relay from `listen` to `to`.
pub async fn udp_relay<R: Runtime>(rt: R, listen: SocketAddr, to: SocketAddr) -> Res<Pipe<R>> {
    let clients = Arc::new(Mutex::new(Clients {
        by_addr: HashMap::new(),
        order: VecDeque::new(),
    }));
    let up_rt = rt.clone();
    let server = PipeBuilder::new(rt, Proto::Udp)
        .bind(listen)
        .on_message(move |msg, listener| {
            let (clients, rt) = (clients.clone(), up_rt.clone());
            async move {
                let known = clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_addr
                    .get(&msg.from)
                    .cloned();
                let upstream = match known {
                    Some(u) => u,
                    None => match PipeBuilder::new(rt, Proto::Udp).dest(to).open().await {
                        Ok(u) => {
                            let _ = u.unsubscribe(SubId::ALL);
                            // Replies from upstream go back out of the listener to this client.
                            if let Err(e) = u.link_with(&listener, Some(msg.from), None) {
                                eprintln!("relay: link for {}: {e}", msg.from);
                                return;
                            }
                            let mut c = clients.lock().unwrap_or_else(|p| p.into_inner());
                            c.by_addr.insert(msg.from, u.clone());
                            c.order.push_back(msg.from);
                            if c.order.len() > MAX_UDP_CLIENTS {
                                if let Some(old) = c.order.pop_front() {
                                    c.by_addr.remove(&old);
                                }
                            }
                            u
                        }
                        Err(e) => {
                            eprintln!("relay: upstream {to}: {e}");
                            return;
                        }
                    },
                };
                if let Err(e) = upstream.send(&msg.data).await {
                    eprintln!("relay: to {to}: {e}");
                }
            }
        })
        .open()
        .await?;
    Ok(server)
}
