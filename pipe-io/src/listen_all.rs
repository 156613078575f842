//! Listening everywhere (P2PD's `listen_all`): one call opens a server pipe on every address
//! of every up interface, both families (or the subset a [`Listen`] names), with one set of
//! callbacks and one accept queue, and says which addresses it got and which failed.
//!
//! ```no_run
//! # async fn f<R: pipe_io::Runtime>(rt: R) -> Result<(), Box<dyn std::error::Error>> {
//! use pipe_io::{Family, Listen, PipeBuilder, Proto};
//! let servers = PipeBuilder::new(rt, Proto::Tcp)
//!     .on_message(|msg, conn| async move {
//!         let _ = conn.send(&msg.data).await; // echo, whichever address the peer came in on
//!     })
//!     .listen_all(8080) // or Listen::port(8080).family(Family::V6).interface("eth0")
//!     .await?;
//! for addr in servers.local_addrs() {
//!     println!("listening on {addr}");
//! }
//! for (addr, e) in servers.failed() {
//!     eprintln!("not on {addr}: {e}");
//! }
//! let conn = servers.accept().await?; // the next connection on any address
//! # let _ = (conn, Family::V4); Ok(()) }
//! ```
//!
//! Each address gets its own socket (not one socket on `0.0.0.0` or `[::]`): a UDP reply leaves
//! from the address its request came to, an address can be told from another by the pipe a
//! connection arrived on, and a subset of interfaces is possible. IPv6 link-local addresses are
//! bound with their interface's scope id. The interface list is read afresh by each call
//! ([`refresh_interfaces`](crate::refresh_interfaces)); an address that appears later is not
//! covered until the next call.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_lite::future;
use pipe_core::addr::unspecified;
use pipe_core::{Family, Filter, Message, RecvError, SubId, SubscribeError};

use crate::builder::PipeBuilder;
use crate::error::OpenError;
use crate::iface::Interface;
use crate::pipe::Pipe;
use crate::route::Route;
use crate::runtime::Runtime;

/// Which addresses [`PipeBuilder::listen_all`] opens: by default every address of every up
/// interface (loopback included), both families, IPv6 and IPv4 link-local addresses included.
/// A `u16` converts into `Listen::port(port)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    port: u16,
    v4: bool,
    v6: bool,
    interfaces: Option<Vec<String>>,
    link_local: bool,
    bind_device: bool,
}

impl Listen {
    /// Every address of every up interface, on `port`. Port 0: the first address opened gets
    /// a free port from the OS and every other address is asked for the same one (where that
    /// port is taken, an address gets its own free port).
    pub fn port(port: u16) -> Self {
        Self {
            port,
            v4: true,
            v6: true,
            interfaces: None,
            link_local: true,
            bind_device: false,
        }
    }

    /// Only addresses of `family` (call it once: the last call wins).
    pub fn family(mut self, family: Family) -> Self {
        self.v4 = family == Family::V4;
        self.v6 = family == Family::V6;
        self
    }

