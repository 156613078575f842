//! One pipe group's driver state: the engine, and per pipe only what is I/O — its socket, its
//! wake-up signals, its callbacks and their job queue. Everything else about a pipe (deadlines,
//! caps, reliable outcomes, the listener–connection relation, when its socket may close) is
//! the engine's. One mutex guards the group; it is never held across an `.await`.
//!
//! Every input and command goes through [`Group::pump`]: write what the engine queued, act on
//! its events, and re-arm the group's timer when `poll_timeout` moved earlier. A pipe is
//! forgotten in one place, [`Group::forget_if_done`], once its socket is closed (after the
//! engine's `Released`) and its callback jobs have run.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Signal;
use pipe_core::{EndReason, Engine, Event, Kind, LinkId, PipeId, Proto, TargetToken};

use crate::callbacks::{Callbacks, Job, JobQueue};
use crate::pipe::Pipe;
use crate::runtime::{Runtime, TcpIo, UdpIo};

pub(crate) use pipe_core::idmap::{IdMap, IdTable};

/// A pipe's wake-up signals and the flags tasks check without the lock. Waiters `listen()`
/// before checking state, so no wake-up is lost. Handles hold it, so it outlives the slot.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) proto: Proto,
    /// Subscription queues gained messages, or the pipe ended.
    pub(crate) readable: Signal,
    /// The outbound buffer drained, or the pipe ended.
    pub(crate) writable: Signal,
    /// A listener's: an accepted connection is waiting, or the listener ended. A reliable
    /// UDP pipe's: a reliable send finished. One signal for both (a pipe is never both; 8
    /// bytes less in every entry).
    pub(crate) accept_or_reliable: Signal,
    /// The pipe ended and its socket is closed.
    pub(crate) closed: Signal,
    /// The waker slots of the I/O task ([`Entry::wake_io`]) and of the `recv` holding
    /// reading ([`Entry::lender`]), one lock for both.
    wakers: Mutex<[Option<std::task::Waker>; 2]>,
    /// Their flags (in what was the entry's padding).
    woken: [AtomicBool; 2],
    pub(crate) ended: AtomicBool,
    /// The engine released the socket: nothing more to write.
    pub(crate) released: AtomicBool,
    pub(crate) io_done: AtomicBool,
    /// The engine paused reading (callback caps, server budget); checked without the lock.
    pub(crate) paused: AtomicBool,
    /// A listener backing off after running out of descriptors.
    pub(crate) starved: AtomicBool,
    /// The pipe is up (a TLS pipe: its handshake is done); `writable` is notified.
    pub(crate) up: AtomicBool,
    /// The socket's write side was shut (the engine's `WriteShut`); `writable` is notified.
    pub(crate) write_shut: AtomicBool,
    /// Who reads the socket now ([`Reading`]): nobody, the I/O task, a client's `recv` that
    /// took reading over while it waits, or nobody any more (end of stream, or the pipe
    /// ended). One reader at a time, so bytes reach the engine in order.
    reading: AtomicU8,
    /// The I/O task found reading held by a `recv`: the `recv` wakes it when it gives
    /// reading back.
    io_deferred: AtomicBool,
    /// The socket turned readable while a `recv` held reading, on a runtime whose sockets
    /// keep the entry as their read waker ([`crate::Readiness::HANDOFF_WAKES_REPLACED`]): the
    /// `recv` wakes the I/O task when it gives reading back.
    read_event: AtomicBool,
    /// The socket turned readable while the I/O task held reading or waited for it (same
    /// runtimes as `read_event`): its next readiness poll counts as readable even when the
    /// runtime answers `Pending` ([`Entry::take_io_read_event`]).
    io_read_event: AtomicBool,
    /// Why the pipe ended, kept for end callbacks added later: 0 not yet, a reason without
    /// data as its index in [`PLAIN_REASONS`] + 1, or [`BOXED_REASON`], the reason then in
    /// `boxed`. The common ends (closed here, by the peer, reset) allocate nothing; a box
    /// for every end was one allocation per connection.
    reason: AtomicU8,
    /// A reason with data (boxed: 24 bytes less for every open pipe).
    boxed: OnceLock<Box<EndReason>>,
}

/// The reasons without data, kept as a code in the entry.
static PLAIN_REASONS: [EndReason; 6] = [
    EndReason::Local,
    EndReason::ServerClosed,
    EndReason::PeerClosed,
    EndReason::Reset,
    EndReason::IdleTimeout,
    EndReason::FirstMessageTimeout,
];

/// [`Entry::reason`]: the reason is in [`Entry::boxed`].
const BOXED_REASON: u8 = u8::MAX;

impl Entry {
    pub(crate) fn new(proto: Proto) -> Arc<Self> {
        Arc::new(Self {
            proto,
            readable: Signal::new(),
            writable: Signal::new(),
            accept_or_reliable: Signal::new(),
            closed: Signal::new(),
            wakers: Mutex::default(),
            woken: Default::default(),
            ended: AtomicBool::new(false),
            released: AtomicBool::new(false),
            io_done: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            up: AtomicBool::new(false),
            write_shut: AtomicBool::new(false),
            reading: AtomicU8::new(FREE),
            io_deferred: AtomicBool::new(false),
            read_event: AtomicBool::new(false),
            io_read_event: AtomicBool::new(false),
            reason: AtomicU8::new(0),
            boxed: OnceLock::new(),
        })
    }

