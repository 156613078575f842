//! The async `Pipe` handle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use pipe_core::{
    EndReason, Filter, Kind, LinkError, LinkId, LinkTarget, Message, MessageId, Outcome, PipeId,
    Proto, RecvError, SendError, Stats, SubId, SubscribeError,
};

use crate::callbacks::{end_fn, msg_fn, up_fn, CallbackId, Callbacks};
use crate::group::{flush, Entry, Forward, Group, Sock};
use crate::runtime::{Runtime, TcpIo, UdpIo};
use crate::tasks::{Lend, Read, READ_BUDGET};

/// A pipe: one async API over a UDP socket, a TCP connection or a TCP listener.
///
/// Handles are cheap to clone. The pipe closes when [`Pipe::close`] is called or when the last
/// *owning* handle is dropped, as a `TcpStream` closes when dropped.
///
/// # Which handles own a pipe
///
/// | handle | owns the pipe |
/// |---|---|
/// | returned by opening it (`PipeBuilder::open`, `pipe_open`) | yes |
/// | returned by [`Pipe::accept`] / [`Pipe::accept_timeout`] (each connection once) | yes |
/// | a clone of a handle | as the handle it was cloned from |
/// | given to callbacks and `on_accept` hooks, returned by [`Pipe::connections`] | no |
///
/// Dropping the last owning handle closes the pipe (what it queued for its peer is still
/// written, within `close_timeout`) and drops the messages still queued for reading.
/// Non-owning handles never keep a pipe open; once it is closed their operations fail with
/// `Closed`. A connection that no `accept()` handed out is closed by its listener (when the
/// listener closes, or by the engine's deadlines), by a callback, or by [`Pipe::close`].
/// Closing or dropping a listener closes its connections, owned ones included (unlike
/// `std::net::TcpListener`): keep the listener while its connections are in use.
pub struct Pipe<R: Runtime> {
    pub(crate) group: Arc<Group<R>>,
    pub(crate) id: PipeId,
    pub(crate) entry: Arc<Entry>,
    owner: Owning<R>,
}

/// Whether a handle owns its pipe.
enum Owning<R: Runtime> {
    No,
    /// An owning handle of the pipe the group was opened for: the group counts them
    /// (`Group::first_owners`), so opening a pipe allocates no owner.
    First,
    /// An owning handle of a listener's connection.
    Conn(Arc<Owner<R>>),
}

/// Closes a connection when its last owning handle goes.
pub(crate) struct Owner<R: Runtime> {
    group: Arc<Group<R>>,
    id: PipeId,
}

impl<R: Runtime> Drop for Owner<R> {
    fn drop(&mut self) {
        abandon(&self.group, self.id);
    }
}

/// Nobody owns the pipe any more: close it and drop what it still queued for reading, so
/// the engine can forget it (a listener's connection would otherwise stay).
fn abandon<R: Runtime>(group: &Arc<Group<R>>, id: PipeId) {
    let forwards = {
        let mut g = group.lock();
        let now = group.rt.now();
        g.engine.abandon(now, id);
        group.pump(&mut g)
    };
    drop(forwards);
}

impl<R: Runtime> Clone for Pipe<R> {
    fn clone(&self) -> Self {
        let owner = match &self.owner {
            Owning::No => Owning::No,
            Owning::First => {
                self.group.first_owners.fetch_add(1, Ordering::Relaxed);
                Owning::First
            }
            Owning::Conn(o) => Owning::Conn(o.clone()),
        };
        Self {
            group: self.group.clone(),
            id: self.id,
            entry: self.entry.clone(),
            owner,
        }
    }
}

impl<R: Runtime> Drop for Pipe<R> {
    fn drop(&mut self) {
        // As an `Arc`'s count: the last owner sees every other owner's use of the pipe.
        if matches!(self.owner, Owning::First)
            && self.group.first_owners.fetch_sub(1, Ordering::AcqRel) == 1
        {
            abandon(&self.group, self.id);
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Pipe<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("id", &self.id)
            .field("closed", &self.entry.is_closed())
            .finish()
    }
}

impl<R: Runtime> Pipe<R> {
    /// A non-owning handle (for callbacks and link targets).
    pub(crate) fn handle(group: Arc<Group<R>>, id: PipeId, entry: Arc<Entry>) -> Self {
        Self {
            group,
            id,
            entry,
            owner: Owning::No,
        }
    }

