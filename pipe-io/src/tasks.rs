//! The I/O tasks: one per socket. A task is a loop, not logic: read what is ready and feed
//! it to the engine, write what the engine queued, run the engine's timer (one task per group
//! at a time), and sleep until one of those can make progress. When the engine releases the
//! pipe's socket (`Event::Released`: everything written, or the close deadline passed), the
//! task drops it. Protocol decisions, deadlines and caps all live in pipe-core.
//!
//! The task's functions return `async move` blocks instead of being `async fn`s: an
//! `async fn`'s state machine keeps each argument twice (rust-lang/rust#62958), and every
//! connection's task is made of these.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use pipe_core::{PipeId, Proto};

use crate::buffers::{read_pooled, with_scratch, Input};
use crate::callbacks::{run_accept_hooks, with_inline_jobs};
use crate::group::{Entry, Forward, Group, GroupState, Reading, Slot, Sock};
use crate::pipe::run_forwards;
use crate::pipe::Pipe;
use crate::runtime::{ListenerIo, Readiness, Runtime, TcpIo, UdpIo};
use crate::socket::is_fd_exhaustion;

/// Datagrams or reads handled before the task yields to others.
pub(crate) const READ_BUDGET: usize = 64;

/// Connections a listener accepts before its task yields to others (`run_listener`).
const ACCEPT_BUDGET: usize = 32;

/// What woke a waiting task.
pub(crate) enum Wake {
    Readable,
    Writable,
    Timer,
    Signal,
}

/// Register a new pipe's socket and entry, and start its task. `conn`: an accepted
/// connection (it runs the listener's accept hooks before it reads).
pub(crate) fn start<R: Runtime>(
    group: &Arc<Group<R>>,
    g: &mut GroupState<R>,
    id: PipeId,
    sock: Sock<R>,
    conn: bool,
) -> Arc<Entry> {
    let proto = if matches!(sock, Sock::Udp(_)) {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let entry = Entry::new(proto);
    g.slots.insert(
        id,
        Slot {
            sock: Some(sock.clone()),
            entry: entry.clone(),
            cbs: None,
            jobs: Default::default(),
        },
    );
    if g.timer_task.is_none() {
        g.timer_task = Some(id);
    }
    if !conn && defer(group, g, &entry, &sock) {
        return entry;
    }
    let reader_limit = reader_limit(g, id);
    let hooks = Some(g.cbs.accept.clone()).filter(|h| conn && !h.is_empty());
    match (sock, hooks) {
        (Sock::Tcp(t), Some(hooks)) => {
            let (s, e) = (group.clone(), entry.clone());
            group.rt.spawn(Box::pin(async move {
                let hooks = run_accept_hooks(hooks, Pipe::handle(s.clone(), id, e.clone()));
                let mut hooks = pin!(hooks);
                // The connection reads only after its hooks ran (a relay links it first). If
                // a hook ends the pipe (a failing upstream closes it), the socket is closed
                // while the hook still runs, so the hook's `close().await` returns.
                let ended = async {
                    wait_ended(&e).await;
                    false
                };
                let done = future::or(
                    async {
                        (&mut hooks).await;
                        true
                    },
                    ended,
                )
                .await;
                if done {
                    run_tcp(s, id, t, e, reader_limit).await;
                } else {
                    future::zip(hooks, run_tcp(s, id, t, e, reader_limit)).await;
                }
            }));
        }
        (sock, _) => spawn_io(group, id, sock, entry.clone(), reader_limit),
    }
    entry
}

/// The most a pipe reads at once (its conf's; 64 KiB for one the engine forgot).
fn reader_limit<R: Runtime>(g: &GroupState<R>, id: PipeId) -> usize {
    g.engine.conf(id).map_or(1 << 16, |c| c.reader_limit)
}

/// Spawn the I/O task of a pipe without accept hooks: a plain TCP or UDP pipe's unboxed (on
/// tokio one allocation, not two), a listener's through the boxed `spawn`.
fn spawn_io<R: Runtime>(
    group: &Arc<Group<R>>,
    id: PipeId,
    sock: Sock<R>,
    entry: Arc<Entry>,
    reader_limit: usize,
) {
    let s = group.clone();
    match sock {
        Sock::Udp(u) => group.rt.spawn_unboxed(run_udp(s, id, u, entry)),
        Sock::Tcp(t) => group
            .rt
            .spawn_unboxed(run_tcp(s, id, t, entry, reader_limit)),
        Sock::Listener(l) => group.rt.spawn(Box::pin(run_listener(s, id, l, entry))),
    }
}

/// A client's task starts when it has something to do (`group::lazy`): the group becomes
/// its waker, and the socket's readiness is registered with the entry's read waker, which
/// passes a read event (bytes, a FIN, a reset) to it; bytes there already start it at once.
/// False: the runtime's sockets cannot hand readiness over, and the caller starts it now.
fn defer<R: Runtime>(
    group: &Arc<Group<R>>,
    g: &mut GroupState<R>,
    entry: &Arc<Entry>,
    sock: &Sock<R>,
) -> bool {
    type PollReady<'a> =
        &'a dyn Fn(&mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>>;
    let poll: PollReady<'_> = match sock {
        Sock::Udp(s) if <R::Udp as Readiness>::READ_HANDOFF => &|cx| s.poll_read_handoff(cx),
        Sock::Tcp(s) if <R::Tcp as Readiness>::READ_HANDOFF => &|cx| s.poll_read_handoff(cx),
        _ => return false,
    };
    // The waker first: an event between the poll and its registration finds it.
    group.defer_task(entry);
    let w = entry.read_waker();
    if poll(&mut std::task::Context::from_waker(&w)).is_ready() {
        group.start_lazy_task(Some(g));
    }
    true
}