    /// The entry of a pipe that is already closed and forgotten.
    pub(crate) fn gone(proto: Proto) -> Arc<Self> {
        let e = Self::new(proto);
        e.ended.store(true, Ordering::Release);
        e.released.store(true, Ordering::Release);
        e.io_done.store(true, Ordering::Release);
        e
    }

    /// Why the pipe ended, once it has.
    pub(crate) fn end_reason(&self) -> Option<&EndReason> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            BOXED_REASON => self.boxed.get().map(|r| &**r),
            code => PLAIN_REASONS.get(usize::from(code) - 1),
        }
    }

    /// Keep why the pipe ended (the first reason only).
    fn set_end_reason(&self, reason: &EndReason) {
        if self.reason.load(Ordering::Acquire) != 0 {
            return;
        }
        let code = match PLAIN_REASONS.iter().position(|r| r == reason) {
            Some(i) => i as u8 + 1,
            None => {
                let _ = self.boxed.set(Box::new(reason.clone()));
                BOXED_REASON
            }
        };
        self.reason.store(code, Ordering::Release);
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.io_done.load(Ordering::Acquire)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// The I/O task takes reading, for one read or one readiness poll.
    pub(crate) fn take_reading_io(&self) -> Reading {
        loop {
            match self
                .reading
                .compare_exchange(FREE, IO, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) | Err(IO) => return Reading::Taken,
                Err(CLOSED) => return Reading::Closed,
                Err(_) => {
                    // Lent to a `recv`: ask to be woken when it gives reading back. Checked
                    // again after the flag is set: a `recv` that gave it back before seeing
                    // the flag did not wake us (both sides are `SeqCst`).
                    self.io_deferred.store(true, Ordering::SeqCst);
                    if self.reading.load(Ordering::SeqCst) == RECV {
                        return Reading::Lent;
                    }
                }
            }
        }
    }

    /// The I/O task is done with its read or readiness poll.
    pub(crate) fn give_reading_io(&self) {
        let _ = self
            .reading
            .compare_exchange(IO, FREE, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Nothing more is read from this socket (end of stream, or the pipe ended).
    pub(crate) fn close_reading(&self) {
        self.reading.store(CLOSED, Ordering::SeqCst);
    }

    /// A `recv` takes reading over, if nobody holds it.
    pub(crate) fn take_reading_recv(&self) -> bool {
        self.reading
            .compare_exchange(FREE, RECV, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// A `recv` gives reading back (`closed`: it read the end of the stream, or the pipe
    /// ended). `handed`: the I/O task's waker now holds the socket's readability, so a task
    /// that found reading lent is woken by the socket like before. Wakes the I/O task if
    /// reading closed, if `wake`, or if it found reading lent and was not `handed` it.
    pub(crate) fn give_reading_recv(&self, closed: bool, handed: bool, wake: bool) {
        let to = if closed { CLOSED } else { FREE };
        let _ = self
            .reading
            .compare_exchange(RECV, to, Ordering::SeqCst, Ordering::SeqCst);
        let deferred = self.io_deferred.swap(false, Ordering::SeqCst);
        let event = self.read_event.swap(false, Ordering::SeqCst);
        if closed || wake || event || (deferred && !handed) {
            self.wake_io().notify(1);
        }
    }

    /// Take the readiness event noted while a `recv` held reading: the `recv` looks at the
    /// socket now. True: there was one, so a read is worth trying even if the runtime's
    /// readiness answers `Pending` (below).
    pub(crate) fn take_read_event(&self) -> bool {
        self.read_event.swap(false, Ordering::SeqCst)
    }

    /// Take the readiness event noted for the I/O task. async-io ignores an event delivered
    /// in the reactor tick during which the waker was registered (`poll_readable` says
    /// `Pending` and asks epoll again, which answers at once on the next tick): with an
    /// executor on two threads, where the reactor ticks on one while tasks register on the
    /// other, that was a second wake-up, an `epoll_pwait` round and a context switch for
    /// nearly every message. The entry's waker is woken only by the socket's readiness (every
    /// poll uses this same waker, so none is ever replaced), so its wake-up is the event.
    pub(crate) fn take_io_read_event(&self) -> bool {
        self.io_read_event.swap(false, Ordering::SeqCst)
    }

    /// The socket's one read waker on runtimes whose readiness wakes the waker it replaces
    /// ([`crate::Readiness::HANDOFF_WAKES_REPLACED`]): the I/O task and a `recv` holding reading
    /// both poll readiness with it, so neither replaces the other's, and each wake-up goes to
    /// whoever holds reading ([`Entry::socket_readable`]).
    pub(crate) fn read_waker(self: &Arc<Self>) -> std::task::Waker {
        std::task::Waker::from(self.clone())
    }

    /// The pipe's I/O task has something to do (flush, timer change, end, release, the
    /// engine resumed its reading).
    pub(crate) fn wake_io(&self) -> IoWake<'_, IO_WAITER> {
        IoWake(self)
    }

    /// The `recv` holding reading (one at a time): the news `readable` carries, and the
    /// socket's readiness while it holds reading. Its wait is on the per-message path.
    pub(crate) fn lender(&self) -> IoWake<'_, LENDER> {
        IoWake(self)
    }

    /// Wake everyone waiting for messages or the pipe's end: `recv`s, streams, and the
    /// `recv` holding reading.
    pub(crate) fn wake_readers(&self) {
        wake(&self.readable);
        self.lender().notify(1);
    }

    /// The socket turned readable (through [`Entry::read_waker`]). A `recv` holding reading
    /// waits on `lender`; otherwise the I/O task is woken if it waits (one that runs polls
    /// readiness itself before it waits again).
    fn socket_readable(&self) {
        if self.reading.load(Ordering::SeqCst) == RECV {
            // Set before the second look: a `recv` that gives reading back in between sees
            // the flag and wakes the I/O task (`give_reading_recv`).
            self.read_event.store(true, Ordering::SeqCst);
            if self.reading.load(Ordering::SeqCst) == RECV {
                self.lender().notify(1);
                return;
            }
            if !self.read_event.swap(false, Ordering::SeqCst) {
                // The `recv` that gave reading back took the flag and woke the I/O task.
                return;
            }
        }
        self.io_read_event.store(true, Ordering::SeqCst);
        if let Some(w) = self.wake_io().waker() {
            w.wake();
        }
    }

    pub(crate) fn wake_all(&self) {
        self.wake_users();
        self.wake_io().notify(usize::MAX);
    }

    /// Wake everyone but the I/O task.
    fn wake_users(&self) {
        for s in [&self.readable, &self.writable, &self.accept_or_reliable] {
            wake(s);
        }
        self.lender().notify(usize::MAX);
    }
}

impl std::task::Wake for Entry {
    fn wake(self: Arc<Self>) {
        self.socket_readable();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.socket_readable();
    }
}

const FREE: u8 = 0;
const IO: u8 = 1;
const RECV: u8 = 2;
const CLOSED: u8 = 3;

/// What [`Entry::take_reading_io`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// The I/O task holds reading.
    Taken,
    /// A `recv` holds it; the I/O task is woken when it gives it back.
    Lent,
    /// Nothing more is read.
    Closed,
}