    /// The owning handle of the pipe the group was opened for (the only one made: others
    /// are its clones).
    pub(crate) fn owned_first(group: Arc<Group<R>>, id: PipeId, entry: Arc<Entry>) -> Self {
        group.first_owners.store(1, Ordering::Relaxed);
        Self {
            group,
            id,
            entry,
            owner: Owning::First,
        }
    }

    /// An owning handle of a listener's connection: dropping the last one closes it.
    pub(crate) fn owned(group: Arc<Group<R>>, id: PipeId, entry: Arc<Entry>) -> Self {
        let owner = Owning::Conn(Arc::new(Owner {
            group: group.clone(),
            id,
        }));
        Self {
            group,
            id,
            entry,
            owner,
        }
    }

    /// The pipe's id within its group.
    pub fn id(&self) -> PipeId {
        self.id
    }

    /// What kind of pipe this is (`None` once the pipe is closed and drained).
    pub fn kind(&self) -> Option<Kind> {
        self.group.lock().engine.kind(self.id)
    }

    /// TCP or UDP.
    pub fn proto(&self) -> Proto {
        self.entry.proto
    }

    /// The local address of the pipe's socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.group.lock().engine.local_addr(self.id)
    }

    /// The default destination: a UDP client's destination, a TCP connection's peer.
    pub fn dest(&self) -> Option<SocketAddr> {
        self.group.lock().engine.dest(self.id)
    }