    /// Only interfaces named so; call it again to add more. A name no up interface has
    /// gives no address.
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.interfaces
            .get_or_insert_with(Vec::new)
            .push(name.into());
        self
    }

    /// Include link-local addresses (fe80::/10 with their scope id, 169.254/16). Default on.
    pub fn link_local(mut self, yes: bool) -> Self {
        self.link_local = yes;
        self
    }

    /// Also bind each socket to its interface (SO_BINDTODEVICE, as
    /// [`Route::with_bind_device`]); an address where the OS refuses is listed as failed with
    /// [`OpenError::BindDevice`]. Default off.
    pub fn bind_device(mut self, yes: bool) -> Self {
        self.bind_device = yes;
        self
    }

    /// The port asked for (0: any free port).
    pub fn port_number(&self) -> u16 {
        self.port
    }

    /// The routes this would listen on, from a fresh read of the interfaces.
    pub fn routes(&self) -> io::Result<Vec<Route>> {
        Ok(self.routes_of(&crate::iface::refresh_interfaces()?))
    }

    /// The routes this would listen on among `interfaces`: IPv4 first, then IPv6, each in the
    /// interfaces' order; interfaces that are down are left out, and so is a second interface
    /// holding an address already taken.
    pub fn routes_of(&self, interfaces: &[Interface]) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        for (family, wanted) in [(Family::V4, self.v4), (Family::V6, self.v6)] {
            if !wanted {
                continue;
            }
            for i in interfaces.iter().filter(|i| i.up) {
                if let Some(names) = &self.interfaces {
                    if !names.contains(&i.name) {
                        continue;
                    }
                }
                for a in &i.addrs {
                    if Family::of(a.ip) != family || (a.is_link_local() && !self.link_local) {
                        continue;
                    }
                    if out
                        .iter()
                        .any(|r| r.nic() == a.ip && r.scope_id() == a.scope_id)
                    {
                        continue;
                    }
                    let route = Route::new(Some(i.name.clone()), i.index, a.ip, a.scope_id);
                    out.push(if self.bind_device {
                        route.with_bind_device()
                    } else {
                        route
                    });
                }
            }
        }
        out
    }

    /// The families asked for, for errors.
    fn first_family(&self) -> Family {
        if self.v4 {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl From<u16> for Listen {
    fn from(port: u16) -> Self {
        Listen::port(port)
    }
}

/// Server pipes on many addresses, opened by [`PipeBuilder::listen_all`], used as one server:
/// the builder's conf and callbacks apply to every address, [`ListenAll::accept`] is one
/// accept queue over all of them (TCP), [`ListenAll::recv`] one receive over all of them
/// (UDP), and [`ListenAll::close`] closes them all. Each address is still its own [`Pipe`]
/// ([`ListenAll::pipes`]).
///
/// The pipes are owned here: dropping the `ListenAll` closes them (unless
/// [`ListenAll::into_pipes`] took them out).
pub struct ListenAll<R: Runtime> {
    rt: R,
    pipes: Vec<Pipe<R>>,
    failed: Vec<(SocketAddr, OpenError)>,
    /// Where the next merged wait starts polling, so that a busy address cannot starve the
    /// others.
    next: AtomicUsize,
}

impl<R: Runtime> std::fmt::Debug for ListenAll<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenAll")
            .field("local_addrs", &self.local_addrs())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> ListenAll<R> {
    /// The server pipes, one per address opened, in the order of [`ListenAll::local_addrs`].
    pub fn pipes(&self) -> &[Pipe<R>] {
        &self.pipes
    }

    /// Take the pipes out: closing is then up to their handles.
    pub fn into_pipes(self) -> Vec<Pipe<R>> {
        self.pipes
    }

    /// The addresses that could not be opened, each with its error (a family with no
    /// address, or an interface that is down, is not listed: it was not asked for).
    pub fn failed(&self) -> &[(SocketAddr, OpenError)] {
        &self.failed
    }

    /// The addresses listened on, in the order opened: IPv4 first, then IPv6 (link-local
    /// ones with their scope id).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.pipes.iter().filter_map(|p| p.local_addr()).collect()
    }

    /// The server pipe listening on `addr` (IP and port; the scope id is not compared).
    pub fn pipe_on(&self, addr: SocketAddr) -> Option<&Pipe<R>> {
        self.pipes.iter().find(|p| {
            p.local_addr()
                .is_some_and(|a| a.ip() == addr.ip() && a.port() == addr.port())
        })
    }

    /// TCP: the next accepted connection on any address, each exactly once (per address in
    /// accept order; addresses take turns). `Err(Closed)` once every server is closed and
    /// every accepted connection was handed out; `Err(NotSubscribed)` for UDP. Cancel-safe:
    /// dropping the future loses no connection.
    pub async fn accept(&self) -> Result<Pipe<R>, RecvError> {
        let start = self.start();
        let waits = self
            .pipes
            .iter()
            .map(|p| Box::pin(p.accept()) as Waiting<'_, Pipe<R>>)
            .collect();
        first_of(waits, start).await
    }

    /// Like [`ListenAll::accept`], giving up after `timeout` with `Ok(None)`.
    pub async fn accept_timeout(&self, timeout: Duration) -> Result<Option<Pipe<R>>, RecvError> {
        self.bounded(self.accept(), timeout).await
    }

    /// UDP: queue every message of every address for [`ListenAll::recv`] (P2PD's `SUB_ALL`
    /// on each server pipe; a UDP server starts with no subscription, as one opened with
    /// `open` does). Messages that arrived before are not queued.
    pub fn subscribe_all(&self) -> Result<(), SubscribeError> {
        for p in &self.pipes {
            p.subscribe(Filter::all())?;
        }
        Ok(())
    }

    /// UDP: the next datagram on any address, with the server pipe it came to (reply through
    /// that pipe, `pipe.send_to(data, msg.from)`, and the reply leaves from the address the
    /// peer sent to). Reads each pipe's all-messages queue: call
    /// [`ListenAll::subscribe_all`] first (else `Err(NotSubscribed)`). Waits up to the first
    /// pipe's `recv_timeout`; `Ok(None)` on timeout. `Err(Closed)` once every pipe is closed
    /// and drained. Cancel-safe.
    pub async fn recv(&self) -> Result<Option<(Pipe<R>, Message)>, RecvError> {
        let timeout = self
            .pipes
            .first()
            .and_then(|p| {
                let g = p.group.lock();
                g.engine.conf(p.id).map(|c| c.recv_timeout)
            })
            .unwrap_or(Duration::from_secs(2));
        self.recv_timeout(timeout).await
    }

    /// Like [`ListenAll::recv`], waiting up to `timeout`.
    pub async fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<(Pipe<R>, Message)>, RecvError> {
        let start = self.start();
        let waits = self
            .pipes
            .iter()
            .map(|p| {
                // Each wait is longer than the bound below: the bound decides the timeout.
                let wait = async move {
                    match p
                        .recv_on(SubId::ALL, Some(timeout.saturating_add(timeout)))
                        .await
                    {
                        Ok(Some(m)) => Ok((p.clone(), m)),
                        Ok(None) => std::future::pending().await,
                        Err(e) => Err(e),
                    }
                };
                Box::pin(wait) as Waiting<'_, (Pipe<R>, Message)>
            })
            .collect();
        self.bounded(first_of(waits, start), timeout).await
    }

    /// TCP: the live connections of every address.
    pub fn connections(&self) -> Vec<Pipe<R>> {
        self.pipes.iter().flat_map(|p| p.connections()).collect()
    }

    /// Close every server pipe (each closes its connections first) and wait until all their
    /// sockets are closed. Idempotent.
    pub async fn close(&self) {
        let closes: Vec<_> = self.pipes.iter().map(|p| Box::pin(p.close())).collect();
        join_all(closes).await;
    }

    /// Wait until every server pipe has ended (closed, or its socket failed).
    pub async fn closed(&self) {
        for p in &self.pipes {
            p.closed().await;
        }
    }

    fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, RecvError>>,
        timeout: Duration,
    ) -> Result<Option<T>, RecvError> {
        let sleep = self.rt.sleep_until(self.rt.now() + timeout);
        future::or(async { f.await.map(Some) }, async {
            sleep.await;
            Ok(None)
        })
        .await
    }
}

/// Poll every future until all are done (`join_all` without another dependency).
async fn join_all<F: Future<Output = ()>>(mut futures: Vec<Pin<Box<F>>>) {
    let mut done = vec![false; futures.len()];
    future::poll_fn(|cx| {
        for (f, d) in futures.iter_mut().zip(done.iter_mut()) {
            if !*d && f.as_mut().poll(cx).is_ready() {
                *d = true;
            }
        }
        if done.iter().all(|d| *d) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// One address's wait in a merged accept or receive.
type Waiting<'a, T> = Pin<Box<dyn Future<Output = Result<T, RecvError>> + Send + 'a>>;

/// The first wait to give a value or an error other than `Closed`, polled from `start` on
/// (round robin); `Err(Closed)` once every wait ended with `Closed` (or there were none). A
/// wait that ends with `Closed` is dropped and the others go on. Only the wait that returns
/// took anything: the others are dropped unfinished, which is why the waits must be
/// cancel-safe (`Pipe::accept` and `Pipe::recv_on` are: they take from the queue
/// synchronously and await only a wake-up).
async fn first_of<T>(waits: Vec<Waiting<'_, T>>, start: usize) -> Result<T, RecvError> {
    let mut waits: Vec<Option<Waiting<'_, T>>> = waits.into_iter().map(Some).collect();
    future::poll_fn(|cx| {
        let n = waits.len();
        let mut live = false;
        for k in 0..n {
            let slot = &mut waits[(start + k) % n];
            let Some(w) = slot.as_mut() else { continue };
            match w.as_mut().poll(cx) {
                Poll::Ready(Err(RecvError::Closed)) => *slot = None,
                Poll::Ready(r) => return Poll::Ready(r),
                Poll::Pending => live = true,
            }
        }
        if live {
            Poll::Pending
        } else {
            Poll::Ready(Err(RecvError::Closed))
        }
    })
    .await
}

/// Open a server on every route `listen` names, with `builder`'s settings: see
/// [`PipeBuilder::listen_all`].
pub(crate) async fn listen_all<R: Runtime>(
    builder: PipeBuilder<R>,
    listen: Listen,
) -> Result<ListenAll<R>, OpenError> {
    builder.check_server()?;
    let routes = listen.routes()?;
    if routes.is_empty() {
        return Err(OpenError::Bind {
            addr: SocketAddr::new(unspecified(listen.first_family()), listen.port),
            source: io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no up interface has an address to listen on",
            ),
        });
    }
    let mut port = listen.port;
    let (mut pipes, mut failed) = (Vec::new(), Vec::new());
    for route in &routes {
        let mut opened = builder.server_on(route, port).open().await;
        // Port 0: the port the first address got was taken here; any free port then.
        if let Err(OpenError::Bind { source, .. }) = &opened {
            if listen.port == 0 && port != 0 && source.kind() == io::ErrorKind::AddrInUse {
                opened = builder.server_on(route, 0).open().await;
            }
        }
        match opened {
            Ok(p) => {
                if port == 0 {
                    port = p.local_addr().map_or(0, |a| a.port());
                }
                pipes.push(p);
            }
            Err(e) => failed.push((route.bind_addr(port), e)),
        }
    }
    if pipes.is_empty() {
        // Nothing listens: the first address's error says why.
        return Err(failed.swap_remove(0).1);
    }
    Ok(ListenAll {
        rt: builder.runtime().clone(),
        pipes,
        failed,
        next: AtomicUsize::new(0),
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::iface::IfAddress;

    fn iface(name: &str, index: u32, up: bool, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index,
            up,
            loopback: name == "lo",
            addrs: addrs
                .iter()
                .map(|a| {
                    let ip: IpAddr = a.parse().unwrap();
                    let scope_id = match ip {
                        IpAddr::V6(v6) if v6.is_unicast_link_local() => index,
                        _ => 0,
                    };
                    IfAddress {
                        ip,
                        prefix: 24,
                        scope_id,
                    }
                })
                .collect(),
        }
    }

    fn list() -> Vec<Interface> {
        vec![
            iface("lo", 1, true, &["127.0.0.1", "::1"]),
            iface("eth0", 2, true, &["10.0.0.2", "2001:db8::2", "fe80::2"]),
            iface("eth1", 3, false, &["10.0.1.2"]),
            iface("wg0", 4, true, &["169.254.1.1"]),
            // The same address on a second interface: listened on once.
            iface("dup", 5, true, &["10.0.0.2"]),
        ]
    }

    fn addrs(l: &Listen) -> Vec<String> {
        l.routes_of(&list())
            .iter()
            .map(|r| r.bind_addr(7).to_string())
            .collect()
    }

    #[test]
    fn every_up_address_ipv4_first_with_scope_ids() {
        assert_eq!(
            addrs(&Listen::port(7)),
            [
                "127.0.0.1:7",
                "10.0.0.2:7",
                "169.254.1.1:7",
                "[::1]:7",
                "[2001:db8::2]:7",
                "[fe80::2%2]:7",
            ]
        );
    }

    #[test]
    fn subsets() {
        assert_eq!(
            addrs(&Listen::port(7).family(Family::V6).link_local(false)),
            ["[::1]:7", "[2001:db8::2]:7"]
        );
        assert_eq!(
            addrs(&Listen::port(7).interface("eth0").interface("wg0")),
            [
                "10.0.0.2:7",
                "169.254.1.1:7",
                "[2001:db8::2]:7",
                "[fe80::2%2]:7"
            ]
        );
        assert_eq!(addrs(&Listen::port(7).interface("eth1")), [] as [&str; 0]);
        assert_eq!(
            addrs(&Listen::port(7).interface("wg0").family(Family::V6)),
            [] as [&str; 0]
        );
        let dev = Listen::port(7).interface("lo").bind_device(true);
        assert!(dev.routes_of(&list()).iter().all(|r| r.binds_device()));
        assert_eq!(Listen::from(9), Listen::port(9));
    }
}