const IO_WAITER: usize = 0;
const LENDER: usize = 1;

/// One of an entry's two wake-ups with one waiter each: the pipe's I/O task
/// ([`Entry::wake_io`]) and the `recv` holding its reading ([`Entry::lender`]). Each is a flag
/// and a waker slot, inline in the entry (the slots share one lock). An idle connection's
/// task waits on its own; an `event_listener::Event` would allocate a list and a listener
/// for that (128 bytes per connection), and registering with one and leaving it again cost
/// the `recv` holding reading some 340 instructions a round trip (a locked list). Used like
/// an event: `listen()` (which clears the flag) before checking state, then await; a
/// `notify` in between is kept in the flag, so it is not lost. A view of the entry, one
/// pointer wide: the I/O task's futures hold these across their waits, and a wider one
/// grew every connection's task by a 128-byte step of tokio's aligned task cells.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoWake<'a, const I: usize>(&'a Entry);

impl<'a, const I: usize> IoWake<'a, I> {
    fn slots(&self) -> std::sync::MutexGuard<'a, [Option<std::task::Waker>; 2]> {
        self.0.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_set(&self) -> bool {
        self.0.woken[I].load(Ordering::SeqCst)
    }

    /// Wake the waiter (the count is accepted for symmetry with the other signals: there is
    /// one waiter).
    pub(crate) fn notify(&self, _n: usize) {
        self.0.woken[I].store(true, Ordering::SeqCst);
        let waker = self.slots()[I].take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The waiter's waker, while it waits.
    pub(crate) fn waker(&self) -> Option<std::task::Waker> {
        self.slots()[I].clone()
    }

    /// Keep `w` as the waiter's waker (the I/O task: before it polls readiness through the
    /// entry's waker, which wakes it with this one).
    pub(crate) fn register(&self, w: &std::task::Waker) {
        let mut slots = self.slots();
        match &mut slots[I] {
            Some(old) if old.will_wake(w) => {}
            other => *other = Some(w.clone()),
        }
    }

    /// Start listening: the returned future completes at the next `notify`.
    pub(crate) fn listen(self) -> IoWait<'a, I> {
        self.0.woken[I].store(false, Ordering::SeqCst);
        IoWait(self)
    }

    /// [`IoWake::listen`] for a waiter that is not always waiting (the `recv` holding
    /// reading): the wait takes its waker out of the slot when it ends or is dropped, so
    /// that a `notify` while that task runs (its own read feeding the engine) does not wake
    /// it again for nothing.
    pub(crate) fn listen_once(self) -> OnceWait<'a, I> {
        OnceWait(self.listen())
    }

    pub(crate) fn unregister(&self) {
        let waker = self.slots()[I].take();
        drop(waker);
    }
}

/// A wait for [`IoWake::notify`].
#[derive(Debug)]
pub(crate) struct IoWait<'a, const I: usize>(IoWake<'a, I>);