/// Spawn the deferred task of the group's client pipe (`defer`), under the lock; or, when
/// the engine released its socket before the task ran (`run_lazy`), report it closed.
pub(crate) fn spawn_deferred<R: Runtime>(group: &Arc<Group<R>>, g: &mut GroupState<R>) {
    let Some((id, slot)) = g.first.and_then(|id| Some((id, g.slots.get(&id)?))) else {
        return;
    };
    // The group as the task's waker: the task's own takes its place when it waits.
    slot.entry.wake_io().unregister();
    let (sock, entry) = (slot.sock.clone(), slot.entry.clone());
    match sock {
        Some(sock) => spawn_io(group, id, sock, entry, reader_limit(g, id)),
        None => group.socket_closed(g, id),
    }
}

/// Start a deferred task from outside the lock (`Group::start_lazy_task` could not take
/// it): a first task that spawns it under the lock.
#[allow(clippy::manual_async_fn)] // see the module docs
pub(crate) fn run_lazy<R: Runtime>(group: Arc<Group<R>>) -> impl Future<Output = ()> {
    async move {
        let mut g = group.lock();
        spawn_deferred(&group, &mut g);
    }
}

/// What one read attempt did.
pub(crate) enum Read<R: Runtime> {
    /// Input went to the engine; these forwards must be run.
    Fed(Vec<Forward<R>>),
    /// Nothing to read now.
    Empty,
    /// A harmless error; read again.
    Retry,
    /// The pipe ended (reset, socket failure).
    Ended,
    /// The peer's FIN: nothing more to read. The pipe may live on half-closed (it writes
    /// until the engine releases it); these forwards (a relay partner's shutdown among
    /// them) must be run first.
    Fin(Vec<Forward<R>>),
    /// The engine lets this pipe splice: the loop returns to run a zero-copy session
    /// (`splice.rs`) instead of reading.
    Splice,
}

/// How a read loop returned.
enum Exit {
    /// The pipe ended and its socket was released.
    Done,
    /// A read said [`Read::Splice`].
    Splice,
}

