//! State shared by a pipe group's handles and tasks: the engine, the sockets, callbacks and
//! the signals tasks wait on. One mutex guards it; it is never held across an `.await`.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Signal;
use pipe_core::{Engine, Event, LinkId, MessageId, Outcome, PipeId, Proto};

use crate::callbacks::{run_job, Callbacks, Job, JobQueue, JOB_CAP};
use crate::pipe::Pipe;
use crate::runtime::{BoxFuture, Readiness, Runtime, TcpIo, UdpIo};

/// Reliable-send outcomes kept for callers that have not collected them yet.
const OUTCOME_CAP: usize = 4096;

/// A hasher for the driver's small integer keys (pipe ids, link tokens): one multiply per
/// word. SipHash's flood resistance buys nothing here, since peers never choose these keys.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Per-pipe signals. Waiters `listen()` before checking state, so no wake-up is lost.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) proto: Proto,
    /// Subscription queues gained messages, or the pipe ended.
    pub(crate) readable: Signal,
    /// The outbound buffer drained, or the pipe ended.
    pub(crate) writable: Signal,
    /// The pipe's I/O task has something to do (flush, timer change, end).
    pub(crate) wake_io: Signal,
    /// An accepted connection is waiting, or the listener ended.
    pub(crate) accept: Signal,
    /// A reliable send finished.
    pub(crate) reliable: Signal,
    /// The callback queue has room again.
    pub(crate) job_space: Signal,
    /// The pipe ended and its socket is closed.
    pub(crate) closed: Signal,
    pub(crate) ended: AtomicBool,
    pub(crate) io_done: AtomicBool,
    /// The callback queue is at its cap: the reader waits (checked without the lock).
    pub(crate) jobs_full: AtomicBool,
}

impl Entry {
    pub(crate) fn new(proto: Proto) -> Arc<Self> {
        Arc::new(Self {
            proto,
            readable: Signal::new(),
            writable: Signal::new(),
            wake_io: Signal::new(),
            accept: Signal::new(),
            reliable: Signal::new(),
            job_space: Signal::new(),
            closed: Signal::new(),
            ended: AtomicBool::new(false),
            io_done: AtomicBool::new(false),
            jobs_full: AtomicBool::new(false),
        })
    }

    /// The entry of a pipe that is already closed and forgotten.
    pub(crate) fn gone(proto: Proto) -> Arc<Self> {
        let e = Self::new(proto);
        e.ended.store(true, Ordering::Release);
        e.io_done.store(true, Ordering::Release);
        e
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.io_done.load(Ordering::Acquire)
    }

    fn wake_all(&self) {
        for s in [
            &self.readable,
            &self.writable,
            &self.wake_io,
            &self.accept,
            &self.reliable,
            &self.job_space,
        ] {
            s.notify(usize::MAX);
        }
    }
}

/// A socket and what could not be written to it yet.
pub(crate) enum Sock<R: Runtime> {
    Udp(Arc<R::Udp>),
    Tcp(Arc<R::Tcp>),
    Listener(Arc<R::Listener>),
}

impl<R: Runtime> Clone for Sock<R> {
    fn clone(&self) -> Self {
        match self {
            Sock::Udp(s) => Sock::Udp(s.clone()),
            Sock::Tcp(s) => Sock::Tcp(s.clone()),
            Sock::Listener(s) => Sock::Listener(s.clone()),
        }
    }
}

impl<R: Runtime> Sock<R> {
    /// Wait until the socket may take more bytes (never, for a listener).
    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match self {
            Sock::Udp(s) => s.writable().await,
            Sock::Tcp(s) => s.writable().await,
            Sock::Listener(_) => futures_lite::future::pending().await,
        }
    }
}

pub(crate) struct SockEntry<R: Runtime> {
    pub(crate) sock: Sock<R>,
    /// One transmit (or the rest of one) the socket would not take.
    pub(crate) unsent: Option<Box<(Bytes, SocketAddr)>>,
}

/// A forward to a pipe of another group, performed after the lock is released.
pub(crate) struct Forward<R: Runtime> {
    pub(crate) from: PipeId,
    pub(crate) link: LinkId,
    pub(crate) target: Pipe<R>,
    pub(crate) dest: Option<SocketAddr>,
    pub(crate) data: Bytes,
}