impl<const I: usize> std::future::Future for IoWait<'_, I> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let w = self.0;
        if w.is_set() {
            return std::task::Poll::Ready(());
        }
        w.register(cx.waker());
        // Checked again after the waker is in place: a notify that came between the first
        // check and the store found no waker, but set the flag.
        if w.is_set() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// A wait from [`IoWake::listen_once`].
#[derive(Debug)]
pub(crate) struct OnceWait<'a, const I: usize>(IoWait<'a, I>);

impl<const I: usize> std::future::Future for OnceWait<'_, I> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<const I: usize> Drop for OnceWait<'_, I> {
    fn drop(&mut self) {
        (self.0).0.unregister();
    }
}

/// A pipe's socket.
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
    pub(crate) async fn writable(&self) -> io::Result<()> {
        use crate::runtime::Readiness;
        match self {
            Sock::Udp(s) => s.writable().await,
            Sock::Tcp(s) => s.writable().await,
            Sock::Listener(_) => futures_lite::future::pending().await,
        }
    }
}

/// What the driver keeps per pipe: I/O only.
pub(crate) struct Slot<R: Runtime> {
    /// `None` once the engine released it (the I/O task drops the last reference).
    pub(crate) sock: Option<Sock<R>>,
    pub(crate) entry: Arc<Entry>,
    /// An accepted connection's own callbacks (the group's are in [`GroupState::cbs`]).
    pub(crate) cbs: Option<Box<Callbacks<R>>>,
    pub(crate) jobs: JobQueue<R>,
}

/// A forward to a pipe of another group, performed after the lock is released.
pub(crate) struct Forward<R: Runtime> {
    pub(crate) from: PipeId,
    pub(crate) link: LinkId,
    pub(crate) target: Pipe<R>,
    pub(crate) dest: Option<SocketAddr>,
    pub(crate) data: Bytes,
    /// Not data: shut the target's write side (half-close through a relay pair), in order
    /// with the forwards before it.
    pub(crate) shutdown: bool,
}

pub(crate) struct GroupState<R: Runtime> {
    pub(crate) engine: Engine,
    pub(crate) slots: IdTable<PipeId, Slot<R>>,
    /// The pipe the group was opened for, and its callbacks (its connections run them too).
    pub(crate) first: Option<PipeId>,
    pub(crate) cbs: Callbacks<R>,
    /// Links to pipes of other groups: the driver's handle on each target, by the engine's
    /// token, until the engine says `Unlinked`.
    pub(crate) link_targets: IdMap<TargetToken, Pipe<R>>,
    pub(crate) next_cb: u64,
    /// The pipe whose I/O task sleeps on the engine's timer, and the deadline it sleeps to.
    pub(crate) timer_task: Option<PipeId>,
    pub(crate) armed: Option<Instant>,
    /// Job queues that became runnable under the lock, started when it is released, each
    /// with its first job (which so needs no queue of its own).
    pub(crate) starts: Vec<(PipeId, Arc<Entry>, Job<R>)>,
}

/// The group's one runtime timer, for the engine's next deadline. It is made again only when
/// that deadline changes: the engine re-arms lazily (a deadline moved later by activity stays
/// armed until it fires), so a task woken by every message does not make, register and drop
/// a runtime timer each time, and `recv` waits need none of their own
/// ([`pipe_core::Engine::recv_wait`]). Whichever task holds the group's timer polls it.
#[derive(Default)]
pub(crate) struct Sleeper {
    at: Option<Instant>,
    sleep: Option<crate::runtime::BoxFuture<()>>,
}

impl Sleeper {
    /// Poll a timer for `at`: the kept one if it is for `at` and has not fired yet.
    pub(crate) fn poll_until<R: Runtime>(
        &mut self,
        rt: &R,
        at: Instant,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.at != Some(at) {
            self.sleep = None;
        }
        self.at = Some(at);
        let sleep = self.sleep.get_or_insert_with(|| rt.sleep_until(at));
        let ready = sleep.as_mut().poll(cx);
        if ready.is_ready() {
            // A fired timer is not polled again; the next wait makes a new one.
            (self.at, self.sleep) = (None, None);
        }
        ready
    }
}

impl<R: Runtime> GroupState<R> {
    /// A pipe's own callbacks: the group's for its first pipe, a connection's own otherwise.
    pub(crate) fn own_cbs(&self, pipe: PipeId) -> Option<&Callbacks<R>> {
        if self.first == Some(pipe) {
            Some(&self.cbs)
        } else {
            self.slots.get(&pipe).and_then(|s| s.cbs.as_deref())
        }
    }

    /// The listener's callbacks an accepted connection runs before its own. A group is a
    /// client alone or a listener with its connections, so every pipe but the first is a
    /// connection of the first (known even after the engine forgot it).
    pub(crate) fn parent_cbs(&self, pipe: PipeId) -> Option<&Callbacks<R>> {
        (self.first.is_some() && self.first != Some(pipe)).then_some(&self.cbs)
    }

    pub(crate) fn entry(&self, pipe: PipeId) -> Option<&Arc<Entry>> {
        self.slots.get(&pipe).map(|s| &s.entry)
    }
}

