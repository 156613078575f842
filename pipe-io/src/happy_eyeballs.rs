//! Happy Eyeballs (RFC 8305) connection attempts: pipe-core's [`ConnectPlan`] decides which
//! address to try and when; this module makes the attempts, concurrently, on the runtime.
//!
//! Used by the builder when a TCP destination is a name that resolved to more than one
//! address (of the route's family when a route or bind address pins one). The first attempt
//! to connect wins; every other attempt is closed at once (its socket dropped, an attempt
//! still connecting is abandoned). `con_timeout` bounds all of it. When every attempt fails,
//! [`OpenError::AllAttemptsFailed`] lists each address with its error.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use pipe_core::addr::unspecified;
use pipe_core::{Conf, ConnectPlan, Family, PlanOutcome, Proto};
use socket2::Socket;

use crate::builder::Connected;
use crate::error::OpenError;
use crate::runtime::{BoxFuture, Readiness, Runtime, TcpIo};
use crate::socket::{bind_socket, bind_socket_on_device, new_socket, start_connect};

/// One attempt in flight: its stream, a duplicate descriptor for `open_socket`, and the
/// future that completes when its connect finished one way or the other.
struct Attempt<R: Runtime> {
    addr: SocketAddr,
    stream: Arc<R::Tcp>,
    dup: Option<Socket>,
    ready: BoxFuture<()>,
}

/// Where each attempt's socket binds: the builder's bind address and device, if any.
pub(crate) struct Local<'a> {
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) device: Option<&'a str>,
}

/// Connect to the first of `addrs` (resolved for `host`) that answers, as RFC 8305 asks.
pub(crate) async fn connect_any<R: Runtime>(
    rt: &R,
    host: &str,
    addrs: Vec<SocketAddr>,
    local: Local<'_>,
    conf: &Conf,
    want_fd: bool,
) -> Result<Connected<R>, OpenError> {
    let family = local.bind.map(|b| Family::of_addr(&b));
    let mut plan: ConnectPlan<io::Error> = ConnectPlan::new(
        rt.now(),
        addrs,
        family,
        conf.attempt_delay,
        conf.con_timeout,
    )
    .ok_or_else(|| OpenError::Resolve {
        host: host.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    })?;
    let mut attempts: Vec<Attempt<R>> = Vec::new();
    loop {
        let now = rt.now();
        plan.handle_timeout(now);
        while let Some(addr) = plan.poll_start(now) {
            match start::<R>(rt, addr, &local, conf, want_fd) {
                Ok(a) => attempts.push(a),
                Err(e) => plan.handle_failed(addr, e),
            }
        }
        match plan.outcome() {
            Some(PlanOutcome::Connected(addr)) => {
                let i = attempts
                    .iter()
                    .position(|a| a.addr == addr)
                    .expect("the winner is an attempt in flight");
                let won = attempts.swap_remove(i);
                // The losers are closed here: their sockets are dropped.
                drop(attempts);
                let Attempt {
                    stream, dup, ready, ..
                } = won;
                drop(ready);
                let stream = Arc::try_unwrap(stream)
                    .map_err(|_| io::Error::other("the connect future still holds the stream"))?;
                let peer = stream.peer_addr().unwrap_or(addr);
                return Ok(Connected {
                    stream,
                    peer,
                    dup: want_fd.then_some(dup).flatten(),
                });
            }
            Some(PlanOutcome::Failed(failed)) => {
                return Err(OpenError::AllAttemptsFailed {
                    host: host.to_owned(),
                    failed,
                })
            }
            None => {}
        }
        // Sleep until an attempt finished connecting or the plan's next moment.
        let wake = plan
            .poll_timeout()
            .expect("a plan not done has a next moment");
        let mut sleep = rt.sleep_until(wake);
        let done = std::future::poll_fn(|cx| {
            for (i, a) in attempts.iter_mut().enumerate() {
                if a.ready.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(i));
                }
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Some(i) = done else { continue };
        let a = &attempts[i];
        let failure = match a.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => a.stream.peer_addr().err(),
        };
        match failure {
            None => {
                plan.handle_connected(a.addr);
            }
            Some(e) => {
                let a = attempts.swap_remove(i);
                plan.handle_failed(a.addr, e);
            }
        }
    }
}

/// Create, bind (when the builder was given an address or device) and start connecting one
/// attempt's socket.
fn start<R: Runtime>(
    rt: &R,
    addr: SocketAddr,
    local: &Local<'_>,
    conf: &Conf,
    want_fd: bool,
) -> io::Result<Attempt<R>> {
    let any = SocketAddr::new(unspecified(Family::of_addr(&addr)), 0);
    let socket = match (local.bind, local.device) {
        (bind, Some(device)) => {
            bind_socket_on_device(Proto::Tcp, bind.unwrap_or(any), device, conf)
                .map_err(|e| io::Error::other(e.to_string()))?
        }
        (Some(bind), None) => bind_socket(Proto::Tcp, bind, conf)?,
        (None, None) => new_socket(Proto::Tcp, any, conf)?,
    };
    start_connect(&socket, addr)?;
    let dup = if want_fd {
        Some(socket.try_clone()?)
    } else {
        None
    };
    let stream = Arc::new(rt.tcp(socket.into())?);
    let s = stream.clone();
    let ready: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        let _ = s.writable().await;
    });
    Ok(Attempt {
        addr,
        stream,
        dup,
        ready,
    })
}