/// The read loop shared by UDP and TCP pipes: read up to a budget, then yield; when nothing
/// is readable, sleep until the socket, the engine's timer or the pipe's signal wakes us.
/// Returns when the pipe ended (after writing what is left until the engine releases it), or
/// when a read asks for a zero-copy session.
#[allow(clippy::manual_async_fn)] // see the module docs
fn read_loop<'a, R: Runtime, S: Readiness>(
    group: &'a Arc<Group<R>>,
    id: PipeId,
    entry: &'a Arc<Entry>,
    sock: &'a S,
    mut read_one: impl FnMut() -> Read<R> + 'a,
) -> impl Future<Output = Exit> + 'a {
    async move {
        'read: loop {
            let mut n = 0;
            while n < READ_BUDGET {
                if entry.is_ended() {
                    break 'read;
                }
                if entry.is_paused() {
                    break;
                }
                // One reader at a time: a client's `recv` may hold reading (it then wakes
                // this task when it gives it back), or have read the end of the stream.
                if S::READ_HANDOFF {
                    match entry.take_reading_io() {
                        Reading::Taken => {}
                        Reading::Lent => break,
                        Reading::Closed => break 'read,
                    }
                }
                let read = with_inline_jobs(&mut read_one);
                if S::READ_HANDOFF {
                    match read {
                        // Kept through the zero-copy session, which reads the socket.
                        Read::Splice => {}
                        Read::Ended | Read::Fin(_) => entry.close_reading(),
                        _ => entry.give_reading_io(),
                    }
                }
                // Nothing of the read is held across an await but the boxed forwards: every
                // local kept across one sizes the task of each idle connection.
                let (forwards, fin) = match read {
                    Read::Splice => return Exit::Splice,
                    Read::Fed(forwards) => {
                        n += 1;
                        (forwards, false)
                    }
                    Read::Empty => break,
                    Read::Retry => continue,
                    Read::Ended => break 'read,
                    Read::Fin(forwards) => (forwards, true),
                };
                if let Some(run) = boxed_forwards(group, forwards) {
                    // On the heap: only relays forward, and idle tasks stay small.
                    run.await;
                }
                if fin {
                    break 'read;
                }
            }
            if n == READ_BUDGET {
                future::yield_now().await;
                continue;
            }
            let woke = wait(group, id, entry, sock, true).await;
            on_wake(group, id, woke);
        }
        entry.close_reading();
        // On the heap: the drain's wait is the biggest state, and every idle task would carry
        // it. Not at all when the engine already released the socket (a close with nothing
        // left to write): there is nothing to drain.
        if !entry.is_released() {
            Box::pin(drain(group, id, entry, sock)).await;
        }
        Exit::Done
    }
}

/// Run `forwards` (relayed messages) on the heap, or `None` when there are none.
fn boxed_forwards<'a, R: Runtime>(
    group: &'a Arc<Group<R>>,
    forwards: Vec<Forward<R>>,
) -> Option<std::pin::Pin<Box<impl Future<Output = ()> + 'a>>> {
    (!forwards.is_empty()).then(|| Box::pin(run_forwards(group, forwards)))
}

/// A zero-copy session ended the pipe: run what it forwarded last, then write what is queued.
async fn after_splice<R: Runtime, S: Readiness>(
    group: &Arc<Group<R>>,
    id: PipeId,
    entry: &Arc<Entry>,
    sock: &S,
    forwards: Vec<Forward<R>>,
) {
    if !forwards.is_empty() {
        run_forwards(group, forwards).await;
    }
    drain(group, id, entry, sock).await;
}

/// The pipe ended, or its peer sent a FIN (half-closed: it still writes, and sends may still
/// come): write what is queued until the engine releases the socket (all written, or its
/// close deadline passed), running the group's timer if this task holds it.
#[allow(clippy::manual_async_fn)] // see the module docs
fn drain<'a, R: Runtime, S: Readiness>(
    group: &'a Arc<Group<R>>,
    id: PipeId,
    entry: &'a Arc<Entry>,
    sock: &'a S,
) -> impl Future<Output = ()> + 'a {
    async move {
        loop {
            group.flush_pipe(id);
            if entry.is_released() || group.lock().engine.state(id).is_none() {
                return;
            }
            match wait(group, id, entry, sock, false).await {
                Wake::Timer => timer(group),
                Wake::Writable | Wake::Readable | Wake::Signal => {}
            }
        }
    }
}

#[allow(clippy::manual_async_fn)] // see the module docs
fn run_udp<R: Runtime>(
    group: Arc<Group<R>>,
    id: PipeId,
    sock: Arc<R::Udp>,
    entry: Arc<Entry>,
) -> impl Future<Output = ()> {
    async move {
        let _ = read_loop(&group, id, &entry, &*sock, || {
            read_udp(&group, id, &sock, false)
        })
        .await;
        drop(sock);
        finish(&group, id);
    }
}

