//! Socket construction with socket2: every option of `Conf` that lives on the socket.

use std::io;
use std::net::SocketAddr;

use pipe_core::{Conf, Proto};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Create, configure and bind a socket. TCP sockets are not yet listening or connecting.
///
/// Options set: SO_REUSEADDR and SO_REUSEPORT (`reuse_addr`), SO_BROADCAST (`broadcast`),
/// SO_LINGER (`linger`), IPV6_V6ONLY always set explicitly to true on IPv6 sockets (a pipe
/// has one family; use an IPv4 pipe for IPv4 peers), the `sock_proto` protocol, non-blocking.
pub fn bind_socket(proto: Proto, bind: SocketAddr, conf: &Conf) -> io::Result<Socket> {
    let socket = new_socket(proto, bind, conf)?;
    socket.bind(&SockAddr::from(bind))?;
    Ok(socket)
}

/// Create and configure an unbound, non-blocking socket of `bind`'s family.
pub fn new_socket(proto: Proto, bind: SocketAddr, conf: &Conf) -> io::Result<Socket> {
    let domain = Domain::for_address(bind);
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    // Non-blocking from the start where the OS can, saving two fcntl calls.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ty = ty.nonblocking();
    let protocol = (conf.sock_proto != 0).then(|| Protocol::from(conf.sock_proto));
    let socket = Socket::new(domain, ty, protocol)?;
    if bind.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if conf.reuse_addr {
        socket.set_reuse_address(true)?;
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        socket.set_reuse_port(true)?;
    }
    if conf.broadcast {
        socket.set_broadcast(true)?;
    }
    if let Some(linger) = conf.linger {
        socket.set_linger(Some(linger))?;
    }
    if proto == Proto::Tcp {
        socket.set_tcp_nodelay(true)?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Like [`bind_socket`], also binding the socket to interface `device` (SO_BINDTODEVICE)
/// before the address is bound.
pub fn bind_socket_on_device(
    proto: Proto,
    bind: SocketAddr,
    device: &str,
    conf: &Conf,
) -> Result<Socket, crate::OpenError> {
    let bind_err = |source| crate::OpenError::Bind { addr: bind, source };
    let socket = new_socket(proto, bind, conf).map_err(bind_err)?;
    set_device(&socket, device).map_err(|source| crate::OpenError::BindDevice {
        device: device.to_owned(),
        source,
    })?;
    socket.bind(&SockAddr::from(bind)).map_err(bind_err)?;
    Ok(socket)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_device(socket: &Socket, device: &str) -> io::Result<()> {
    if device.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the route has no interface name",
        ));
    }
    socket.bind_device(Some(device.as_bytes()))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_device(_socket: &Socket, _device: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_BINDTODEVICE is Linux-only",
    ))
}

/// Start a non-blocking connect; `Ok` means connected or in progress.
pub fn start_connect(socket: &Socket, to: SocketAddr) -> io::Result<()> {
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc_einprogress())
                || e.kind() == io::ErrorKind::WouldBlock =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Listen with a backlog large enough for connection bursts.
pub fn listen(socket: &Socket) -> io::Result<()> {
    socket.listen(1024)
}

#[cfg(unix)]
fn libc_einprogress() -> i32 {
    // EINPROGRESS: 115 on Linux, 36 on the BSDs and macOS.
    if cfg!(any(target_os = "linux", target_os = "android")) {
        115
    } else {
        36
    }
}

#[cfg(not(unix))]
fn libc_einprogress() -> i32 {
    10035 // WSAEWOULDBLOCK
}

/// True for the OS error "message too long" (EMSGSIZE).
pub fn is_msgsize(e: &io::Error) -> bool {
    let code = if cfg!(any(target_os = "linux", target_os = "android")) {
        90
    } else {
        40
    };
    e.raw_os_error() == Some(code)
}

/// True for errors that mean the process is out of file descriptors.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23 on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// True for errors a UDP socket reports that do not end it: an ICMP error from an earlier
/// datagram (refused, reset) or an interrupted call. Read again.
pub fn is_transient_udp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