pub(crate) struct Core<R: Runtime> {
    pub(crate) engine: Engine,
    pub(crate) socks: IdMap<PipeId, SockEntry<R>>,
    pub(crate) entries: IdMap<PipeId, Arc<Entry>>,
    pub(crate) cbs: IdMap<PipeId, Callbacks<R>>,
    pub(crate) jobs: IdMap<PipeId, JobQueue>,
    pub(crate) parent: IdMap<PipeId, PipeId>,
    pub(crate) outcomes: VecDeque<(PipeId, MessageId, Outcome)>,
    pub(crate) link_targets: IdMap<u64, Pipe<R>>,
    pub(crate) link_tokens: IdMap<(PipeId, LinkId), u64>,
    pub(crate) next_token: u64,
    pub(crate) next_cb: u64,
    /// The pipe whose task runs the engine's timer.
    pub(crate) root: Option<PipeId>,
    /// Job queues that became runnable under the lock, started when it is released.
    pub(crate) starts: Vec<(PipeId, Arc<Entry>)>,
    /// The last UDP send error, reported to the sender that flushed it.
    pub(crate) send_error: Option<std::io::Error>,
}

thread_local! {
    /// Set while a pipe's I/O task feeds input to its engine: callback jobs may run inline.
    static INLINE_JOBS: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with inline callback jobs allowed (the I/O tasks' read path).
pub(crate) fn with_inline_jobs<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INLINE_JOBS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(INLINE_JOBS.with(|c| c.replace(true)));
    f()
}

/// The group lock. Dropping it releases the lock, then starts the callback jobs queued while
/// it was held.
pub(crate) struct CoreGuard<'a, R: Runtime> {
    guard: Option<MutexGuard<'a, Core<R>>>,
    shared: &'a Arc<Shared<R>>,
}

impl<R: Runtime> std::ops::Deref for CoreGuard<'_, R> {
    type Target = Core<R>;
    fn deref(&self) -> &Core<R> {
        self.guard.as_deref().expect("guard is held until drop")
    }
}

impl<R: Runtime> std::ops::DerefMut for CoreGuard<'_, R> {
    fn deref_mut(&mut self) -> &mut Core<R> {
        self.guard.as_deref_mut().expect("guard is held until drop")
    }
}

impl<R: Runtime> Drop for CoreGuard<'_, R> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let starts = std::mem::take(&mut guard.starts);
        drop(guard);
        if !starts.is_empty() {
            self.shared.start_jobs(starts);
        }
    }
}

pub(crate) struct Shared<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) core: Mutex<Core<R>>,
}

impl<R: Runtime> std::fmt::Debug for Shared<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("rt", &self.rt)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Shared<R> {
    pub(crate) fn new(rt: R, engine: Engine) -> Arc<Self> {
        Arc::new(Self {
            rt,
            core: Mutex::new(Core {
                engine,
                socks: IdMap::default(),
                entries: IdMap::default(),
                cbs: IdMap::default(),
                jobs: IdMap::default(),
                parent: IdMap::default(),
                outcomes: VecDeque::new(),
                link_targets: IdMap::default(),
                link_tokens: IdMap::default(),
                next_token: 1,
                next_cb: 1,
                root: None,
                starts: Vec::new(),
                send_error: None,
            }),
        })
    }