#[allow(clippy::manual_async_fn)] // see the module docs
fn run_tcp<R: Runtime>(
    group: Arc<Group<R>>,
    id: PipeId,
    sock: Arc<R::Tcp>,
    entry: Arc<Entry>,
    reader_limit: usize,
) -> impl Future<Output = ()> {
    async move {
        // Zero copy (`splice.rs`): the engine's word after the last (bulk) read (`Some(true)`:
        // splice next), or `None` once the runtime or the OS said it cannot splice. One variable,
        // so the read closure of every idle task holds one reference more, not two.
        let mut may_splice = Some(false);
        loop {
            let exit = read_loop(&group, id, &entry, &*sock, || {
                if may_splice == Some(true) {
                    may_splice = Some(false);
                    return Read::Splice;
                }
                read_tcp(&group, id, &sock, reader_limit, &mut may_splice, false)
            })
            .await;
            if let Exit::Done = exit {
                break;
            }
            // The session's result is taken apart in this block, before the next await:
            // nothing of it is kept in every idle task's state.
            let forwards = {
                let session = Box::pin(crate::splice::run(
                    group.clone(),
                    id,
                    sock.clone(),
                    entry.clone(),
                    reader_limit / 2,
                ))
                .await;
                match session {
                    crate::splice::Session::Copy => continue,
                    crate::splice::Session::Off => {
                        may_splice = None;
                        continue;
                    }
                    crate::splice::Session::End(forwards) => forwards,
                }
            };
            Box::pin(after_splice(&group, id, &entry, &*sock, forwards)).await;
            break;
        }
        // Closing the last descriptor sends the FIN (or, with SO_LINGER 0, the RST): no
        // shutdown call, which would also turn an abortive close into a graceful one.
        drop(sock);
        finish(&group, id);
    }
}

/// Read one datagram and feed it to the engine (`now`: whatever the runtime's readiness
/// says, [`crate::UdpIo::try_recv_from_now`]).
pub(crate) fn read_udp<R: Runtime>(
    group: &Arc<Group<R>>,
    id: PipeId,
    sock: &R::Udp,
    now: bool,
) -> Read<R> {
    // One byte more than the largest UDP payload, so nothing is truncated silently.
    let read = with_scratch(65_536, |buf| {
        let (len, from) = if now {
            sock.try_recv_from_now(buf)?
        } else {
            sock.try_recv_from(buf)?
        };
        let mut g = group.lock();
        g.engine
            .handle_datagram(group.rt.now(), id, from, &buf[..len]);
        Ok(group.pump(&mut g))
    });
    match read {
        Ok(forwards) => Read::Fed(forwards),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Read::Empty,
        // ICMP errors reported on the socket: the pipe lives on.
        Err(e) if crate::socket::is_transient_udp_error(&e) => Read::Retry,
        Err(e) => {
            fail(group, id, e);
            Read::Ended
        }
    }
}

/// Read once from a TCP stream (up to `reader_limit` bytes) and feed it to the engine.
/// `may_splice`, when `Some`, gets the engine's word on zero copy after a bulk read; `now`:
/// read whatever the runtime's readiness says ([`crate::TcpIo::try_read_now`]).
pub(crate) fn read_tcp<R: Runtime>(
    group: &Arc<Group<R>>,
    id: PipeId,
    sock: &R::Tcp,
    reader_limit: usize,
    may_splice: &mut Option<bool>,
    now: bool,
) -> Read<R> {
    let read = read_pooled(
        reader_limit,
        |buf| {
            if now {
                sock.try_read_now(buf)
            } else {
                sock.try_read(buf)
            }
        },
        |input| {
            let mut g = group.lock();
            let now = group.rt.now();
            let len = match input {
                Input::Slice([]) => {
                    g.engine.handle_peer_closed(now, id, false);
                    0
                }
                Input::Slice(bytes) => {
                    g.engine.handle_stream(now, id, bytes);
                    bytes.len()
                }
                Input::Owned(bytes) => {
                    let len = bytes.len();
                    g.engine.handle_stream_bytes(now, id, bytes);
                    len
                }
            };
            // Bulk only: a read of at least half the buffer (small messages gain
            // nothing from a kernel pipe and would pay for one).
            if let Some(may) = may_splice.as_mut() {
                *may = len >= reader_limit / 2 && g.engine.splice_source(id).is_some();
            }
            (len, group.pump(&mut g))
        },
    );
    match read {
        Ok((0, forwards)) => Read::Fin(forwards),
        Ok((_, forwards)) => Read::Fed(forwards),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Read::Empty,
        Err(e) if e.kind() == ErrorKind::Interrupted => Read::Retry,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ) =>
        {
            let mut g = group.lock();
            g.engine.handle_peer_closed(group.rt.now(), id, true);
            group.pump(&mut g);
            Read::Ended
        }
        Err(e) => {
            fail(group, id, e);
            Read::Ended
        }
    }
}

