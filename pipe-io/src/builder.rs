//! Opening pipes: `PipeBuilder` for every option, and the `IntoDest` conversions that let
//! `pipe_open(proto, dest)` take text, tuples or socket addresses.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use pipe_core::addr::{loopback, unspecified};
use pipe_core::{Conf, Dest, DestError, EndReason, Family, Host, Message, Proto};
use socket2::Socket;

use crate::callbacks::{end_fn, msg_fn, up_fn, CallbackId, Callbacks};
use crate::error::OpenError;
use crate::group::{Group, Sock};
use crate::pipe::Pipe;
use crate::runtime::{Readiness, Runtime, TcpIo};
use crate::socket::{bind_socket, listen, new_socket, start_connect};
use crate::tasks::start;

/// Anything that names a destination. `()` means none: the pipe is a server.
pub trait IntoDest {
    /// The destination, `None` for a server.
    fn into_dest(self) -> Result<Option<Dest>, DestError>;
}

impl IntoDest for () {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        Ok(None)
    }
}

impl IntoDest for Dest {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        Ok(Some(self))
    }
}

impl IntoDest for &str {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        Dest::parse(self).map(Some)
    }
}

impl IntoDest for String {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        self.as_str().into_dest()
    }
}

impl IntoDest for SocketAddr {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        Dest::try_from(self).map(Some)
    }
}

impl IntoDest for (&str, u16) {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        Dest::new(self.0, self.1).map(Some)
    }
}

impl IntoDest for (IpAddr, u16) {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        SocketAddr::from(self).into_dest()
    }
}

impl<T: IntoDest> IntoDest for Option<T> {
    fn into_dest(self) -> Result<Option<Dest>, DestError> {
        match self {
            Some(d) => d.into_dest(),
            None => Ok(None),
        }
    }
}

/// A socket made elsewhere, to wrap in a pipe (P2PD's `sock=`).
#[derive(Debug)]
#[non_exhaustive]
pub enum ExistingSocket {
    /// A bound UDP socket.
    Udp(std::net::UdpSocket),
    /// A connected TCP stream.
    Tcp(std::net::TcpStream),
    /// A listening TCP socket.
    Listener(std::net::TcpListener),
}

impl From<std::net::UdpSocket> for ExistingSocket {
    fn from(s: std::net::UdpSocket) -> Self {
        Self::Udp(s)
    }
}

impl From<std::net::TcpStream> for ExistingSocket {
    fn from(s: std::net::TcpStream) -> Self {
        Self::Tcp(s)
    }
}

impl From<std::net::TcpListener> for ExistingSocket {
    fn from(s: std::net::TcpListener) -> Self {
        Self::Listener(s)
    }
}

/// Everything `pipe_open` can be told. Callbacks given here are registered before the socket
/// starts reading, so no message can arrive before its handler.
pub struct PipeBuilder<R: Runtime> {
    rt: R,
    proto: Proto,
    dest: Result<Option<Dest>, DestError>,
    bind: Option<SocketAddr>,
    device: Option<String>,
    /// Shared with the pipes it opens; [`Conf::shared_default`] until [`PipeBuilder::conf`].
    conf: Arc<Conf>,
    existing: Option<ExistingSocket>,
    cbs: Callbacks<R>,
    next_cb: u64,
}