    /// The ALPN protocol a TLS pipe agreed on.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.group.lock().engine.alpn(self.id)
    }

    /// Wait until a TLS pipe's handshake is done: `Err` with why it failed otherwise.
    pub(crate) async fn wait_handshake(&self, limit: Duration) -> Result<(), crate::OpenError> {
        let deadline = self.group.rt.now() + limit;
        loop {
            let listener = self.entry.writable.listen();
            if self.entry.up.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(());
            }
            if self.entry.is_ended() {
                let e = match self.entry.end_reason() {
                    Some(EndReason::Tls(e)) => e.clone(),
                    Some(other) => pipe_core::TlsError::Protocol(other.to_string()),
                    None => pipe_core::TlsError::Protocol("the pipe ended".into()),
                };
                return Err(crate::OpenError::Tls(e));
            }
            if !self.wait_until(listener, deadline).await {
                return Err(crate::OpenError::Tls(pipe_core::TlsError::HandshakeTimeout));
            }
        }
    }

    /// The pipe's counters.
    pub fn stats(&self) -> Option<Stats> {
        self.group.lock().engine.stats(self.id)
    }

    /// A TCP listener's totals over its connections, the ended ones included (connections
    /// accepted and ended, bytes and messages in and out); `None` for other pipes.
    pub fn conn_totals(&self) -> Option<pipe_core::ConnTotals> {
        self.group.lock().engine.conn_totals(self.id)
    }

    /// True once the pipe has ended (its socket may still be flushing).
    pub fn is_closed(&self) -> bool {
        self.entry.is_ended()
    }

    // ---- sending ----------------------------------------------------------------------

    /// Send to the default destination. TCP waits while the write buffer is full.
    ///
    /// `Ok` means the whole message was taken by the pipe (written to the socket, or queued
    /// for it within `max_out_bytes`), not that the peer got it. A refused send took nothing.
    /// On a raw TCP pipe, a message of at least [`pipe_core::DIRECT_MIN`] bytes sent while
    /// bytes are queued ahead of it first waits for them (once), then goes to the socket from
    /// `data` without a copy (what the socket does not take is queued).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, message by message: a message is taken whole, at once, or
    /// not at all. If `send` is used as the event in a `tokio::select!` statement and some
    /// other branch completes first, no part of the message was sent; sending it again
    /// later sends it once. (The same holds for [`Pipe::send_to`].)
    ///
    /// The future holds `self`, `data` and the send's state only (tens of bytes: a callback
    /// that sends keeps it in its own future, moved into a box on every message); the rare
    /// wait for room is boxed when it happens.
    pub fn send<'a>(&'a self, data: &'a [u8]) -> impl Future<Output = Result<(), SendError>> + 'a {
        self.send_inner(data, None)
    }

    /// Send to `dest` (UDP), or to the peer (TCP, where `dest` must be the peer). Its future
    /// is as small as [`Pipe::send`]'s.
    pub fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        dest: SocketAddr,
    ) -> impl Future<Output = Result<(), SendError>> + 'a {
        self.send_inner(data, Some(dest))
    }

    /// `send` and `send_to`: an `async move` block, not an `async fn`, whose state machine
    /// keeps every argument twice (rust-lang/rust#62958).
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn send_inner<'a>(
        &'a self,
        data: &'a [u8],
        dest: Option<SocketAddr>,
    ) -> impl Future<Output = Result<(), SendError>> + 'a {
        async move {
            // A large raw TCP message behind queued bytes waits once for them to drain and
            // then goes to the socket without a copy (`Engine::send_waits_for_direct`).
            let mut may_wait = true;
            loop {
                let waits = std::mem::take(&mut may_wait) && self.waits_for_direct(data.len());
                // The try's result ends with its `match`, before the wait below (a named one
                // would live across it: 32 bytes more in every `send`'s future).
                if !waits {
                    match self.try_send(data, dest) {
                        Err(SendError::WouldBlock) => {}
                        other => return other,
                    }
                }
                if self.entry.is_ended() {
                    return Err(SendError::Closed);
                }
                // Boxed: the wait for room (288 bytes on tokio) would size every `send`'s
                // future, and with it every callback future that sends.
                Box::pin(self.make_room()).await;
            }
        }
    }

    /// The engine's rule, asked only for a message large enough for it to apply: a small
    /// send takes no lock for it.
    fn waits_for_direct(&self, len: usize) -> bool {
        len >= pipe_core::DIRECT_MIN && self.group.lock().engine.send_waits_for_direct(self.id, len)
    }

    /// Wait until the outbound buffer can take more. The sender flushes the buffer itself as
    /// soon as the socket is writable, rather than waiting for the pipe's I/O task: that task
    /// may itself be waiting to forward into this sender's pipe (a two-way relay), which would
    /// deadlock, and it would cost a task hop per refill.
    async fn make_room(&self) {
        let listener = self.entry.writable.listen();
        crate::stream::wait_room(self.group.clone(), self.id, listener).await;
    }

    pub(crate) fn try_send(&self, data: &[u8], dest: Option<SocketAddr>) -> Result<(), SendError> {
        let mut g = self.group.lock();
        if let Some(dst) = g.engine.can_send_direct(self.id, data.len(), dest)? {
            // Write straight from the caller's buffer; queue (copy) only what the socket does
            // not take. Under the lock, so writes stay in order.
            let written = match g.slots.get(&self.id).and_then(|s| s.sock.as_ref()) {
                Some(Sock::Tcp(s)) => s.try_write(data),
                Some(Sock::Udp(s)) => s.try_send_to(data, dst),
                _ => Ok(0),
            };
            let written = match written {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                // A datagram the OS refused: this send fails, the pipe lives on.
                Err(e) if self.entry.proto == Proto::Udp => return Err(refused(e)),
                Err(e) => {
                    // The send and the pipe's end reason share the OS error, kept whole.
                    let e = pipe_core::IoError::new(e);
                    g.engine
                        .handle_error(self.group.rt.now(), self.id, e.clone());
                    self.group.pump(&mut g);
                    return Err(SendError::Io(e));
                }
            };
            if written > 0 {
                let rt = &self.group.rt;
                g.engine.note_direct_send(self.id, written, || rt.now());
            }
            if written == data.len() {
                return Ok(());
            }
            let res = g
                .engine
                .send(self.group.rt.now(), self.id, &data[written..], dest);
            self.group.pump(&mut g);
            return res;
        }
        self.queue_send(&mut g, |engine, now| engine.send(now, self.id, data, dest))
    }

    /// Queue a send with the engine and write it now if the socket takes it. When nothing
    /// was queued before it, the first datagram written is this send's own: if the OS
    /// refuses it, this send fails (a refusal of anything queued earlier is only counted).
    fn queue_send<T>(
        &self,
        g: &mut crate::group::GroupState<R>,
        send: impl FnOnce(&mut pipe_core::Engine, std::time::Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let now = self.group.rt.now();
        let own_first = g.engine.peek_transmit(self.id).is_none();
        let res = send(&mut g.engine, now)?;
        let flushed = flush(g, self.id, now, own_first && self.entry.proto == Proto::Udp);
        self.group.pump(g);
        match flushed {
            Err(e) if self.entry.proto == Proto::Udp => Err(refused(e)),
            _ => Ok(res),
        }
    }

    /// Send reliably (UDP pipes opened with `Conf::reliable_udp`) and wait for the outcome:
    /// `Acked`, or `Unconfirmed` after `1 + send_retry` tries `retry_interval` apart.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for the outcome: cancelled while waiting for room, nothing was sent;
    /// cancelled after the message was queued, the pipe still sends and retries it, but its
    /// outcome is forgotten (still counted in [`Stats::acked`] / [`Stats::unconfirmed`]).
    pub async fn send_reliable(
        &self,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<Outcome, SendError> {
        let (id, wait) = loop {
            let res = {
                let mut g = self.group.lock();
                let wait = g
                    .engine
                    .conf(self.id)
                    .map(|c| c.retry_interval * (c.reliable_tries() + 1) + Duration::from_secs(1));
                self.queue_send(&mut g, |engine, now| {
                    engine.send_reliable(now, self.id, data, dest)
                })
                .map(|id| (id, wait.unwrap_or(Duration::from_secs(10))))
            };
            match res {
                Err(SendError::WouldBlock) if self.entry.is_ended() => {
                    return Err(SendError::Closed)
                }
                Err(SendError::WouldBlock) => self.make_room().await,
                Err(e) => return Err(e),
                Ok(sent) => break sent,
            }
        };
        // The engine decides every send within its tries; the deadline only guards against
        // a bug leaving a caller waiting forever. Cancelling the wait forgets the outcome.
        let mut waiter = OutcomeWaiter {
            pipe: self,
            id,
            done: false,
        };
        let deadline = self.group.rt.now() + wait;
        loop {
            let listener = self.entry.accept_or_reliable.listen();
            {
                let mut g = self.group.lock();
                if let Some(o) = g.engine.take_outcome(self.id, id) {
                    waiter.done = true;
                    return Ok(o);
                }
                if g.engine.state(self.id).is_none() {
                    waiter.done = true;
                    return Err(SendError::Closed);
                }
            }
            if !self.wait_until(listener, deadline).await {
                log::warn!(
                    "{}: reliable send {id:?} got no outcome in {wait:?}",
                    self.id
                );
                return Ok(Outcome::Unconfirmed);
            }
        }
    }

    // ---- receiving --------------------------------------------------------------------

    /// Receive from the all-messages subscription, waiting up to the pipe's `recv_timeout`.
    /// `Ok(None)` on timeout.
    ///
    /// This keeps P2PD's `recv()` semantics: it gives up after `Conf::recv_timeout` (2 s by
    /// default) with `Ok(None)`, so `while let Some(m) = pipe.recv().await?` also ends on an
    /// idle pipe. To wait with no deadline use `recv_timeout(Duration::MAX)`, or
    /// [`Pipe::messages`] (a `Stream` that ends only when the pipe does). After a TCP peer's
    /// FIN, a drained queue gives `Err(Closed)`: nothing more will arrive.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. A message leaves its queue only in the same step that
    /// returns it, so if `recv` is used as the event in a `tokio::select!` statement and
    /// some other branch completes first, no message was taken: the next `recv` gets it.
    /// (The same holds for [`Pipe::recv_timeout`] and [`Pipe::recv_on`].)
    pub async fn recv(&self) -> Result<Option<Message>, RecvError> {
        self.recv_on(SubId::ALL, None).await
    }

    /// Receive from the all-messages subscription, waiting up to `timeout`
    /// (`Duration::MAX`: forever).
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>, RecvError> {
        self.recv_on(SubId::ALL, Some(timeout)).await
    }

    /// Receive from a subscription, waiting up to `timeout` (default: the pipe's
    /// `recv_timeout`). `Ok(None)` on timeout; `Err(NotSubscribed)` at once for an unknown
    /// subscription; `Err(Closed)` once the pipe is closed and the queue drained.
    pub async fn recv_on(
        &self,
        sub: SubId,
        timeout: Option<Duration>,
    ) -> Result<Option<Message>, RecvError> {
        // A queued message costs no timer and no listener.
        let (timeout, lend) = {
            let mut g = self.group.lock();
            if let Some(m) = g.engine.recv(self.id, sub)? {
                return Ok(Some(m));
            }
            let timeout = timeout.unwrap_or_else(|| {
                g.engine
                    .conf(self.id)
                    .map_or(Duration::from_secs(2), |c| c.recv_timeout)
            });
            (timeout, Lend::take(&g, &self.group, self.id, &self.entry))
        };
        // A timeout past the clock's range (`Duration::MAX`) waits forever, never panics.
        // The deadline is the engine's (`recv_wait`): the group's one timer wakes readers
        // (`Event::RecvDue`), so a `recv` makes no runtime timer of its own.
        let deadline = self.group.rt.now().checked_add(timeout);
        match lend {
            Some(lend) => self.recv_reading(sub, deadline, lend).await,
            None => self.recv_woken(sub, deadline).await,
        }
    }

    /// `recv`'s wait when it holds the pipe's reading: read the socket here, and wait for it
    /// to be readable (or for the engine: the deadline, the pipe's end).
    async fn recv_reading(
        &self,
        sub: SubId,
        deadline: Option<std::time::Instant>,
        mut lend: Lend<'_, R>,
    ) -> Result<Option<Message>, RecvError> {
        // The rare paths (forwards of a linked client, the fall-back to the I/O task's
        // reading) are boxed, so they do not size every `recv`'s future.
        'lent: loop {
            // What the socket holds: the first read asks the socket, later ones go by the
            // runtime's readiness.
            let mut reads = 0;
            while reads < READ_BUDGET {
                match lend.read() {
                    Read::Fed(forwards) => {
                        reads += 1;
                        if !forwards.is_empty() {
                            Box::pin(run_forwards(&self.group, forwards)).await;
                        }
                        // Most often the read's message is there: take it without a read
                        // that would find the socket empty.
                        if let Some(m) = self.group.lock().engine.recv(self.id, sub)? {
                            return Ok(Some(m));
                        }
                    }
                    Read::Retry => {}
                    Read::Empty | Read::Splice => break,
                    // The end of the stream, or the pipe's: reading goes back to the I/O
                    // task, which ends or drains the pipe.
                    Read::Fin(forwards) => {
                        if !forwards.is_empty() {
                            Box::pin(run_forwards(&self.group, forwards)).await;
                        }
                        break 'lent;
                    }
                    Read::Ended => break 'lent,
                }
                if self.entry.is_paused() {
                    // The engine holds too much: the I/O task reads again once it resumes.
                    break 'lent;
                }
            }
            // Listening before the check, so a notify in between (the deadline, the end) is
            // not lost; not while reading, so feeding the engine does not wake this task.
            let woken = self.entry.lender().listen_once();
            if let Some(done) = self.look(sub, deadline)? {
                return Ok(done);
            }
            if reads == READ_BUDGET {
                future::yield_now().await;
            }
            future::or(woken, future::poll_fn(|cx| lend.poll_ready(cx))).await;
        }
        drop(lend);
        Box::pin(self.recv_woken(sub, deadline)).await
    }

    /// Under the lock, after listening: `Some` with the queued message, or `Some(None)` when
    /// the deadline passed; else give the engine the deadline and `None` (wait).
    fn look(
        &self,
        sub: SubId,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<Option<Message>>, RecvError> {
        let mut g = self.group.lock();
        if let Some(m) = g.engine.recv(self.id, sub)? {
            return Ok(Some(Some(m)));
        }
        if let Some(d) = deadline {
            if self.group.rt.now() >= d {
                return Ok(Some(None));
            }
            g.engine.recv_wait(self.id, d);
            self.group.rearm_timer(&mut g);
        }
        Ok(None)
    }

    /// `recv`'s wait when the I/O task reads: it notifies `readable` when a message comes.
    async fn recv_woken(
        &self,
        sub: SubId,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<Message>, RecvError> {
        loop {
            event_listener::listener!(self.entry.readable => listener);
            if let Some(done) = self.look(sub, deadline)? {
                return Ok(done);
            }
            listener.await;
            // Most wake-ups are the message itself: a look without a new listener takes it
            // (a new listener costs a registration with the event).
            if let Some(m) = self.group.lock().engine.recv(self.id, sub)? {
                return Ok(Some(m));
            }
        }
    }

    /// Wait for `listener` or `deadline`; true if notified.
    async fn wait_until(
        &self,
        listener: impl Future<Output = ()>,
        deadline: std::time::Instant,
    ) -> bool {
        let sleep = self.group.rt.sleep_until(deadline);
        future::or(
            async {
                listener.await;
                true
            },
            async {
                sleep.await;
                false
            },
        )
        .await
    }

    /// Subscribe to messages matching `filter`; an equal filter returns the same id.
    pub fn subscribe(&self, filter: Filter) -> Result<SubId, SubscribeError> {
        self.group.lock().engine.subscribe(self.id, filter)
    }

    /// Remove a subscription.
    pub fn unsubscribe(&self, sub: SubId) -> Result<(), RecvError> {
        self.group.lock().engine.unsubscribe(self.id, sub)
    }

    // ---- servers ----------------------------------------------------------------------

    /// The next accepted connection of a TCP server, each exactly once, in accept order, as
    /// an *owning* handle: dropping its last clone closes the connection, as dropping a
    /// `TcpStream` does (see [Which handles own a pipe](Pipe#which-handles-own-a-pipe)).
    ///
    /// When the server has no message callbacks, the connection comes subscribed to every
    /// message ([`SubId::ALL`]) from its first byte: what arrived before `accept()` returned
    /// waits in that queue, and while the queue is full (`max_qsize` / `max_queue_bytes`, or
    /// the server's `max_server_bytes`) the connection's reading pauses instead of dropping
    /// anything, so `loop { let c = server.accept().await?; spawn(serve(c)) }` loses no first
    /// message and no byte. Until subscribed explicitly, that subscription takes only
    /// messages no link and no callback took: a connection linked to an upstream queues
    /// nothing (subscribe to `Filter::all()` to get a copy of those too). With message
    /// callbacks on the server, the callbacks get the messages and the connection starts
    /// unsubscribed.
    ///
    /// `Err(NotListener)` at once on a pipe that is not a TCP listener; `Err(Closed)` once
    /// the server is closed and every accepted connection was handed out.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. A connection leaves the accept queue only in the same
    /// step that returns it, so if `accept` is used as the event in a `tokio::select!`
    /// statement and some other branch completes first, no connection was lost: the next
    /// `accept` returns it. (The same holds for [`Pipe::accept_timeout`].)
    pub async fn accept(&self) -> Result<Pipe<R>, RecvError> {
        loop {
            event_listener::listener!(self.entry.accept_or_reliable => listener);
            if let Some(p) = self.try_accept()? {
                return Ok(p);
            }
            listener.await;
        }
    }

    /// Like [`Pipe::accept`], giving up after `timeout` with `Ok(None)`.
    pub async fn accept_timeout(&self, timeout: Duration) -> Result<Option<Pipe<R>>, RecvError> {
        let deadline = self.group.rt.now() + timeout;
        loop {
            event_listener::listener!(self.entry.accept_or_reliable => listener);
            if let Some(p) = self.try_accept()? {
                return Ok(Some(p));
            }
            if !self.wait_until(listener, deadline).await {
                return Ok(None);
            }
        }
    }

    fn try_accept(&self) -> Result<Option<Pipe<R>>, RecvError> {
        let mut g = self.group.lock();
        let Some(conn) = g.engine.pop_accepted(self.id)? else {
            return Ok(None);
        };
        if g.cbs.serve_connections() {
            // Served by the listener's callbacks: the user has acted already, so a FIN read
            // from now on ends it as P2PD would.
            g.engine.user_acts(conn);
            self.group.pump(&mut g);
        }
        let entry = g
            .entry(conn)
            .cloned()
            .unwrap_or_else(|| Entry::gone(Proto::Tcp));
        // Handed out once: this handle owns the connection.
        Ok(Some(Pipe::owned(self.group.clone(), conn, entry)))
    }

    /// The live connections of a TCP server, in accept order, as non-owning handles
    /// (dropping them does not close the connections).
    pub fn connections(&self) -> Vec<Pipe<R>> {
        let g = self.group.lock();
        g.engine
            .connections(self.id)
            .into_iter()
            .filter_map(|c| {
                g.entry(c)
                    .map(|e| Pipe::handle(self.group.clone(), c, e.clone()))
            })
            .collect()
    }

    // ---- linking ----------------------------------------------------------------------

    /// Relay: every message this pipe receives is also sent through `target` to its default
    /// destination. This pipe still delivers the message locally.
    pub fn link(&self, target: &Pipe<R>) -> Result<LinkId, LinkError> {
        self.link_with(target, None, None)
    }

    /// Like [`Pipe::link`], sending to `dest` instead of the target's default destination, and
    /// (with `from`) forwarding only messages from that sender (port 0 = any port).
    pub fn link_with(
        &self,
        target: &Pipe<R>,
        dest: Option<SocketAddr>,
        from: Option<SocketAddr>,
    ) -> Result<LinkId, LinkError> {
        if Arc::ptr_eq(&self.group, &target.group) {
            return self.group.lock().engine.link(
                self.id,
                LinkTarget::Local(target.id),
                dest,
                from,
            );
        }
        // What the target is, read before taking our own lock (never hold two groups' locks);
        // the engine applies its checks to it as to a local target.
        let ext = {
            let tg = target.group.lock();
            LinkTarget::External {
                kind: tg.engine.kind(target.id).unwrap_or(Kind::TcpClient),
                open: tg.engine.state(target.id) == Some(pipe_core::State::Open),
            }
        };
        let mut g = self.group.lock();
        let id = g.engine.link(self.id, ext, dest, from)?;
        if let Some(token) = g.engine.link_token(self.id, id) {
            let handle = Pipe::handle(target.group.clone(), target.id, target.entry.clone());
            g.link_targets.insert(token, handle);
        }
        drop(g);
        // Linked both ways (a relay): the pair propagates half-close (stream.rs).
        self.pair_links(target, id);
        Ok(id)
    }

    /// Remove a link.
    pub fn unlink(&self, link: LinkId) -> Result<(), LinkError> {
        let mut g = self.group.lock();
        let res = g.engine.unlink(self.id, link);
        self.group.pump(&mut g);
        res
    }

    // ---- callbacks --------------------------------------------------------------------

    /// Add a message callback: `f(message, pipe)` where `pipe` is the pipe it arrived on (the
    /// accepted connection, for a TCP server). Callbacks run in order, one at a time.
    pub fn add_msg_cb<F, Fut>(&self, f: F) -> CallbackId
    where
        F: Fn(Message, Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.edit_callbacks(|c, id| c.msg.make_mut().push((id, msg_fn(f))))
    }

    /// Add an up callback. It fires once when the pipe can send; added later, it does not fire.
    pub fn add_up_cb<F, Fut>(&self, f: F) -> CallbackId
    where
        F: Fn(Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.edit_callbacks(|c, id| c.up.make_mut().push((id, up_fn(f))))
    }

    /// Add an end callback: `f(reason, pipe)`, once when the pipe ends. Added after the pipe
    /// ended, it fires at once (with [`EndReason::Local`] if the reason is gone).
    pub fn add_end_cb<F, Fut>(&self, f: F) -> CallbackId
    where
        F: Fn(EndReason, Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb = end_fn(f);
        if self.entry.is_ended() {
            // Ended already: run this one callback, with the pipe's real end reason, after
            // the jobs already queued (its End among them).
            let reason = self.entry.end_reason().cloned().unwrap_or(EndReason::Local);
            let mut g = self.group.lock();
            let job = crate::callbacks::Job::End(reason.clone(), Some(cb.clone()));
            if !self.group.queue_job(&mut g, self.id, job) {
                drop(g);
                self.group.rt.spawn(cb(reason, self.clone_handle()));
            }
            return CallbackId(0);
        }
        self.edit_callbacks(|c, id| c.end.make_mut().push((id, cb)))
    }

    /// Remove a callback by the id its `add_*` returned. True if it was there.
    pub fn del_cb(&self, id: CallbackId) -> bool {
        let mut g = self.group.lock();
        let Some(c) = cbs_mut(&mut g, self.id) else {
            return false;
        };
        let before = c.msg.len() + c.up.len() + c.end.len();
        c.msg.retain(|(i, _)| *i != id);
        c.up.retain(|(i, _)| *i != id);
        c.end.retain(|(i, _)| *i != id);
        let removed = before != c.msg.len() + c.up.len() + c.end.len();
        let has_msg = !c.msg.is_empty();
        g.engine.set_callbacks(self.id, has_msg);
        removed
    }

    fn edit_callbacks(&self, f: impl FnOnce(&mut Callbacks<R>, CallbackId)) -> CallbackId {
        let mut g = self.group.lock();
        let id = CallbackId(g.next_cb);
        g.next_cb += 1;
        let Some(c) = cbs_mut(&mut g, self.id) else {
            return id;
        };
        f(c, id);
        let has_msg = !c.msg.is_empty();
        g.engine.set_callbacks(self.id, has_msg);
        id
    }

    fn clone_handle(&self) -> Pipe<R> {
        Pipe::handle(self.group.clone(), self.id, self.entry.clone())
    }

    // ---- closing ----------------------------------------------------------------------

    /// Close the pipe and wait until its socket is closed. A server closes its connections
    /// first. Idempotent. Safe to call from the pipe's own callbacks.
    pub async fn close(&self) {
        {
            let mut g = self.group.lock();
            let now = self.group.rt.now();
            g.engine.close(now, self.id);
            self.group.pump(&mut g);
        }
        self.closed().await;
    }

    /// Wait until the pipe has ended and its socket is closed.
    pub async fn closed(&self) {
        if !self.entry.is_ended() {
            // Waiting for the end is the user's act on an accepted connection: a FIN read
            // since `accept()` ends it now, as it would have after a `recv`.
            let mut g = self.group.lock();
            g.engine.user_acts(self.id);
            self.group.pump(&mut g);
        }
        // Look before listening: the common case (woken because it closed) needs no
        // registration.
        while !self.entry.is_closed() {
            event_listener::listener!(self.entry.closed => listener);
            if self.entry.is_closed() {
                return;
            }
            listener.await;
        }
    }
}

/// The callbacks a pipe's `add_*_cb` edits: the group's for its first pipe, a connection's
/// own otherwise. `None` once the pipe is forgotten.
fn cbs_mut<R: Runtime>(
    g: &mut crate::group::GroupState<R>,
    pipe: PipeId,
) -> Option<&mut Callbacks<R>> {
    if g.first == Some(pipe) {
        return Some(&mut g.cbs);
    }
    g.slots
        .get_mut(&pipe)
        .map(|s| &mut **s.cbs.get_or_insert_with(Box::default))
}

/// The error for a datagram the OS refused to send: the OS error, kept whole.
///
/// A datagram over the protocol's limit (65,507 bytes on IPv4, 65,527 on IPv6) never gets
/// here: the engine refuses it first with `TooLarge` and the real limit. Below that, the OS
/// refuses a datagram as too long (`EMSGSIZE`) only for a limit of its own that this side
/// cannot read back through the runtime seam (the path MTU of a socket that does not
/// fragment, a BSD socket's send buffer): the refusal is then reported as the OS error it
/// is (`SendError::Io`, `raw_os_error()` = EMSGSIZE) rather than as `TooLarge` with an
/// invented limit.
fn refused(e: io::Error) -> SendError {
    SendError::from(e)
}

/// Run forwards produced by a pump: each is sent through its target, awaited (backpressure),
/// and its result reported to the engine (which counts it, and unlinks a closed target).
/// Local delivery was already done.
pub(crate) async fn run_forwards<R: Runtime>(group: &Arc<Group<R>>, forwards: Vec<Forward<R>>) {
    let mut results = Vec::with_capacity(forwards.len());
    for f in forwards {
        if f.shutdown {
            // Half-close through a relay pair: after the forwards before it (stream.rs).
            f.target.shutdown_link_target();
            continue;
        }
        let res = f.target.send_inner(&f.data, f.dest).await;
        if let Err(e) = &res {
            if *e != SendError::Closed {
                crate::logs::limited(
                    crate::logs::Kind::Forward,
                    format_args!("{}: forward through link failed: {e}", f.from),
                );
            }
        }
        results.push((f.from, f.link, res));
    }
    let mut g = group.lock();
    for (from, link, res) in results {
        g.engine.handle_forward_result(from, link, res);
    }
    group.pump(&mut g);
}

/// Forgets a reliable send's outcome if its waiter goes away before taking it.
struct OutcomeWaiter<'a, R: Runtime> {
    pipe: &'a Pipe<R>,
    id: MessageId,
    done: bool,
}

impl<R: Runtime> Drop for OutcomeWaiter<'_, R> {
    fn drop(&mut self) {
        if !self.done {
            let mut g = self.pipe.group.lock();
            g.engine.forget_outcome(self.pipe.id, self.id);
            self.pipe.group.pump(&mut g);
        }
    }
}