/// The group lock. Dropping it releases the lock, then starts the callback jobs queued while
/// it was held.
pub(crate) struct GroupGuard<'a, R: Runtime> {
    guard: Option<MutexGuard<'a, GroupState<R>>>,
    group: &'a Arc<Group<R>>,
}

impl<R: Runtime> std::ops::Deref for GroupGuard<'_, R> {
    type Target = GroupState<R>;
    fn deref(&self) -> &GroupState<R> {
        self.guard.as_deref().expect("guard is held until drop")
    }
}

impl<R: Runtime> std::ops::DerefMut for GroupGuard<'_, R> {
    fn deref_mut(&mut self) -> &mut GroupState<R> {
        self.guard.as_deref_mut().expect("guard is held until drop")
    }
}

impl<R: Runtime> Drop for GroupGuard<'_, R> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        if guard.starts.is_empty() {
            return;
        }
        // The first jobs are made into futures under the lock (their callbacks' snapshot),
        // and run after it is released. One start (a message's callbacks) is the common
        // case: the list keeps its buffer.
        let group = self.group;
        let start = |g: &GroupState<R>, (pipe, entry, job): (PipeId, Arc<Entry>, Job<R>)| {
            let first = group.started(g, pipe, &entry, job);
            (pipe, entry, first)
        };
        if guard.starts.len() == 1 {
            let one = guard.starts.pop().map(|s| start(&guard, s));
            drop(guard);
            group.start_jobs(one);
            return;
        }
        let taken = std::mem::take(&mut guard.starts);
        let starts: Vec<_> = taken.into_iter().map(|s| start(&guard, s)).collect();
        drop(guard);
        group.start_jobs(starts);
    }
}

/// A pipe group: the engine and its pipes' I/O, shared by the group's handles and tasks.
pub(crate) struct Group<R: Runtime> {
    pub(crate) rt: R,
    state: Mutex<GroupState<R>>,
    /// The runtime timer the timer task sleeps on, kept across its wake-ups. Its own lock:
    /// only the timer task polls it, and polling under the group's lock made a busy
    /// listener (TLS handshakes under that lock) accept more slowly.
    pub(crate) sleeper: Mutex<Sleeper>,
    /// Where the group's client pipe's I/O task is ([`lazy`]).
    lazy: AtomicU8,
    /// The owning handles of the pipe the group was opened for (`Pipe`'s `Owning::First`).
    pub(crate) first_owners: AtomicUsize,
}

/// A client pipe's I/O task is started when there is something for it to do, not at open
/// (`tasks::start`): a client that connects and closes, or that only sends, never needs one
/// (on tokio that is an aligned task cell, a spawn, a first poll and an exit: about a quarter
/// of what opening and closing a client cost). Until then the group itself is the I/O task's
/// waker ([`Entry::wake_io`]'s slot; `impl Wake for Group`): whatever would have woken the
/// task (the socket's readiness, through the entry's read waker registered at open; the
/// group's timer; output the socket did not take; a `recv` giving reading back) starts it
/// instead. `close()` of such a pipe closes the socket itself when the engine releases it at
/// once (nothing left to write): no task, no hop.
pub(crate) mod lazy {
    /// The group's pipe has its task from the start (listeners, tasks started at once).
    pub(crate) const NONE: u8 = 0;
    /// The client's task is not started; the group waits in its entry's I/O waker slot.
    pub(crate) const WAITING: u8 = 1;
    /// It was started.
    pub(crate) const STARTED: u8 = 2;
    /// The socket was closed without one (`close()` or the last handle's drop).
    pub(crate) const CLOSED: u8 = 3;
}

impl<R: Runtime> std::task::Wake for Group<R> {
    fn wake(self: Arc<Self>) {
        self.start_lazy_task(None);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.start_lazy_task(None);
    }
}