impl<R: Runtime> std::fmt::Debug for PipeBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeBuilder")
            .field("proto", &self.proto)
            .field("dest", &self.dest)
            .field("bind", &self.bind)
            .field("conf", &self.conf)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> PipeBuilder<R> {
    /// A builder for a pipe on runtime `rt`. With no destination it opens a server.
    pub fn new(rt: R, proto: Proto) -> Self {
        Self {
            rt,
            proto,
            dest: Ok(None),
            bind: None,
            device: None,
            conf: Conf::shared_default(),
            existing: None,
            cbs: Callbacks::default(),
            next_cb: 1,
        }
    }

    /// The destination of a client pipe.
    ///
    /// A name is resolved to all its addresses (only those of the bind address's or route's
    /// family when one is given), ordered as RFC 8305 §4 asks: IPv6 first, families
    /// interleaved. A TCP pipe races them (Happy Eyeballs): the next attempt starts
    /// `Conf::attempt_delay` (250 ms) after the last unless that one failed first, the first
    /// to connect wins, the others are closed, `con_timeout` bounds them all, and
    /// [`OpenError::AllAttemptsFailed`] lists every attempt when none connects. A UDP pipe,
    /// which has no handshake to race, takes the first address in that order. `0.0.0.0:p`
    /// and `[::]:p` mean the loopback address of their family (where the OS sends them), and
    /// the pipe reports that address as its peer.
    pub fn dest(mut self, dest: impl IntoDest) -> Self {
        self.dest = dest.into_dest();
        self
    }

    /// The local address to bind (port 0 = any port). Without it, a client binds the
    /// any-address of its destination's family and a server binds 127.0.0.1 on a free port:
    /// pass `0.0.0.0:port` or `[::]:port` to listen on every interface.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Open the pipe on `route`: bind its NIC address (with its IPv6 scope id) on `port`
    /// (0 = any free port), and its device too if the route asks for it. The route itself is
    /// never changed, so one route serves many pipes.
    pub fn route(mut self, route: &crate::route::Route, port: u16) -> Self {
        self.bind = Some(route.bind_addr(port));
        self.device = route
            .binds_device()
            .then(|| route.interface().unwrap_or_default().to_owned());
        self
    }

    /// The pipe's conf.
    pub fn conf(mut self, conf: Conf) -> Self {
        self.conf = Arc::new(conf);
        self
    }

    /// Wrap an existing socket instead of creating one. A TCP stream is taken as connected.
    pub fn socket(mut self, socket: impl Into<ExistingSocket>) -> Self {
        self.existing = Some(socket.into());
        self
    }

    fn cb_id(&mut self) -> CallbackId {
        self.next_cb += 1;
        CallbackId(self.next_cb - 1)
    }

    /// A message callback (P2PD's `msg_cb`), registered before the first byte can arrive.
    pub fn on_message<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Message, Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.cb_id();
        self.cbs.msg.make_mut().push((id, msg_fn(f)));
        self
    }

    /// An up callback (P2PD's `up_cb`): once, when the pipe can send.
    pub fn on_up<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.cb_id();
        self.cbs.up.make_mut().push((id, up_fn(f)));
        self
    }

    /// TCP servers: a hook run for each accepted connection before the connection reads its
    /// first byte (its reading waits for the hook). Use it to link the connection to an
    /// upstream pipe so that no byte arrives before the link exists.
    pub fn on_accept<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.cb_id();
        self.cbs.accept.make_mut().push((id, up_fn(f)));
        self
    }

    /// An end callback: once, when the pipe ends.
    pub fn on_end<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(EndReason, Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.cb_id();
        self.cbs.end.make_mut().push((id, end_fn(f)));
        self
    }

    /// Open the pipe.
    pub async fn open(self) -> Result<Pipe<R>, OpenError> {
        if self.conf.sock_only {
            return Err(OpenError::SockOnly);
        }
        let mut this = self;
        if let (Proto::Tcp, Ok(Some(d)), true) = (
            this.proto,
            &this.dest,
            this.conf.use_ssl || this.conf.tls.is_some(),
        ) {
            let host = d.host().clone();
            crate::tls::complete_client(Arc::make_mut(&mut this.conf), Some(&host));
        }
        let rt = this.rt.clone();
        let (conf, cbs) = (this.conf.clone(), this.cbs.clone());
        let handshake = match &conf.tls {
            Some(pipe_core::Tls::Client { .. }) => Some(conf.ssl_handshake),
            _ => None,
        };
        let opened = this.prepare(false).await?;
        let has_msg = !cbs.msg.is_empty();
        let group = Group::new(rt.clone(), conf.seed ^ entropy());
        // The lock lives in this block only: the future stays `Send` across the await below.
        let (id, entry) = {
            let mut g = group.lock();
            let now = rt.now();
            let (id, sock) = match opened {
                Opened::Udp(s, dest) => {
                    let local = s.local_addr()?;
                    let id = g.engine.open_udp(now, local, dest, conf, has_msg)?;
                    (id, Sock::Udp(Arc::new(rt.udp(s)?)))
                }
                Opened::Tcp(s) => {
                    let (local, peer) = (s.local_addr()?, s.peer);
                    let id = g.engine.open_tcp(now, local, peer, conf, has_msg)?;
                    (id, Sock::Tcp(Arc::new(s.stream)))
                }
                Opened::Listener(s) => {
                    let local = s.local_addr()?;
                    let id = g.engine.open_listener(now, local, conf, has_msg)?;
                    if !cbs.serve_connections() {
                        // Only `accept()` can serve its connections: one whose peer's FIN
                        // comes before the first `accept()` call may still be answered.
                        g.engine.serve_by_accept(id);
                    }
                    (id, Sock::Listener(Arc::new(rt.listener(s)?)))
                }
            };
            g.first = Some(id);
            g.cbs = cbs;
            g.next_cb = 1 << 32;
            let entry = start(&group, &mut g, id, sock, false);
            group.pump(&mut g);
            (id, entry)
        };
        let pipe = Pipe::owned_first(group, id, entry);
        if let Some(limit) = handshake {
            // A TLS client is open once its handshake is done (the engine bounds it by
            // `ssl_handshake`; the extra second only guards against a lost wake-up).
            pipe.wait_handshake(limit + Duration::from_secs(1)).await?;
        }
        Ok(pipe)
    }

    /// Return the configured, bound (and for TCP clients connected, for servers listening)
    /// socket instead of a pipe (P2PD's `sock_only`). The socket is in non-blocking mode.
    pub async fn open_socket(mut self) -> Result<Socket, OpenError> {
        if self.conf.sock_only {
            Arc::make_mut(&mut self.conf).sock_only = false;
        }
        Ok(match self.prepare(true).await? {
            Opened::Udp(s, _) => Socket::from(s),
            Opened::Tcp(s) => {
                // The stream was registered with the runtime only to await the connect.
                let std = s.take_std()?;
                Socket::from(std)
            }
            Opened::Listener(s) => Socket::from(s),
        })
    }

    /// Validate, resolve, create, bind, connect or listen.
    /// `want_fd`: keep a descriptor of a TCP client's socket to hand back (`open_socket`).
    async fn prepare(self, want_fd: bool) -> Result<Opened<R>, OpenError> {
        Conf::validate_shared(&self.conf, self.proto)?;
        let dest = self.dest?;
        if let Some(existing) = self.existing {
            let dest_addr = match &dest {
                Some(d) => Some(resolve(&self.rt, d, None, self.conf.dns_timeout).await?[0]),
                None => None,
            };
            return wrap_existing(&self.rt, self.proto, existing, dest_addr);
        }
        let dest_addr = match &dest {
            None => None,
            Some(d) => match d.socket_addr() {
                // A literal address: no lookup, and no list to hold it.
                Some(addr) => Some(unspecified_to_loopback(addr)),
                None => {
                    // Every address of the name, in Happy Eyeballs order (IPv6 first,
                    // interleaved), of the bind address's family when one is given (a route
                    // pins the family).
                    let family = self.bind.map(|b| Family::of_addr(&b));
                    let addrs = resolve(&self.rt, d, family, self.conf.dns_timeout).await?;
                    // A TCP name with several addresses: race them (RFC 8305). UDP has no
                    // handshake to race: it takes the first address in that order.
                    if let (Proto::Tcp, Host::Name(host), true) =
                        (self.proto, d.host(), addrs.len() > 1)
                    {
                        let local = crate::happy_eyeballs::Local {
                            bind: self.bind,
                            device: self.device.as_deref(),
                        };
                        return crate::happy_eyeballs::connect_any(
                            &self.rt, host, addrs, local, &self.conf, want_fd,
                        )
                        .await
                        .map(Opened::Tcp);
                    }
                    addrs.first().copied()
                }
            },
        };
        let bind = match (self.bind, dest_addr) {
            (Some(b), _) => b,
            (None, Some(d)) => SocketAddr::new(unspecified(Family::of_addr(&d)), 0),
            (None, None) => SocketAddr::new(loopback(Family::V4), 0),
        };
        if let Some(d) = dest_addr {
            if Family::of_addr(&d) != Family::of_addr(&bind) {
                return Err(OpenError::FamilyMismatch { bind, dest: d });
            }
        }
        let socket = match &self.device {
            Some(device) => {
                crate::socket::bind_socket_on_device(self.proto, bind, device, &self.conf)?
            }
            // A TCP client with no address to bind lets connect() pick one: no bind call.
            None if self.bind.is_none() && self.proto == Proto::Tcp && dest_addr.is_some() => {
                new_socket(self.proto, bind, &self.conf)?
            }
            None => bind_socket(self.proto, bind, &self.conf)
                .map_err(|source| OpenError::Bind { addr: bind, source })?,
        };
        match (self.proto, dest_addr) {
            (Proto::Udp, dest) => Ok(Opened::Udp(socket.into(), dest)),
            (Proto::Tcp, None) => {
                listen(&socket).map_err(|source| OpenError::Bind { addr: bind, source })?;
                Ok(Opened::Listener(socket.into()))
            }
            (Proto::Tcp, Some(addr)) => connect(&self.rt, socket, addr, &self.conf, want_fd)
                .await
                .map(Opened::Tcp),
        }
    }
}

