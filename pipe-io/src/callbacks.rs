//! Callback registry and dispatch.
//!
//! Callbacks of one pipe run in order, one at a time, awaited, on a worker task that exists
//! only while the pipe has jobs queued (no task per message, none for idle pipes). The queue is
//! bounded by the engine (`max_callback_jobs`, `max_callback_bytes`, a server's
//! `max_server_bytes`): past a cap the engine pauses the pipe's reading, so a slow callback
//! slows its own connection (backpressure). A panicking callback is caught and logged; the
//! pipe goes on. Because the worker is not the pipe's I/O task, a callback may send, recv,
//! link or close on its own pipe without deadlocking.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Waker};

use futures_lite::FutureExt;
use pipe_core::{EndReason, Message, PipeId, SubId};

use crate::group::{Entry, Group, GroupState};
use crate::pipe::Pipe;
use crate::runtime::{BoxFuture, Runtime};

/// Identifies a registered callback, for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallbackId(pub(crate) u64);

pub(crate) type MsgFn<R> = Arc<dyn Fn(Message, Pipe<R>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type UpFn<R> = Arc<dyn Fn(Pipe<R>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type EndFn<R> = Arc<dyn Fn(EndReason, Pipe<R>) -> BoxFuture<()> + Send + Sync>;

/// Wrap an async closure as a message callback.
pub(crate) fn msg_fn<R: Runtime, F, Fut>(f: F) -> MsgFn<R>
where
    F: Fn(Message, Pipe<R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |m, p| Box::pin(f(m, p)))
}

/// Wrap an async closure as an up callback.
pub(crate) fn up_fn<R: Runtime, F, Fut>(f: F) -> UpFn<R>
where
    F: Fn(Pipe<R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |p| Box::pin(f(p)))
}

/// Wrap an async closure as an end callback.
pub(crate) fn end_fn<R: Runtime, F, Fut>(f: F) -> EndFn<R>
where
    F: Fn(EndReason, Pipe<R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |r, p| Box::pin(f(r, p)))
}

/// A copy-on-write list of callbacks that allocates nothing while empty: most pipes have no
/// callbacks of most kinds, and a client's set is made twice on open (its builder's and its
/// group's), which with five `Arc<Vec>`s cost ten allocations per connection.
pub(crate) struct CbList<T>(Option<Arc<Vec<T>>>);

impl<T> CbList<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.as_deref().map_or(&[][..], Vec::as_slice).iter()
    }

    /// The list to edit: copied first if a running job holds a snapshot of it.
    pub(crate) fn make_mut(&mut self) -> &mut Vec<T>
    where
        T: Clone,
    {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool)
    where
        T: Clone,
    {
        if let Some(list) = &mut self.0 {
            Arc::make_mut(list).retain(keep);
        }
    }
}

impl<T> Default for CbList<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Clone for CbList<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The callbacks of one pipe. Lists are copy-on-write so a worker can snapshot them cheaply.
pub(crate) struct Callbacks<R: Runtime> {
    pub(crate) msg: CbList<(CallbackId, MsgFn<R>)>,
    pub(crate) up: CbList<(CallbackId, UpFn<R>)>,
    pub(crate) end: CbList<(CallbackId, EndFn<R>)>,
    /// Listener only: run for each accepted connection before it reads.
    pub(crate) accept: CbList<(CallbackId, UpFn<R>)>,
    /// The pipe's subscription handlers (`Pipe::subscribe_with`), one per subscription.
    pub(crate) sub: CbList<(SubId, MsgFn<R>)>,
}

impl<R: Runtime> Callbacks<R> {
    /// A listener's message or end callbacks serve its connections, P2PD's way (the peer's
    /// FIN ends a connection once nothing may answer); without them only `accept()` can,
    /// and its user holds each connection like a `TcpStream` (`pipe_core::Engine::user_acts`).
    pub(crate) fn serve_connections(&self) -> bool {
        !self.msg.is_empty() || !self.end.is_empty()
    }
}

