//! The I/O tasks: one per socket. A task is a loop, not logic: read what is ready and feed
//! it to the engine, write what the engine queued, run the engine's timer (the group's root
//! task only), and sleep until one of those can make progress. Protocol decisions all live in
//! pipe-core.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use pipe_core::{PipeId, Proto};

use crate::buffers::{read_pooled, with_scratch, Input};
use crate::callbacks::run_accept_hooks;
use crate::pipe::run_forwards;
use crate::pipe::Pipe;
use crate::runtime::{ListenerIo, Readiness, Runtime, TcpIo, UdpIo};
use crate::shared::{flush, with_inline_jobs, Entry, Forward, Shared, Sock, SockEntry};
use crate::socket::is_fd_exhaustion;

/// Datagrams or reads handled before the task yields to others.
const READ_BUDGET: usize = 64;
/// How long a closing pipe may take to write what was queued before it closed.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// What woke a waiting task.
enum Wake {
    Readable,
    Writable,
    Timer,
    Signal,
}

/// Register a new pipe's socket and entry, and start its task.
pub(crate) fn start<R: Runtime>(
    shared: &Arc<Shared<R>>,
    core: &mut crate::shared::Core<R>,
    id: PipeId,
    sock: Sock<R>,
    parent: Option<PipeId>,
) -> Arc<Entry> {
    let proto = if matches!(sock, Sock::Udp(_)) {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let entry = Entry::new(proto);
    core.entries.insert(id, entry.clone());
    if let Some(p) = parent {
        core.parent.insert(id, p);
    }
    if core.root.is_none() {
        core.root = Some(id);
    }
    core.socks.insert(
        id,
        SockEntry {
            sock: sock.clone(),
            unsent: None,
        },
    );
    let reader_limit = core.engine.conf(id).map_or(1 << 16, |c| c.reader_limit);
    let (s, e) = (shared.clone(), entry.clone());
    let hooks = parent
        .and_then(|p| core.cbs.get(&p))
        .map(|c| c.accept.clone())
        .filter(|h| !h.is_empty());
    let task: crate::runtime::BoxFuture<()> = match sock {
        Sock::Udp(u) => Box::pin(run_udp(s, id, u, e)),
        Sock::Tcp(t) => match hooks {
            Some(hooks) => Box::pin(async move {
                run_accept_hooks(hooks, Pipe::handle(s.clone(), id, e.clone())).await;
                run_tcp(s, id, t, e, reader_limit).await;
            }),
            None => Box::pin(run_tcp(s, id, t, e, reader_limit)),
        },
        Sock::Listener(l) => Box::pin(run_listener(s, id, l, e)),
    };
    shared.rt.spawn(task);
    entry
}

/// What one read attempt did.
enum Read<R: Runtime> {
    /// Input went to the engine; these forwards must be run.
    Fed(Vec<Forward<R>>),
    /// Nothing to read now.
    Empty,
    /// A harmless error; read again.
    Retry,
    /// The pipe ended (end of stream, reset, socket failure).
    Ended,
}

/// The read loop shared by UDP and TCP pipes: read up to a budget, then yield; when nothing
/// is readable, sleep until the socket, the engine's timer or the pipe's signal wakes us.
async fn read_loop<R: Runtime, S: Readiness>(
    shared: &Arc<Shared<R>>,
    id: PipeId,
    entry: &Entry,
    sock: &S,
    mut read_one: impl FnMut() -> Read<R>,
) {
    loop {
        let mut n = 0;
        while n < READ_BUDGET {
            if entry.is_ended() {
                return;
            }
            wait_job_space(entry).await;
            match with_inline_jobs(&mut read_one) {
                Read::Fed(forwards) => {
                    n += 1;
                    if !forwards.is_empty() {
                        // On the heap: only relays forward, and idle tasks stay small.
                        Box::pin(run_forwards(shared, forwards)).await;
                    }
                }
                Read::Empty => break,
                Read::Retry => {}
                Read::Ended => return,
            }
        }
        if n == READ_BUDGET {
            future::yield_now().await;
            continue;
        }
        match wait(shared, id, entry, sock).await {
            Wake::Readable | Wake::Signal => {}
            Wake::Writable => shared.flush_pipe(id),
            Wake::Timer => timer(shared),
        }
    }
}

async fn run_udp<R: Runtime>(
    shared: Arc<Shared<R>>,
    id: PipeId,
    sock: Arc<R::Udp>,
    entry: Arc<Entry>,
) {
    read_loop(&shared, id, &entry, &*sock, || {
        // One byte more than the largest UDP payload, so nothing is truncated silently.
        let read = with_scratch(65_536, |buf| {
            let (len, from) = sock.try_recv_from(buf)?;
            let mut core = shared.lock();
            core.engine
                .handle_datagram(shared.rt.now(), id, from, &buf[..len]);
            Ok(shared.pump(&mut core))
        });
        match read {
            Ok(forwards) => Read::Fed(forwards),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Read::Empty,
            // ICMP errors reported on the socket: the pipe lives on.
            Err(e) if crate::socket::is_transient_udp_error(&e) => Read::Retry,
            Err(e) => {
                fail(&shared, id, e);
                Read::Ended
            }
        }
    })
    .await;
    drop(sock);
    finish(&shared, id).await;
}

async fn run_tcp<R: Runtime>(
    shared: Arc<Shared<R>>,
    id: PipeId,
    sock: Arc<R::Tcp>,
    entry: Arc<Entry>,
    reader_limit: usize,
) {
    read_loop(&shared, id, &entry, &*sock, || {
        let read = read_pooled(
            reader_limit,
            |buf| sock.try_read(buf),
            |input| {
                let mut core = shared.lock();
                let now = shared.rt.now();
                let len = match input {
                    Input::Slice([]) => {
                        core.engine.handle_peer_closed(now, id, false);
                        0
                    }
                    Input::Slice(bytes) => {
                        core.engine.handle_stream(now, id, bytes);
                        bytes.len()
                    }
                    Input::Owned(bytes) => {
                        let len = bytes.len();
                        core.engine.handle_stream_bytes(now, id, bytes);
                        len
                    }
                };
                (len, shared.pump(&mut core))
            },
        );
        match read {
            Ok((0, _)) => Read::Ended,
            Ok((_, forwards)) => Read::Fed(forwards),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Read::Empty,
            Err(e) if e.kind() == ErrorKind::Interrupted => Read::Retry,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                let mut core = shared.lock();
                core.engine.handle_peer_closed(shared.rt.now(), id, true);
                shared.pump(&mut core);
                Read::Ended
            }
            Err(e) => {
                fail(&shared, id, e);
                Read::Ended
            }
        }
    })
    .await;
    flush_before_close(&shared, id, &*sock).await;
    // Closing the last descriptor sends the FIN (or, with SO_LINGER 0, the RST): no
    // shutdown call, which would also turn an abortive close into a graceful one.
    drop(sock);
    finish(&shared, id).await;
}