// ---- listening everywhere (listen_all.rs) ------------------------------------------------

impl<R: Runtime> PipeBuilder<R> {
    /// Open a server pipe on every address of every up interface, both families (or the
    /// subset `listen` names; a port alone converts), each with this builder's conf and
    /// callbacks. Addresses that fail are listed in [`ListenAll::failed`](crate::ListenAll::failed);
    /// an error only when nothing listens (the first address's error, or
    /// [`OpenError::Bind`] with `AddrNotAvailable` when no up interface has an address asked
    /// for), or when the builder has a destination or a socket.
    pub async fn listen_all(
        self,
        listen: impl Into<crate::listen_all::Listen>,
    ) -> Result<crate::listen_all::ListenAll<R>, OpenError> {
        crate::listen_all::listen_all(self, listen.into()).await
    }

    /// What must hold for every address of a `listen_all`: a server, no wrapped socket, not
    /// `sock_only`, a valid conf.
    pub(crate) fn check_server(&self) -> Result<(), OpenError> {
        if self.conf.sock_only {
            return Err(OpenError::SockOnly);
        }
        Conf::validate_shared(&self.conf, self.proto)?;
        if self.existing.is_some() {
            return Err(OpenError::BadSocket(
                "listen_all opens its own sockets: give no socket",
            ));
        }
        match &self.dest {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(OpenError::BadSocket(
                "listen_all opens servers: give no destination",
            )),
            Err(e) => Err(OpenError::Dest(e.clone())),
        }
    }