/// A client `recv` holding its pipe's reading ([`Entry::take_reading_recv`]): while it waits
/// it reads the socket itself, so the task the reactor wakes is the one that wants the
/// message (no hop through the I/O task). Dropping it gives reading back to the I/O task,
/// with the socket's one read waker.
pub(crate) struct Lend<'a, R: Runtime> {
    group: &'a Arc<Group<R>>,
    id: PipeId,
    entry: &'a Arc<Entry>,
    sock: LendSock<R>,
    /// The end of the stream (or the pipe's end) was read: nothing more is read.
    closed: bool,
    /// A readiness event not read yet (sockets that read only on readiness:
    /// [`Readiness::HANDOFF_WAKES_REPLACED`]).
    ready: bool,
    /// The first read was tried. It asks the socket whatever the runtime's readiness says
    /// (`TcpIo::try_read_now`): the answer is often there already, and the reactor's word
    /// on it costs an `epoll_wait` round.
    tried: bool,
}

enum LendSock<R: Runtime> {
    Tcp(Arc<R::Tcp>, usize),
    Udp(Arc<R::Udp>),
}

impl<'a, R: Runtime> Lend<'a, R> {
    /// Under the group's lock: take reading over, if this pipe lends it. Only a client (the
    /// group's only pipe) without message callbacks or subscription handlers (those run
    /// inline on its I/O task's reads), not paused, on a runtime whose sockets hand
    /// readability over ([`Readiness::READ_HANDOFF`]), and only while nobody else reads.
    pub(crate) fn take(
        g: &GroupState<R>,
        group: &'a Arc<Group<R>>,
        id: PipeId,
        entry: &'a Arc<Entry>,
    ) -> Option<Self> {
        if g.first != Some(id)
            || !g.cbs.msg.is_empty()
            || !g.cbs.sub.is_empty()
            || entry.is_paused()
            || entry.is_ended()
        {
            return None;
        }
        let sock = match g.slots.get(&id)?.sock.as_ref()? {
            Sock::Tcp(s) if <R::Tcp as Readiness>::READ_HANDOFF => {
                let limit = g.engine.conf(id)?.reader_limit;
                LendSock::Tcp(s.clone(), limit)
            }
            Sock::Udp(s) if <R::Udp as Readiness>::READ_HANDOFF => LendSock::Udp(s.clone()),
            _ => return None,
        };
        entry.take_reading_recv().then_some(Self {
            group,
            id,
            entry,
            sock,
            closed: false,
            ready: false,
            tried: false,
        })
    }

    /// The socket's readiness wakes the waker it replaces: it is polled with the entry's
    /// waker, and read only after an event.
    fn gated(&self) -> bool {
        match &self.sock {
            LendSock::Tcp(..) => <R::Tcp as Readiness>::HANDOFF_WAKES_REPLACED,
            LendSock::Udp(_) => <R::Udp as Readiness>::HANDOFF_WAKES_REPLACED,
        }
    }

    fn poll_sock(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match &self.sock {
            LendSock::Tcp(s, _) => s.poll_read_handoff(cx),
            LendSock::Udp(s) => s.poll_read_handoff(cx),
        }
        .map(|_| ())
    }

    /// Poll readiness with the entry's waker (a gated socket), noting an event.
    fn poll_entry(&mut self) -> bool {
        let w = self.entry.read_waker();
        self.ready |= self
            .poll_sock(&mut std::task::Context::from_waker(&w))
            .is_ready();
        self.ready
    }

    /// Read once and feed the engine. After the end of the stream or a failure nothing more
    /// is read, and the I/O task is told when this is dropped.
    pub(crate) fn read(&mut self) -> Read<R> {
        let first = !self.tried;
        self.tried = true;
        if self.gated() {
            // A wake-up of the entry's waker from here on is news for whoever reads next. One
            // before it is an event even if the runtime's readiness says `Pending`
            // (`Entry::take_io_read_event`).
            let news = self.entry.take_read_event();
            if !first && !self.ready && !self.poll_entry() && !news {
                return Read::Empty;
            }
            // After the first, one read per event: async-io reports readiness once per
            // event, and a read that finds nothing is a system call.
            self.ready = false;
        }
        let read = match &self.sock {
            LendSock::Tcp(s, limit) => read_tcp(self.group, self.id, s, *limit, &mut None, first),
            LendSock::Udp(s) => read_udp(self.group, self.id, s, first),
        };
        if matches!(read, Read::Fin(_) | Read::Ended) {
            self.closed = true;
        }
        read
    }