    /// Lock the group. Callback jobs that became runnable while it was held are started when
    /// the guard is dropped, after the lock is released.
    pub(crate) fn lock(self: &Arc<Self>) -> CoreGuard<'_, R> {
        // A panic while holding the lock cannot leave the engine half-updated in a way that
        // matters more than losing the whole pipe group, so recover the guard.
        let guard = self.core.lock().unwrap_or_else(|p| p.into_inner());
        CoreGuard {
            guard: Some(guard),
            shared: self,
        }
    }

    /// After any input or command: write what can be written, act on events. Returns the
    /// forwards to other groups, which need `.await` and so run after the lock is released.
    pub(crate) fn pump(self: &Arc<Self>, core: &mut Core<R>) -> Vec<Forward<R>> {
        let mut now = None;
        while let Some(pipe) = core.engine.poll_dirty() {
            let now = *now.get_or_insert_with(|| self.rt.now());
            flush(core, pipe, now);
        }
        let mut forwards = Vec::new();
        while let Some(ev) = core.engine.poll_event() {
            match ev {
                Event::Up { pipe } => self.queue_job(core, pipe, Job::Up),
                Event::Message { pipe, msg } => self.queue_job(core, pipe, Job::Msg(msg)),
                Event::Readable { pipe } => notify(core, pipe, |e| &e.readable),
                Event::Accepted { listener, .. } => notify(core, listener, |e| &e.accept),
                Event::Forward {
                    from,
                    link,
                    target,
                    dest,
                    data,
                } => {
                    if let Some(t) = core.link_targets.get(&target) {
                        forwards.push(Forward {
                            from,
                            link,
                            target: t.clone(),
                            dest,
                            data,
                        });
                    }
                }
                Event::Reliable { pipe, id, outcome } => {
                    if core.outcomes.len() >= OUTCOME_CAP {
                        core.outcomes.pop_front();
                    }
                    core.outcomes.push_back((pipe, id, outcome));
                    notify(core, pipe, |e| &e.reliable);
                }
                Event::End { pipe, reason } => {
                    if let Some(e) = core.entries.get(&pipe) {
                        e.ended.store(true, Ordering::Release);
                        e.wake_all();
                    }
                    self.queue_job(core, pipe, Job::End(reason));
                }
                _ => {}
            }
        }
        forwards
    }

    /// The pipe's socket turned writable: write what is queued, act on what that caused.
    pub(crate) fn flush_pipe(self: &Arc<Self>, pipe: PipeId) {
        let mut core = self.lock();
        let now = self.rt.now();
        flush(&mut core, pipe, now);
        self.pump(&mut core);
    }

    /// Queue a callback job if the pipe (or its listener) has callbacks of that kind.
    fn queue_job(self: &Arc<Self>, core: &mut Core<R>, pipe: PipeId, job: Job) {
        let parent = core.parent.get(&pipe).copied();
        let has = |c: Option<&Callbacks<R>>| {
            c.is_some_and(|c| match &job {
                Job::Up => !c.up.is_empty(),
                Job::Msg(_) => !c.msg.is_empty(),
                Job::End(_) => !c.end.is_empty(),
            })
        };
        if !has(core.cbs.get(&pipe)) && !has(parent.and_then(|p| core.cbs.get(&p))) {
            return;
        }
        let Some(entry) = core.entries.get(&pipe).cloned() else {
            return;
        };
        let q = core.jobs.entry(pipe).or_default();
        q.jobs.push_back(job);
        if q.jobs.len() >= JOB_CAP {
            entry.jobs_full.store(true, Ordering::Release);
        }
        if !q.running {
            q.running = true;
            core.starts.push((pipe, entry));
        }
    }

    /// Start the job queues that became runnable. On a pipe's I/O task (the read path) the
    /// jobs run right here, each polled once: a callback that finishes at once (an echo's
    /// send) costs no task at all. A callback that must wait moves, with the rest of the
    /// queue, to a worker task, so the I/O task never waits on user code. Anywhere else (a
    /// user's `close()`, a drop) a worker is spawned: user code never runs inside the caller.
    fn start_jobs(self: &Arc<Self>, starts: Vec<(PipeId, Arc<Entry>)>) {
        for (pipe, entry) in starts {
            if INLINE_JOBS.with(Cell::get) {
                self.run_jobs_inline(pipe, entry);
            } else {
                let shared = self.clone();
                self.rt.spawn(Box::pin(async move {
                    shared.job_worker(pipe, entry, None).await
                }));
            }
        }
    }

    fn run_jobs_inline(self: &Arc<Self>, pipe: PipeId, entry: Arc<Entry>) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Some(mut job) = self.next_job(pipe, &entry) {
            if job.as_mut().poll(&mut cx).is_pending() {
                let shared = self.clone();
                self.rt.spawn(Box::pin(async move {
                    shared.job_worker(pipe, entry, Some(job)).await
                }));
                return;
            }
        }
    }

    /// Run a pipe's queued callback jobs in order (after `first`, a job already started),
    /// then exit. The entry is captured at start: the pipe's socket may be closed and
    /// forgotten while its last jobs (its End among them) still run.
    async fn job_worker(
        self: Arc<Self>,
        pipe: PipeId,
        entry: Arc<Entry>,
        first: Option<BoxFuture<()>>,
    ) {
        if let Some(job) = first {
            job.await;
        }
        while let Some(job) = self.next_job(pipe, &entry) {
            job.await;
        }
    }

    /// The next job of a pipe as a future, or `None` (and the queue is retired) when empty.
    fn next_job(self: &Arc<Self>, pipe: PipeId, entry: &Arc<Entry>) -> Option<BoxFuture<()>> {
        let mut core = self.lock();
        let q = core.jobs.get_mut(&pipe)?;
        let Some(job) = q.jobs.pop_front() else {
            core.jobs.remove(&pipe);
            if !core.entries.contains_key(&pipe) {
                Self::drop_callbacks(&mut core, pipe);
            }
            return None;
        };
        if q.jobs.len() < JOB_CAP && entry.jobs_full.swap(false, Ordering::AcqRel) {
            entry.job_space.notify(usize::MAX);
        }
        let own = core.cbs.get(&pipe).cloned();
        let parent = core
            .parent
            .get(&pipe)
            .and_then(|p| core.cbs.get(p))
            .cloned();
        let handle = Pipe::handle(self.clone(), pipe, entry.clone());
        Some(Box::pin(run_job(job, own, parent, handle)))
    }

    /// Remove a link and the driver's handle on its target.
    pub(crate) fn unlink(
        core: &mut Core<R>,
        pipe: PipeId,
        link: LinkId,
    ) -> Result<(), pipe_core::LinkError> {
        if let Some(token) = core.link_tokens.remove(&(pipe, link)) {
            core.link_targets.remove(&token);
        }
        core.engine.unlink(pipe, link)
    }

    /// Outcome of a reliable send, if it has arrived (taken out of the table).
    pub(crate) fn take_outcome(core: &mut Core<R>, pipe: PipeId, id: MessageId) -> Option<Outcome> {
        let i = core
            .outcomes
            .iter()
            .position(|(p, m, _)| *p == pipe && *m == id)?;
        core.outcomes.remove(i).map(|(_, _, o)| o)
    }

    /// Forget an accepted connection's callbacks. A group's first pipe keeps its own: its
    /// connections run them, and they go with the group.
    fn drop_callbacks(core: &mut Core<R>, pipe: PipeId) {
        if core.parent.remove(&pipe).is_some() {
            core.cbs.remove(&pipe);
        }
    }

    /// Drop everything the driver keeps for a pipe whose socket is closed.
    pub(crate) fn forget(core: &mut Core<R>, pipe: PipeId) {
        core.socks.remove(&pipe);
        let targets = &mut core.link_targets;
        core.link_tokens.retain(|(from, _), token| {
            let keep = *from != pipe;
            if !keep {
                targets.remove(token);
            }
            keep
        });
        // Callbacks stay while jobs are queued (the worker drops them when done).
        if !core.jobs.contains_key(&pipe) {
            Self::drop_callbacks(core, pipe);
        }
        if let Some(e) = core.entries.remove(&pipe) {
            e.io_done.store(true, Ordering::Release);
            e.wake_all();
            e.closed.notify(usize::MAX);
        }
    }
}