    /// A builder for one more server on `route`:`port` with this one's runtime, protocol,
    /// conf and callbacks (the same callback objects, shared).
    pub(crate) fn server_on(&self, route: &crate::route::Route, port: u16) -> Self {
        let mut b = Self::new(self.rt.clone(), self.proto).route(route, port);
        b.conf = Arc::clone(&self.conf);
        b.cbs = self.cbs.clone();
        b.next_cb = self.next_cb;
        b
    }

    /// The runtime pipes open on.
    pub(crate) fn runtime(&self) -> &R {
        &self.rt
    }
}

enum Opened<R: Runtime> {
    Udp(std::net::UdpSocket, Option<SocketAddr>),
    Tcp(Connected<R>),
    Listener(std::net::TcpListener),
}

/// A connected stream registered with the runtime, plus a duplicate descriptor so that
/// `open_socket` can hand the plain socket back.
pub(crate) struct Connected<R: Runtime> {
    pub(crate) stream: R::Tcp,
    pub(crate) peer: SocketAddr,
    pub(crate) dup: Option<Socket>,
}

impl<R: Runtime> Connected<R> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    fn take_std(self) -> io::Result<std::net::TcpStream> {
        let dup = self
            .dup
            .ok_or_else(|| io::Error::other("no descriptor to hand back"))?;
        drop(self.stream);
        Ok(dup.into())
    }
}

impl<R: Runtime> std::ops::Deref for Connected<R> {
    type Target = R::Tcp;
    fn deref(&self) -> &R::Tcp {
        &self.stream
    }
}

async fn connect<R: Runtime>(
    rt: &R,
    socket: Socket,
    addr: SocketAddr,
    conf: &Conf,
    want_fd: bool,
) -> Result<Connected<R>, OpenError> {
    let keep = |s: Option<Socket>| {
        if conf.do_close {
            None
        } else {
            s.map(crate::error::KeptSocket)
        }
    };
    if let Err(source) = start_connect(&socket, addr) {
        return Err(connect_error(addr, source, keep(Some(socket))));
    }
    // A second descriptor only when the socket may be handed back.
    let dup = if want_fd || !conf.do_close {
        Some(socket.try_clone()?)
    } else {
        None
    };
    let stream = rt.tcp(socket.into())?;
    // A peer that answered within the `connect` call (loopback always does) leaves the
    // socket connected already: a peer address says so, and saves a trip through the
    // reactor and a timer. Otherwise (`ENOTCONN`) wait for writability as usual.
    if let Ok(peer) = stream.peer_addr() {
        return Ok(Connected {
            stream,
            peer,
            dup: want_fd.then_some(dup).flatten(),
        });
    }
    let deadline = rt.now() + conf.con_timeout;
    let ready = future::or(
        async {
            let _ = stream.writable().await;
            true
        },
        async {
            rt.sleep_until(deadline).await;
            false
        },
    )
    .await;
    if !ready {
        drop(stream);
        return Err(OpenError::ConnectTimeout {
            addr,
            after: conf.con_timeout,
            socket: keep(dup),
        });
    }
    // No pending error and a peer address: connected. The peer address is the one really
    // connected to (`0.0.0.0:p`, P2PD's way to reach a local server, reports the loopback
    // address the OS used).
    let connected = match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => stream.peer_addr(),
    };
    let peer = match connected {
        Ok(peer) => peer,
        Err(source) => {
            drop(stream);
            return Err(connect_error(addr, source, keep(dup)));
        }
    };
    Ok(Connected {
        stream,
        peer,
        dup: want_fd.then_some(dup).flatten(),
    })
}