impl<R: Runtime> Default for Callbacks<R> {
    fn default() -> Self {
        Self {
            msg: CbList::default(),
            up: CbList::default(),
            end: CbList::default(),
            accept: CbList::default(),
            sub: CbList::default(),
        }
    }
}

impl<R: Runtime> Clone for Callbacks<R> {
    fn clone(&self) -> Self {
        Self {
            msg: self.msg.clone(),
            up: self.up.clone(),
            end: self.end.clone(),
            accept: self.accept.clone(),
            sub: self.sub.clone(),
        }
    }
}

/// A queued callback invocation.
pub(crate) enum Job<R: Runtime> {
    Up,
    Msg(Message),
    /// The end callbacks; with `Some`, only that one (an end callback added after the end).
    End(EndReason, Option<EndFn<R>>),
    /// A subscription's handler (the engine's `SubMessage`), after the message callbacks.
    Sub(SubId, Message),
}

impl<R: Runtime> Job<R> {
    /// Does `c` have a callback this job would run?
    pub(crate) fn has_callbacks(&self, c: &Callbacks<R>) -> bool {
        match self {
            Job::Up => !c.up.is_empty(),
            Job::Msg(_) => !c.msg.is_empty(),
            Job::End(_, Some(_)) => true,
            Job::End(_, None) => !c.end.is_empty(),
            Job::Sub(sub, _) => c.sub.iter().any(|(s, _)| s == sub),
        }
    }
}

/// The job queue of one pipe; `running` while a worker (or the I/O task) runs it.
pub(crate) struct JobQueue<R: Runtime> {
    pub(crate) jobs: VecDeque<Job<R>>,
    pub(crate) running: bool,
}

impl<R: Runtime> Default for JobQueue<R> {
    fn default() -> Self {
        Self {
            jobs: VecDeque::new(),
            running: false,
        }
    }
}

/// Run one job: every callback of its kind, in registration order, the listener's first for
/// an accepted connection. Panics are caught per callback.
pub(crate) async fn run_job<R: Runtime>(
    job: Job<R>,
    own: Option<Callbacks<R>>,
    parent: Option<Callbacks<R>>,
    pipe: Pipe<R>,
) {
    let id = pipe.id();
    let sets = parent.iter().chain(own.iter());
    match job {
        Job::Up => {
            for set in sets {
                for (_, f) in set.up.iter() {
                    guarded(id, f(pipe.clone())).await;
                }
            }
        }
        Job::Msg(msg) => {
            // The last callback takes the message itself: a clone of a message read into
            // its own buffer would allocate its shared header.
            let total: usize = parent.iter().chain(own.iter()).map(|c| c.msg.len()).sum();
            let (mut msg, mut n) = (Some(msg), 0);
            for set in sets {
                for (_, f) in set.msg.iter() {
                    n += 1;
                    let m = if n == total { msg.take() } else { msg.clone() };
                    if let Some(m) = m {
                        guarded(id, f(m, pipe.clone())).await;
                    }
                }
            }
        }
        Job::End(reason, Some(f)) => guarded(id, f(reason, pipe)).await,
        Job::End(reason, None) => {
            for set in sets {
                for (_, f) in set.end.iter() {
                    guarded(id, f(reason.clone(), pipe.clone())).await;
                }
            }
        }
        // Subscriptions are the pipe's own: only its own handler.
        Job::Sub(sub, msg) => {
            let f = own.and_then(|c| {
                c.sub
                    .iter()
                    .find(|(s, _)| *s == sub)
                    .map(|(_, f)| f.clone())
            });
            if let Some(f) = f {
                guarded(id, f(msg, pipe)).await;
            }
        }
    }
}

/// Run a listener's accept hooks for a new connection, in order.
pub(crate) async fn run_accept_hooks<R: Runtime>(
    hooks: CbList<(CallbackId, UpFn<R>)>,
    pipe: Pipe<R>,
) {
    for (_, f) in hooks.iter() {
        guarded(pipe.id(), f(pipe.clone())).await;
    }
}