    /// Wait for readability: with the caller's waker, or (a gated socket) with the entry's,
    /// which wakes the caller through its own wake-up (`Entry::lender`).
    pub(crate) fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if !self.gated() {
            return self.poll_sock(cx);
        }
        let news = self.entry.take_read_event();
        if self.poll_entry() || news {
            self.ready = true;
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

impl<R: Runtime> Drop for Lend<'_, R> {
    fn drop(&mut self) {
        // The I/O task's waker takes the socket's read waker back before reading is freed
        // (the I/O task polls readiness only while it holds reading). Ready: bytes are there
        // already, and the I/O task is woken to read them. No waker: the task has not waited
        // yet, or was woken, and polls readiness itself when it next waits.
        let (mut handed, mut wake) = (false, false);
        if !self.closed && self.gated() {
            // The entry's waker stays the socket's: polling re-arms it (async-io's interest
            // is one-shot), and from now on it wakes the I/O task. Ready: an event not read.
            handed = true;
            let w = self.entry.read_waker();
            wake = self.ready
                || self
                    .poll_sock(&mut std::task::Context::from_waker(&w))
                    .is_ready();
        } else if !self.closed {
            if let Some(w) = self.entry.wake_io().waker() {
                handed = true;
                wake = self
                    .poll_ready(&mut std::task::Context::from_waker(&w))
                    .is_ready();
            }
        }
        self.entry.give_reading_recv(self.closed, handed, wake);
    }
}

async fn run_listener<R: Runtime>(
    group: Arc<Group<R>>,
    id: PipeId,
    sock: Arc<R::Listener>,
    entry: Arc<Entry>,
) {
    let mut backoff = Duration::ZERO;
    // Accepts since the task last gave way: a flood keeps `accept` ready, and smol (unlike
    // tokio) has no budget that makes a ready task yield, so without this the accept loop
    // starves the tasks that close evicted or refused connections on its thread.
    let mut since_yield = 0usize;
    while !entry.is_ended() {
        if since_yield == ACCEPT_BUDGET {
            since_yield = 0;
            future::yield_now().await;
        }
        let signal = entry.wake_io().listen();
        let deadline = timer_deadline(&group, id);
        if entry.is_ended() {
            break;
        }
        let due = async {
            sleep_to(&group, deadline).await;
            Some(None)
        };
        let accepted = future::or(
            async { Some(Some(sock.accept().await)) },
            future::or(due, async {
                signal.await;
                None
            }),
        )
        .await;
        match accepted {
            None => {}
            Some(None) => timer(&group),
            Some(Some(Ok((stream, peer)))) => {
                backoff = Duration::ZERO;
                since_yield += 1;
                accept_one(&group, id, stream, peer);
            }
            Some(Some(Err(e))) if is_fd_exhaustion(&e) => {
                // Out of descriptors: back off instead of spinning on EMFILE.
                backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                crate::logs::limited(
                    crate::logs::Kind::Exhausted,
                    format_args!("{id}: accept: {e}; pausing {backoff:?}"),
                );
                // Until the back-off ends, or a connection of this server frees a descriptor.
                let deadline = group.rt.now() + backoff;
                let signal = entry.wake_io().listen();
                entry
                    .starved
                    .store(true, std::sync::atomic::Ordering::Release);
                future::or(group.rt.sleep_until(deadline), signal).await;
                entry
                    .starved
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            Some(Some(Err(e))) => {
                crate::logs::limited(crate::logs::Kind::Accept, format_args!("{id}: accept: {e}"))
            }
        }
    }
    drop(sock);
    // The listener has nothing to write, but it may hold the group's timer while its
    // connections flush after it closed them.
    group.flush_pipe(id);
    finish(&group, id);
}

fn accept_one<R: Runtime>(
    group: &Arc<Group<R>>,
    listener: PipeId,
    stream: R::Tcp,
    peer: SocketAddr,
) {
    let mut g = group.lock();
    let Some(listen_addr) = g.engine.local_addr(listener) else {
        return;
    };
    let local = stream.local_addr().unwrap_or(listen_addr);
    match g
        .engine
        .handle_accepted(group.rt.now(), listener, local, peer)
    {
        Ok(conn) => {
            start(group, &mut g, conn, Sock::Tcp(Arc::new(stream)), true);
            group.pump(&mut g);
        }
        Err(e) => crate::logs::limited(
            crate::logs::Kind::Accept,
            format_args!("{listener}: refusing {peer}: {e}"),
        ),
    }
}

/// The engine's next deadline if this pipe's task holds the group's timer (it then sleeps
/// to it, and `pump` wakes it when the deadline moves earlier).
pub(crate) fn timer_deadline<R: Runtime>(
    group: &Arc<Group<R>>,
    id: PipeId,
) -> Option<std::time::Instant> {
    arm_timer(&mut group.lock(), id)
}

/// [`timer_deadline`] under a lock already held.
fn arm_timer<R: Runtime>(g: &mut GroupState<R>, id: PipeId) -> Option<std::time::Instant> {
    if g.timer_task != Some(id) {
        return None;
    }
    g.armed = g.engine.poll_timeout();
    g.armed
}

/// Act on what woke a reading task: flush when its socket turned writable, run the group's
/// timer when it is due.
pub(crate) fn on_wake<R: Runtime>(group: &Arc<Group<R>>, id: PipeId, wake: Wake) {
    match wake {
        Wake::Readable | Wake::Signal => {}
        Wake::Writable => group.flush_pipe(id),
        Wake::Timer => timer(group),
    }
}

/// Sleep until the socket is readable (if `read`, and the engine has not paused reading: then
/// until it resumes), writable (only if bytes are queued), the engine's timer is due (the
/// timer task only), or the entry's `wake_io` is signalled.
#[allow(clippy::manual_async_fn)] // see the module docs
pub(crate) fn wait<'a, R: Runtime, S: Readiness>(
    group: &'a Arc<Group<R>>,
    id: PipeId,
    entry: &'a Arc<Entry>,
    sock: &'a S,
    read: bool,
) -> impl Future<Output = Wake> + 'a {
    async move {
        let signal = entry.wake_io().listen();
        let (deadline, want_write) = {
            let mut g = group.lock();
            (arm_timer(&mut g, id), g.engine.peek_transmit(id).is_some())
        };
        if (read && entry.is_ended()) || entry.is_released() {
            return Wake::Signal;
        }
        if read && entry.is_paused() {
            // Paused: wait for the engine's resume (it signals `wake_io`, listened to above,
            // before the check, so a resume in between is not lost) instead of the socket. An
            // idle task holds one listener, not two: ~250 bytes less per connection.
            let sig = async {
                signal.await;
                Wake::Signal
            };
            return Box::pin(future::or(sig, timed(group, deadline, want_write, sock))).await;
        }
        let sig = async {
            signal.await;
            Wake::Signal
        };
        let readable = async {
            if !read {
                future::pending::<()>().await;
            } else if S::READ_HANDOFF {
                readable_unless_lent(entry, sock).await;
            } else {
                let _ = sock.readable().await;
            }
            Wake::Readable
        };
        if deadline.is_none() && !want_write {
            // The idle case, kept small: 10,000 idle connections each hold this future.
            return future::or(readable, sig).await;
        }
        // Busier waits live on the heap, so they do not size every idle task.
        Box::pin(future::or(
            readable,
            future::or(sig, timed(group, deadline, want_write, sock)),
        ))
        .await
    }
}