async fn run_listener<R: Runtime>(
    shared: Arc<Shared<R>>,
    id: PipeId,
    sock: Arc<R::Listener>,
    entry: Arc<Entry>,
) {
    let mut backoff = Duration::ZERO;
    while !entry.is_ended() {
        let signal = entry.wake_io.listen();
        if entry.is_ended() {
            break;
        }
        let accepted = future::or(async { Some(sock.accept().await) }, async {
            signal.await;
            None
        })
        .await;
        match accepted {
            None => {}
            Some(Ok((stream, peer))) => {
                backoff = Duration::ZERO;
                accept_one(&shared, id, stream, peer);
            }
            Some(Err(e)) if is_fd_exhaustion(&e) => {
                // Out of descriptors: back off instead of spinning on EMFILE.
                backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                log::warn!("{id}: accept: {e}; pausing {backoff:?}");
                let deadline = shared.rt.now() + backoff;
                let signal = entry.wake_io.listen();
                future::or(shared.rt.sleep_until(deadline), signal).await;
            }
            Some(Err(e)) => log::debug!("{id}: accept: {e}"),
        }
    }
    drop(sock);
    finish(&shared, id).await;
}

fn accept_one<R: Runtime>(
    shared: &Arc<Shared<R>>,
    listener: PipeId,
    stream: R::Tcp,
    peer: SocketAddr,
) {
    let mut core = shared.lock();
    let Some(listen_addr) = core.engine.local_addr(listener) else {
        return;
    };
    let local = stream.local_addr().unwrap_or(listen_addr);
    match core
        .engine
        .handle_accepted(shared.rt.now(), listener, local, peer)
    {
        Ok(conn) => {
            start(
                shared,
                &mut core,
                conn,
                Sock::Tcp(Arc::new(stream)),
                Some(listener),
            );
            shared.pump(&mut core);
        }
        Err(e) => log::debug!("{listener}: refusing {peer}: {e}"),
    }
}