async fn guarded(pipe: PipeId, fut: BoxFuture<()>) {
    if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
        log_panic(pipe, &*panic);
    }
}

fn log_panic(pipe: PipeId, panic: &(dyn std::any::Any + Send)) {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    log::error!("{pipe}: a callback panicked: {what}; the pipe goes on");
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

/// Run `f` with inline callback jobs forbidden (user code inside an inline job).
fn without_inline_jobs<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INLINE_JOBS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(INLINE_JOBS.with(|c| c.replace(false)));
    f()
}

/// What a finished job reports to the engine: the message callbacks of a message, or a
/// subscription handler, each with the message's length.
#[derive(Clone, Copy)]
pub(crate) enum Done {
    Msg(usize),
    Sub(usize),
}

/// A started job and what it reports when done, if anything.
pub(crate) type Started<R> = (Run<R>, Option<Done>);

/// A started job: its future, or a lone message callback to call.
pub(crate) enum Run<R: Runtime> {
    Fut(BoxFuture<()>),
    /// One message callback in all (an echo server's): its own future is the job, with no job
    /// future, box or snapshot of the lists around it. It is called in [`Run::future`],
    /// outside the group's lock, like every callback: one that reads its pipe's stats before
    /// returning its future must not find the lock held. Its pipe handle is made there too:
    /// a started job is moved several times on its way (the lock's guard, the inline runner),
    /// and with the handle in it those moves were `memcpy` calls (callgrind, UDP stream
    /// server: 110 instructions a message).
    Call(MsgFn<R>, Message),
}

impl<R: Runtime> Run<R> {
    /// The job's future. A callback that panics before it returns one panics here: logged,
    /// and the job is done.
    fn future(self, group: &Arc<Group<R>>, pipe: PipeId, entry: &Arc<Entry>) -> BoxFuture<()> {
        match self {
            Run::Fut(f) => f,
            Run::Call(f, msg) => {
                let handle = Pipe::handle(group.clone(), pipe, entry.clone());
                std::panic::catch_unwind(AssertUnwindSafe(|| f(msg, handle))).unwrap_or_else(
                    |panic| {
                        log_panic(pipe, &*panic);
                        Box::pin(std::future::ready(()))
                    },
                )
            }
        }
    }
}

impl<R: Runtime> Group<R> {
    /// Start the job queues that became runnable. On a pipe's I/O task (the read path) the
    /// jobs run right here, each polled once: a callback that finishes at once (an echo's
    /// send) costs no task at all. A callback that must wait moves, with the rest of the
    /// queue, to a worker task, so the I/O task never waits on user code. Anywhere else (a
    /// user's `close()`, a drop) a worker is spawned: user code never runs inside the caller.
    pub(crate) fn start_jobs(
        self: &Arc<Self>,
        starts: impl IntoIterator<Item = (PipeId, Arc<Entry>, Started<R>)>,
    ) {
        for (pipe, entry, first) in starts {
            if INLINE_JOBS.with(Cell::get) {
                self.run_jobs_inline(pipe, entry, first);
            } else {
                let group = self.clone();
                self.rt.spawn(Box::pin(async move {
                    group.job_worker(pipe, entry, first).await
                }));
            }
        }
    }