/// Wait until the socket is readable, polled only while no `recv` holds reading (a poll
/// would take the socket's one read waker from it). While one does, this waits for `wake_io`
/// instead, which the `recv` signals when it gives reading back. Completes at once when
/// reading closed, so the read loop sees it.
fn readable_unless_lent<'a, S: Readiness>(
    entry: &'a Arc<Entry>,
    sock: &'a S,
) -> impl Future<Output = ()> + 'a {
    future::poll_fn(move |cx| match entry.take_reading_io() {
        Reading::Taken => {
            let ready = if S::HANDOFF_WAKES_REPLACED {
                // The entry's waker, which wakes this task (kept first in `wake_io`) while
                // reading is not lent.
                entry.wake_io().register(cx.waker());
                let w = entry.read_waker();
                let polled = sock.poll_read_handoff(&mut std::task::Context::from_waker(&w));
                // An event the runtime's readiness missed (`Entry::take_io_read_event`).
                if entry.take_io_read_event() {
                    std::task::Poll::Ready(Ok(()))
                } else {
                    polled
                }
            } else {
                sock.poll_read_handoff(cx)
            };
            entry.give_reading_io();
            ready.map(|_| ())
        }
        Reading::Lent => std::task::Poll::Pending,
        Reading::Closed => std::task::Poll::Ready(()),
    })
}