fn notify<R: Runtime>(core: &Core<R>, pipe: PipeId, which: impl Fn(&Entry) -> &Signal) {
    if let Some(e) = core.entries.get(&pipe) {
        which(e).notify(usize::MAX);
    }
}

/// Write a pipe's queued transmits until done or the socket is full. Returns true if
/// everything was written.
pub(crate) fn flush<R: Runtime>(core: &mut Core<R>, pipe: PipeId, now: Instant) -> bool {
    let Some(entry) = core.socks.get_mut(&pipe) else {
        // No socket (already closed): discard.
        while core.engine.poll_transmit_for(pipe).is_some() {}
        return true;
    };
    let mut drained = false;
    loop {
        let (buf, dst) = match entry.unsent.take() {
            Some(u) => *u,
            None => match core.engine.poll_transmit_for(pipe) {
                Some(t) => {
                    drained = true;
                    (t.payload, t.dst)
                }
                None => break,
            },
        };
        let res = match &entry.sock {
            Sock::Udp(s) => s.try_send_to(&buf, dst).map(|_| buf.len()),
            Sock::Tcp(s) => s.try_write(&buf),
            Sock::Listener(_) => Ok(buf.len()),
        };
        match res {
            Ok(n) if n < buf.len() => entry.unsent = Some(Box::new((buf.slice(n..), dst))),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                entry.unsent = Some(Box::new((buf, dst)));
                if let Some(e) = core.entries.get(&pipe) {
                    e.wake_io.notify(1);
                }
                return false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                entry.unsent = Some(Box::new((buf, dst)))
            }
            Err(e) => match &entry.sock {
                Sock::Udp(_) => {
                    // A datagram the OS refused (EMSGSIZE, no route, EACCES): the pipe lives on.
                    log::debug!(
                        "{pipe}: datagram of {} bytes to {dst} refused: {e}",
                        buf.len()
                    );
                    core.send_error = Some(e);
                }
                _ => {
                    core.engine.handle_error(now, pipe, e.to_string());
                    while core.engine.poll_transmit_for(pipe).is_some() {}
                    return true;
                }
            },
        }
    }
    if drained {
        if let Some(e) = core.entries.get(&pipe) {
            e.writable.notify(usize::MAX);
        }
    }
    true
}