    /// Run a pipe's jobs here, `first` (its first job, made under the lock that queued it)
    /// before the queue.
    fn run_jobs_inline(self: &Arc<Self>, pipe: PipeId, entry: Arc<Entry>, first: Started<R>) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut next, mut done) = (Some(first), None);
        loop {
            let Some((run, len)) = next
                .take()
                .or_else(|| self.next_job(pipe, &entry, done.take()))
            else {
                return;
            };
            let mut job = without_inline_jobs(|| run.future(self, pipe, &entry));
            // User code runs here: anything it starts (a drop that closes another pipe, whose
            // end callbacks take a lock this callback holds) goes to a worker, never inline.
            // A panic ends the job (a lone callback's future is the job), not the I/O task.
            let pending = without_inline_jobs(|| {
                std::panic::catch_unwind(AssertUnwindSafe(|| job.as_mut().poll(&mut cx)))
                    .unwrap_or_else(|panic| {
                        log_panic(pipe, &*panic);
                        std::task::Poll::Ready(())
                    })
                    .is_pending()
            });
            if pending {
                let group = self.clone();
                self.rt.spawn(Box::pin(async move {
                    group.job_worker(pipe, entry, (Run::Fut(job), len)).await
                }));
                return;
            }
            done = Some(len);
        }
    }

    /// Run a pipe's callback jobs in order, `first` (already started) and then its queue,
    /// then exit. The entry is captured at start: the pipe's socket may be closed while its
    /// last jobs (its End among them) still run.
    async fn job_worker(self: Arc<Self>, pipe: PipeId, entry: Arc<Entry>, first: Started<R>) {
        let (run, len) = first;
        guarded(pipe, run.future(&self, pipe, &entry)).await;
        let mut done = Some(len);
        while let Some((run, len)) = self.next_job(pipe, &entry, done.take()) {
            guarded(pipe, run.future(&self, pipe, &entry)).await;
            done = Some(len);
        }
    }

    /// Report the job that finished (`done`: the length of its message, if it had one), then
    /// give the next job of a pipe as a future, or `None` (and the queue is retired).
    fn next_job(
        self: &Arc<Self>,
        pipe: PipeId,
        entry: &Arc<Entry>,
        done: Option<Option<Done>>,
    ) -> Option<Started<R>> {
        let mut g = self.lock();
        match done {
            Some(Some(Done::Msg(len))) => {
                g.engine.handle_callback_done(pipe, len);
                self.pump(&mut g);
            }
            Some(Some(Done::Sub(len))) => {
                g.engine.handle_handler_done(pipe, len);
                self.pump(&mut g);
            }
            _ => {}
        }
        let slot = g.slots.get_mut(&pipe)?;
        let Some(job) = slot.jobs.jobs.pop_front() else {
            slot.jobs.running = false;
            // An idle connection keeps no job buffer (72 bytes each).
            if slot.jobs.jobs.capacity() != 0 {
                slot.jobs.jobs = Default::default();
            }
            Self::forget_if_done(&mut g, pipe);
            return None;
        };
        Some(self.started(&g, pipe, entry, job))
    }

    /// A job as a future over the callbacks it runs (a snapshot: edits made while it runs
    /// apply from the next job), and what it reports when done.
    pub(crate) fn started(
        self: &Arc<Self>,
        g: &GroupState<R>,
        pipe: PipeId,
        entry: &Arc<Entry>,
        job: Job<R>,
    ) -> Started<R> {
        let len = match &job {
            Job::Msg(m) => Some(Done::Msg(m.data.len())),
            Job::Sub(_, m) => Some(Done::Sub(m.data.len())),
            _ => None,
        };
        let (own, parent) = (g.own_cbs(pipe), g.parent_cbs(pipe));
        if let Job::Msg(msg) = job {
            let mut fs = parent.into_iter().chain(own).flat_map(|c| c.msg.iter());
            if let (Some((_, f)), None) = (fs.next(), fs.next()) {
                return (Run::Call(f.clone(), msg), len);
            }
            let handle = Pipe::handle(self.clone(), pipe, entry.clone());
            let (own, parent) = (own.cloned(), parent.cloned());
            let job = run_job(Job::Msg(msg), own, parent, handle);
            return (Run::Fut(Box::pin(job)), len);
        }
        let (own, parent) = (own.cloned(), parent.cloned());
        let handle = Pipe::handle(self.clone(), pipe, entry.clone());
        (Run::Fut(Box::pin(run_job(job, own, parent, handle))), len)
    }
}