/// The timer and writability half of a wait.
async fn timed<R: Runtime, S: Readiness>(
    group: &Arc<Group<R>>,
    deadline: Option<std::time::Instant>,
    want_write: bool,
    sock: &S,
) -> Wake {
    let timer = async {
        sleep_to(group, deadline).await;
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
    future::or(write, timer).await
}

/// Sleep until the engine's deadline `at` (for ever if `None`) on the group's kept timer.
pub(crate) async fn sleep_to<R: Runtime>(group: &Arc<Group<R>>, at: Option<std::time::Instant>) {
    match at {
        Some(at) => {
            future::poll_fn(|cx| {
                let mut s = group.sleeper.lock().unwrap_or_else(|p| p.into_inner());
                s.poll_until(&group.rt, at, cx)
            })
            .await
        }
        None => future::pending().await,
    }
}

pub(crate) fn timer<R: Runtime>(group: &Arc<Group<R>>) {
    let mut g = group.lock();
    let now = group.rt.now();
    g.armed = None;
    g.engine.handle_timeout(now);
    group.pump(&mut g);
}

pub(crate) fn fail<R: Runtime>(group: &Arc<Group<R>>, id: PipeId, e: std::io::Error) {
    log::debug!("{id}: socket error: {e}");
    let mut g = group.lock();
    g.engine.handle_error(group.rt.now(), id, e.into());
    group.pump(&mut g);
}

/// Wait until the pipe has ended.
async fn wait_ended(entry: &Entry) {
    while !entry.is_ended() {
        let listener = entry.wake_io().listen();
        if entry.is_ended() {
            return;
        }
        listener.await;
    }
}

/// The socket is closed: the driver forgets the pipe (once its callbacks ran) and wakes
/// `closed()` waiters.
fn finish<R: Runtime>(group: &Arc<Group<R>>, id: PipeId) {
    let mut g = group.lock();
    group.socket_closed(&mut g, id);
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    /// A socket whose readiness reports an event only by waking the waker it keeps, every
    /// poll answering `Pending`: async-io's `poll_readable` for an event delivered in the
    /// reactor tick during which the waker was registered.
    #[derive(Default)]
    struct WakeOnly(Mutex<Option<Waker>>);

    impl WakeOnly {
        fn event(&self) {
            if let Some(w) = self.0.lock().unwrap().take() {
                w.wake();
            }
        }
    }

    impl Readiness for WakeOnly {
        async fn readable(&self) -> io::Result<()> {
            future::pending().await
        }
        async fn writable(&self) -> io::Result<()> {
            future::pending().await
        }
        const READ_HANDOFF: bool = true;
        const HANDOFF_WAKES_REPLACED: bool = true;
        fn poll_read_handoff(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.0.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn io_task_takes_a_wake_up_as_readiness_its_next_poll_denies() {
        let entry = Entry::new(Proto::Tcp);
        let sock = WakeOnly::default();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(readable_unless_lent(&entry, &sock));
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "no event yet");
        sock.event();
        assert_eq!(woken.0.load(SeqCst), 1, "the entry wakes the I/O task");
        assert!(
            wait.as_mut().poll(&mut cx).is_ready(),
            "the wake-up is the event, whatever the next poll says"
        );
        // Taken once: the next wait waits for the next event.
        let mut again = std::pin::pin!(readable_unless_lent(&entry, &sock));
        assert!(again.as_mut().poll(&mut cx).is_pending());
        sock.event();
        assert!(again.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_wake_up_while_a_recv_reads_is_news_for_its_next_read() {
        let entry = Entry::new(Proto::Tcp);
        assert!(entry.take_reading_recv());
        assert!(!entry.take_read_event(), "nothing happened yet");
        entry.read_waker().wake_by_ref();
        assert!(entry.take_read_event(), "the wake-up is kept for the recv");
        assert!(!entry.take_read_event(), "and taken once");
    }
}