impl<R: Runtime> std::fmt::Debug for Group<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("rt", &self.rt)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Group<R> {
    /// A group with a new engine (`seed`: the engine's randomness). The engine is made here,
    /// in the expression that fills the `Arc`: passed in made, its kilobyte (the first
    /// pipe's state is inline) was copied on each move on the way, three in all (callgrind,
    /// connect+close: 220 instructions a client connection).
    pub(crate) fn new(rt: R, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            rt,
            sleeper: Mutex::default(),
            lazy: AtomicU8::new(lazy::NONE),
            first_owners: AtomicUsize::new(0),
            state: Mutex::new(GroupState {
                engine: Engine::new(seed),
                slots: IdTable::default(),
                first: None,
                cbs: Callbacks::default(),
                link_targets: IdMap::default(),
                next_cb: 1,
                timer_task: None,
                armed: None,
                starts: Vec::new(),
            }),
        })
    }

    /// Lock the group. Callback jobs that became runnable while it was held are started when
    /// the guard is dropped, after the lock is released.
    pub(crate) fn lock(self: &Arc<Self>) -> GroupGuard<'_, R> {
        // A panic while holding the lock cannot leave the engine half-updated in a way that
        // matters more than losing the whole pipe group, so recover the guard.
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        GroupGuard {
            guard: Some(guard),
            group: self,
        }
    }

    /// Let the client pipe's I/O task start when it has something to do: from now on the
    /// group is its waker (`lazy`). Called by `tasks::start` under the lock, before the
    /// socket's readiness is registered.
    pub(crate) fn defer_task(self: &Arc<Self>, entry: &Entry) {
        self.lazy.store(lazy::WAITING, Ordering::SeqCst);
        entry
            .wake_io()
            .register(&std::task::Waker::from(self.clone()));
    }

    /// Start the client pipe's I/O task, once, if it was deferred and has not started. `g`:
    /// the group's state, when the caller holds the lock. Without it the lock is only
    /// tried (this is a waker, woken from under the lock too): when it is taken, the task
    /// is spawned from the pipe's slot at once; otherwise a first task does that under the
    /// lock and exits (`tasks::run_lazy`: a task spawned twice, never a task wrapping
    /// another, whose every poll would pay the wrapper). True when this call started it.
    pub(crate) fn start_lazy_task(self: &Arc<Self>, g: Option<&mut GroupState<R>>) -> bool {
        if self
            .lazy
            .compare_exchange(
                lazy::WAITING,
                lazy::STARTED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            return false;
        }
        match g {
            Some(g) => crate::tasks::spawn_deferred(self, g),
            None => match self.state.try_lock() {
                Ok(mut g) => crate::tasks::spawn_deferred(self, &mut g),
                Err(_) => self.rt.spawn_unboxed(crate::tasks::run_lazy(self.clone())),
            },
        }
        true
    }

    /// The deferred task of the group's pipe (a client group has one) has not started.
    fn is_lazy(&self) -> bool {
        self.lazy.load(Ordering::SeqCst) == lazy::WAITING
    }

    /// After any input or command: write what can be written, act on events, re-arm the
    /// timer. Returns the forwards to other groups, which need `.await` and so run after the
    /// lock is released.
    pub(crate) fn pump(self: &Arc<Self>, g: &mut GroupState<R>) -> Vec<Forward<R>> {
        let mut now = None;
        while let Some(pipe) = g.engine.poll_dirty() {
            let now = *now.get_or_insert_with(|| self.rt.now());
            let _ = flush(g, pipe, now, false);
        }
        let mut forwards = Vec::new();
        // A pipe without its I/O task (`lazy`) that ended in this pump, and one whose socket
        // this pump closed.
        let (mut lazy_end, mut lazy_closed) = (None, None);
        while let Some(ev) = g.engine.poll_event() {
            match ev {
                // A listener is not a peer: `up` greets connections (P2PD fires it per
                // connection), and UDP and TCP clients.
                Event::Up { pipe } if g.engine.kind(pipe) == Some(Kind::TcpListener) => {}
                Event::Up { pipe } => {
                    if let Some(e) = g.entry(pipe) {
                        e.up.store(true, Ordering::Release);
                        wake(&e.writable);
                    }
                    self.queue_job(g, pipe, Job::Up);
                }
                Event::Message { pipe, msg } => {
                    let len = msg.data.len();
                    if !self.queue_job(g, pipe, Job::Msg(msg)) {
                        g.engine.handle_callback_done(pipe, len);
                    }
                }
                // After the message's callbacks (the engine held it until they were done).
                Event::SubMessage { pipe, sub, msg } => {
                    let len = msg.data.len();
                    if !self.queue_job(g, pipe, Job::Sub(sub, msg)) {
                        g.engine.handle_handler_done(pipe, len);
                    }
                }
                // Readers check their own deadline against the clock.
                Event::Readable { pipe } | Event::RecvDue { pipe } => {
                    if let Some(e) = g.entry(pipe) {
                        e.wake_readers();
                    }
                }
                Event::Accepted { listener, .. } => notify(g, listener, |e| &e.accept_or_reliable),
                Event::Forward {
                    from,
                    link,
                    target,
                    dest,
                    data,
                } => {
                    if let Some(t) = g.link_targets.get(&target) {
                        forwards.push(Forward {
                            from,
                            link,
                            target: t.clone(),
                            dest,
                            data,
                            shutdown: false,
                        });
                    }
                }
                Event::ForwardShutdown { from, link, target } => {
                    if let Some(t) = g.link_targets.get(&target) {
                        forwards.push(Forward {
                            from,
                            link,
                            target: t.clone(),
                            dest: None,
                            data: Bytes::new(),
                            shutdown: true,
                        });
                    }
                }
                Event::WriteShut { pipe } => {
                    if let Some(slot) = g.slots.get(&pipe) {
                        if let Some(Sock::Tcp(s)) = &slot.sock {
                            if let Err(e) = s.shutdown_write() {
                                log::debug!("{pipe}: shutdown(Write): {e}");
                            }
                        }
                        slot.entry.write_shut.store(true, Ordering::Release);
                        wake(&slot.entry.writable);
                    }
                }
                Event::Unlinked { target, .. } => {
                    g.link_targets.remove(&target);
                }
                Event::Reliable { pipe, .. } => notify(g, pipe, |e| &e.accept_or_reliable),
                Event::End { pipe, reason } => {
                    if let Some(e) = g.entry(pipe) {
                        e.set_end_reason(&reason);
                        e.ended.store(true, Ordering::Release);
                        if self.is_lazy() {
                            // Not started for the end alone: the release may follow at once
                            // (below), and then the socket is closed here.
                            e.wake_users();
                            lazy_end = Some(pipe);
                        } else {
                            e.wake_all();
                        }
                    }
                    self.queue_job(g, pipe, Job::End(reason, None));
                }
                Event::Released { pipe, unsent } => {
                    if unsent > 0 {
                        crate::logs::limited(
                            crate::logs::Kind::Unsent,
                            format_args!("{pipe}: closed with {unsent} bytes unsent"),
                        );
                    }
                    if let Some(slot) = g.slots.get_mut(&pipe) {
                        slot.sock = None;
                        slot.entry.released.store(true, Ordering::Release);
                        // A task never started (only a client group's one pipe can be
                        // without one): the socket was closed by that drop, unless a `recv`
                        // holding reading still has it, which it drops once woken (as it
                        // would after the task's last act).
                        if self
                            .lazy
                            .compare_exchange(
                                lazy::WAITING,
                                lazy::CLOSED,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            )
                            .is_ok()
                        {
                            // The group as the task's waker: nothing left to start.
                            slot.entry.wake_io().unregister();
                            lazy_closed = Some(pipe);
                        } else {
                            slot.entry.wake_io().notify(usize::MAX);
                        }
                        wake(&slot.entry.writable);
                    }
                }
                Event::Pause { pipe } => {
                    if let Some(e) = g.entry(pipe) {
                        e.paused.store(true, Ordering::Release);
                    }
                }
                Event::Resume { pipe } => {
                    if let Some(e) = g.entry(pipe) {
                        e.paused.store(false, Ordering::Release);
                        e.wake_io().notify(usize::MAX);
                    }
                }
                _ => {}
            }
        }
        if let Some(pipe) = lazy_closed {
            self.socket_closed(g, pipe);
        } else if let Some(pipe) = lazy_end {
            // Ended with bytes left to write: the task writes them until the release.
            if let Some(e) = g.entry(pipe) {
                e.wake_io().notify(1);
            }
        }
        self.rearm_timer(g);
        forwards
    }

    /// Wake the timer task when the engine's next deadline moved earlier than the one it
    /// sleeps to.
    pub(crate) fn rearm_timer(self: &Arc<Self>, g: &mut GroupState<R>) {
        let next = g.engine.poll_timeout();
        if next.is_some_and(|n| g.armed.is_none_or(|a| n < a)) {
            g.armed = next;
            // The timer needs the task (a `recv`'s deadline, most often): a deferred one is
            // started here, under the lock, rather than through its waker.
            if self.is_lazy() && self.start_lazy_task(Some(g)) {
                return;
            }
            if let Some(e) = g.timer_task.and_then(|t| g.entry(t)) {
                e.wake_io().notify(1);
            }
        }
    }

    /// The pipe's socket turned writable: write what is queued, act on what that caused.
    pub(crate) fn flush_pipe(self: &Arc<Self>, pipe: PipeId) {
        let mut g = self.lock();
        let now = self.rt.now();
        let _ = flush(&mut g, pipe, now, false);
        self.pump(&mut g);
    }

    /// Queue a callback job if the pipe (or its listener) has callbacks of that kind. False
    /// when nothing was queued.
    pub(crate) fn queue_job(
        self: &Arc<Self>,
        g: &mut GroupState<R>,
        pipe: PipeId,
        job: Job<R>,
    ) -> bool {
        let has = |c: Option<&Callbacks<R>>| c.is_some_and(|c| job.has_callbacks(c));
        if !matches!(job, Job::End(_, Some(_))) && !has(g.own_cbs(pipe)) && !has(g.parent_cbs(pipe))
        {
            return false;
        }
        let Some(slot) = g.slots.get_mut(&pipe) else {
            return false;
        };
        if !slot.jobs.running {
            // The first job goes with the queue's start: one job at a time (a message's
            // callbacks) needs no queue buffer.
            slot.jobs.running = true;
            let entry = slot.entry.clone();
            g.starts.push((pipe, entry, job));
            return true;
        }
        if slot.jobs.jobs.capacity() == 0 {
            // A first push would make room for four.
            slot.jobs.jobs.reserve_exact(1);
        }
        slot.jobs.jobs.push_back(job);
        true
    }

    /// The pipe's socket is closed: wake `closed()` waiters, and forget the pipe once its
    /// callback jobs have run. If its task ran the group's timer, another pipe's task takes
    /// the timer over.
    pub(crate) fn socket_closed(self: &Arc<Self>, g: &mut GroupState<R>, pipe: PipeId) {
        if let Some(slot) = g.slots.get_mut(&pipe) {
            slot.sock = None;
            slot.entry.io_done.store(true, Ordering::Release);
            slot.entry.wake_all();
            wake(&slot.entry.closed);
        }
        // A descriptor was freed: a listener backing off after EMFILE may accept again now.
        if let Some(e) = g.first.filter(|f| *f != pipe).and_then(|f| g.entry(f)) {
            if e.starved.load(Ordering::Acquire) {
                e.wake_io().notify(1);
            }
        }
        if g.timer_task == Some(pipe) {
            g.timer_task = g
                .slots
                .iter()
                .find(|(id, s)| **id != pipe && s.sock.is_some())
                .map(|(id, _)| *id);
            g.armed = None;
            if let Some(e) = g.timer_task.and_then(|t| g.entry(t)) {
                e.wake_io().notify(1);
            }
        }
        Self::forget_if_done(g, pipe);
        self.pump(g);
    }

    /// The one place a pipe is forgotten by the driver: its socket is closed and its callback
    /// jobs have run.
    pub(crate) fn forget_if_done(g: &mut GroupState<R>, pipe: PipeId) {
        let done = g
            .slots
            .get(&pipe)
            .is_some_and(|s| s.entry.is_closed() && !s.jobs.running);
        if !done {
            return;
        }
        g.slots.remove(&pipe);
    }
}