fn connect_error(
    addr: SocketAddr,
    source: io::Error,
    socket: Option<crate::error::KeptSocket>,
) -> OpenError {
    if source.kind() == io::ErrorKind::ConnectionRefused {
        OpenError::ConnectRefused { addr, socket }
    } else {
        OpenError::Connect {
            addr,
            source,
            socket,
        }
    }
}

fn wrap_existing<R: Runtime>(
    rt: &R,
    proto: Proto,
    existing: ExistingSocket,
    dest: Option<SocketAddr>,
) -> Result<Opened<R>, OpenError> {
    let has_dest = dest.is_some();
    match (proto, existing) {
        (Proto::Udp, ExistingSocket::Udp(s)) => {
            s.set_nonblocking(true)?;
            // The destination given to the builder, else the peer of a connected socket.
            let dest = dest.or_else(|| s.peer_addr().ok());
            if let (Some(d), Ok(local)) = (dest, s.local_addr()) {
                if Family::of_addr(&d) != Family::of_addr(&local) {
                    return Err(OpenError::FamilyMismatch {
                        bind: local,
                        dest: d,
                    });
                }
            }
            Ok(Opened::Udp(s, dest))
        }
        (Proto::Tcp, ExistingSocket::Tcp(s)) => {
            s.set_nonblocking(true)?;
            let peer = s
                .peer_addr()
                .map_err(|_| OpenError::BadSocket("the TCP stream is not connected"))?;
            let dup = Socket::from(s.try_clone()?);
            Ok(Opened::Tcp(Connected {
                stream: rt.tcp(s)?,
                peer,
                dup: Some(dup),
            }))
        }
        (Proto::Tcp, ExistingSocket::Listener(s)) if !has_dest => {
            s.set_nonblocking(true)?;
            Ok(Opened::Listener(s))
        }
        (Proto::Tcp, ExistingSocket::Listener(_)) => {
            Err(OpenError::BadSocket("a listener cannot have a destination"))
        }
        _ => Err(OpenError::BadSocket(
            "the socket's protocol differs from the pipe's",
        )),
    }
}

/// Resolve a destination, bounded by `dns_timeout`: its addresses in Happy Eyeballs order
/// (RFC 8305 §4: IPv6 first, families interleaved), only `family`'s when given. Never empty.
/// An unspecified address (`0.0.0.0`, `::`, P2PD's way to reach a local server) becomes the
/// loopback address of its family, which is where the OS sends it: the pipe then reports
/// the address it really talks to.
async fn resolve<R: Runtime>(
    rt: &R,
    dest: &Dest,
    family: Option<Family>,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, OpenError> {
    if let Some(addr) = dest.socket_addr() {
        return Ok(vec![unspecified_to_loopback(addr)]);
    }
    let Host::Name(name) = dest.host() else {
        unreachable!("an IP destination has a socket address");
    };
    let deadline = rt.now() + timeout;
    let lookup = rt.resolve(name.clone(), dest.port());
    let res = future::or(async { Some(lookup.await) }, async {
        rt.sleep_until(deadline).await;
        None
    })
    .await;
    let addrs = match res {
        None => {
            return Err(OpenError::ResolveTimeout {
                host: name.clone(),
                after: timeout,
            })
        }
        Some(Err(source)) => {
            return Err(OpenError::Resolve {
                host: name.clone(),
                source,
            })
        }
        Some(Ok(a)) => a,
    };
    let any = !addrs.is_empty();
    let ordered =
        pipe_core::connect_plan::interleave(addrs.into_iter().map(unspecified_to_loopback), family);
    match (ordered.is_empty(), family) {
        (false, _) => Ok(ordered),
        (true, Some(family)) if any => Err(OpenError::NoAddress {
            host: name.clone(),
            family,
        }),
        (true, _) => Err(OpenError::Resolve {
            host: name.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        }),
    }
}

/// `0.0.0.0:p` → `127.0.0.1:p`, `[::]:p` → `[::1]:p` (what Linux and the BSDs connect and
/// send to); any other address unchanged.
fn unspecified_to_loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let mut a = addr;
        a.set_ip(loopback(Family::of_addr(&addr)));
        a
    } else {
        addr
    }
}

/// Fresh entropy for sequence numbers without a dependency: the std hasher's random keys.
pub(crate) fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5049_5045);
    h.finish()
}