/// Sleep until the socket is readable, writable (only if a write is pending), the engine's
/// timer is due (root task only), or the entry's `wake_io` is signalled.
async fn wait<R: Runtime, S: Readiness>(
    shared: &Arc<Shared<R>>,
    id: PipeId,
    entry: &Entry,
    sock: &S,
) -> Wake {
    let signal = entry.wake_io.listen();
    let (deadline, want_write) = {
        let core = shared.lock();
        let deadline = if core.root == Some(id) {
            core.engine.poll_timeout()
        } else {
            None
        };
        (
            deadline,
            core.socks.get(&id).is_some_and(|s| s.unsent.is_some()),
        )
    };
    if entry.is_ended() {
        return Wake::Signal;
    }
    let read = async {
        let _ = sock.readable().await;
        Wake::Readable
    };
    let sig = async {
        signal.await;
        Wake::Signal
    };
    if deadline.is_none() && !want_write {
        // The idle case, kept small: 10,000 idle connections each hold this future.
        return future::or(read, sig).await;
    }
    let timer = async {
        match deadline {
            Some(d) => shared.rt.sleep_until(d).await,
            None => future::pending::<()>().await,
        }
        Wake::Timer
    };
    let write = async {
        if want_write {
            let _ = sock.writable().await;
            Wake::Writable
        } else {
            future::pending().await
        }
    };
    // Busier waits live on the heap, so they do not size every idle task.
    Box::pin(future::or(read, future::or(write, future::or(timer, sig)))).await
}

fn timer<R: Runtime>(shared: &Arc<Shared<R>>) {
    let mut core = shared.lock();
    let now = shared.rt.now();
    core.engine.handle_timeout(now);
    shared.pump(&mut core);
}

fn fail<R: Runtime>(shared: &Arc<Shared<R>>, id: PipeId, e: std::io::Error) {
    log::debug!("{id}: socket error: {e}");
    let mut core = shared.lock();
    core.engine.handle_error(shared.rt.now(), id, e.to_string());
    shared.pump(&mut core);
}

/// Pause reading while the pipe's callback queue is full: a slow callback slows its pipe.
async fn wait_job_space(entry: &Entry) {
    let full = || entry.jobs_full.load(std::sync::atomic::Ordering::Acquire);
    // The common case (room) costs no lock and no listener.
    while full() && !entry.is_ended() {
        let listener = entry.job_space.listen();
        if !full() || entry.is_ended() {
            return;
        }
        listener.await;
    }
}

/// Write what was queued before the pipe ended, for at most [`CLOSE_FLUSH`].
async fn flush_before_close<R: Runtime, S: Readiness>(
    shared: &Arc<Shared<R>>,
    id: PipeId,
    sock: &S,
) {
    let deadline: Instant = shared.rt.now() + CLOSE_FLUSH;
    loop {
        let done = {
            let mut core = shared.lock();
            let now = shared.rt.now();
            flush(&mut core, id, now) && core.socks.get(&id).is_none_or(|s| s.unsent.is_none())
        };
        if done {
            return;
        }
        let timed_out = future::or(
            async {
                let _ = sock.writable().await;
                false
            },
            async {
                shared.rt.sleep_until(deadline).await;
                true
            },
        )
        .await;
        if timed_out {
            log::debug!("{id}: closing with unsent data after {CLOSE_FLUSH:?}");
            return;
        }
    }
}

/// The socket is closed: forget the pipe on the driver side and wake `closed()` waiters.
async fn finish<R: Runtime>(shared: &Arc<Shared<R>>, id: PipeId) {
    let mut core = shared.lock();
    Shared::forget(&mut core, id);
    shared.pump(&mut core);
}