fn notify<R: Runtime>(g: &GroupState<R>, pipe: PipeId, which: impl Fn(&Entry) -> &Signal) {
    if let Some(e) = g.entry(pipe) {
        wake(which(e));
    }
}

/// Wake a signal's waiters, if it has any. A first `notify` allocates the signal's list (72
/// bytes, kept while the pipe lives), and most signals of most pipes never have a waiter: a
/// plain notify on every end, close and drained write cost each connection up to five
/// allocations and frees. The fence pairs with the `SeqCst` fence `listen()` makes after
/// registering (event-listener documents it), so a waiter that listens and then checks the
/// state this wake-up announces is either counted here or sees that state.
pub(crate) fn wake(s: &Signal) {
    std::sync::atomic::fence(Ordering::SeqCst);
    if s.total_listeners() > 0 {
        s.notify(usize::MAX);
    }
}

/// Write a pipe's queued bytes until done or the socket is full. The engine keeps every
/// unwritten byte (so it sees write progress); the driver keeps none. With `report_first`,
/// a refusal of the first datagram written is returned (it was the caller's own send);
/// other refused datagrams are counted by the engine. A stream error ends the pipe.
pub(crate) fn flush<R: Runtime>(
    g: &mut GroupState<R>,
    pipe: PipeId,
    now: Instant,
    report_first: bool,
) -> io::Result<()> {
    let GroupState { engine, slots, .. } = g;
    let Some(slot) = slots.get(&pipe) else {
        // No socket (already closed): discard.
        while engine.poll_transmit_for(pipe).is_some() {}
        return Ok(());
    };
    let Some(sock) = &slot.sock else {
        return Ok(());
    };
    let mut drained = false;
    let mut first = true;
    while let Some((buf, dst)) = engine.peek_transmit(pipe) {
        let len = buf.len();
        let res = match sock {
            Sock::Udp(s) => s.try_send_to(buf, dst).map(|_| len),
            Sock::Tcp(s) => s.try_write(buf),
            Sock::Listener(_) => Ok(len),
        };
        match res {
            Ok(n) => {
                engine.advance_transmit(now, pipe, n);
                drained = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The I/O task waits for writability while bytes are queued.
                slot.entry.wake_io().notify(1);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(sock, Sock::Udp(_)) => {
                // A datagram the OS refused (EMSGSIZE, no route, EACCES): the pipe lives on.
                engine.drop_transmit(now, pipe);
                if report_first && first {
                    return Err(e);
                }
                crate::logs::limited(
                    crate::logs::Kind::Refused,
                    format_args!("{pipe}: datagram of {len} bytes to {dst} refused: {e}"),
                );
            }
            Err(e) => {
                // The end reason keeps the OS error whole; the caller gets an equal one.
                let e = pipe_core::IoError::new(e);
                engine.handle_error(now, pipe, e.clone());
                return Err(e.into_io());
            }
        }
        first = false;
    }
    if drained {
        wake(&slot.entry.writable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A pipe's entry lives in an `Arc` (16 bytes of counts before it): up to 104 bytes the
    /// allocation is a 128-byte glibc chunk (request + 8, rounded to 16), the largest glibc
    /// keeps in its fast bins; one byte more makes it 144 for every connection, and opening
    /// and closing a client then cost some 500 instructions more in malloc (callgrind,
    /// connect+close, with the entry at 136 bytes). Flags go in its padding.
    #[test]
    fn entry_fits_its_malloc_chunk() {
        let size = std::mem::size_of::<super::Entry>();
        assert!(size <= 104, "{size}");
    }

    /// The I/O task's futures hold wake-up views and waits across their awaits: each is one
    /// pointer. Views of three words (two references and an index) grew every connection's
    /// task past a 128-byte step of tokio's aligned task cells (idle memory 1.55 -> 1.67 KiB
    /// a connection in pipe-bench's many-conns).
    #[test]
    fn wake_ups_are_one_pointer_wide() {
        use super::{IoWait, IoWake, OnceWait, IO_WAITER, LENDER};
        let word = std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<IoWake<'_, IO_WAITER>>(), word);
        assert_eq!(std::mem::size_of::<IoWait<'_, IO_WAITER>>(), word);
        assert_eq!(std::mem::size_of::<OnceWait<'_, LENDER>>(), word);
    }
}
