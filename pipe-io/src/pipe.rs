//! The async `Pipe` handle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use pipe_core::{
    EndReason, Filter, Kind, LinkError, LinkId, LinkTarget, Message, MessageId, Outcome, PipeId,
    Proto, RecvError, SendError, Stats, SubId, SubscribeError,
};

use crate::callbacks::{end_fn, msg_fn, up_fn, CallbackId, Callbacks};
use crate::runtime::{Runtime, TcpIo, UdpIo};
use crate::shared::{Entry, Forward, Shared, Sock, SockEntry};

/// A pipe: one async API over a UDP socket, a TCP connection or a TCP listener.
///
/// Handles are cheap to clone. The pipe closes when [`Pipe::close`] is called or when the last
/// handle returned by opening it is dropped (handles given to callbacks do not keep it open).
pub struct Pipe<R: Runtime> {
    pub(crate) shared: Arc<Shared<R>>,
    pub(crate) id: PipeId,
    pub(crate) entry: Arc<Entry>,
    pub(crate) owner: Option<Arc<Owner<R>>>,
}

/// Closes the pipe when the last owning handle goes.
pub(crate) struct Owner<R: Runtime> {
    shared: Arc<Shared<R>>,
    id: PipeId,
}

impl<R: Runtime> Drop for Owner<R> {
    fn drop(&mut self) {
        let forwards = {
            let mut core = self.shared.lock();
            let now = self.shared.rt.now();
            core.engine.close(now, self.id);
            self.shared.pump(&mut core)
        };
        drop(forwards);
    }
}

impl<R: Runtime> Clone for Pipe<R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            id: self.id,
            entry: self.entry.clone(),
            owner: self.owner.clone(),
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
    pub(crate) fn handle(shared: Arc<Shared<R>>, id: PipeId, entry: Arc<Entry>) -> Self {
        Self {
            shared,
            id,
            entry,
            owner: None,
        }
    }

    /// An owning handle: dropping the last one closes the pipe.
    pub(crate) fn owned(shared: Arc<Shared<R>>, id: PipeId, entry: Arc<Entry>) -> Self {
        let owner = Some(Arc::new(Owner {
            shared: shared.clone(),
            id,
        }));
        Self {
            shared,
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
        self.shared.lock().engine.kind(self.id)
    }

    /// TCP or UDP.
    pub fn proto(&self) -> Proto {
        self.entry.proto
    }

    /// The local address of the pipe's socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.lock().engine.local_addr(self.id)
    }

    /// The default destination: a UDP client's destination, a TCP connection's peer.
    pub fn dest(&self) -> Option<SocketAddr> {
        self.shared.lock().engine.dest(self.id)
    }

    /// The pipe's counters.
    pub fn stats(&self) -> Option<Stats> {
        self.shared.lock().engine.stats(self.id)
    }

    /// True once the pipe has ended (its socket may still be flushing).
    pub fn is_closed(&self) -> bool {
        self.entry.is_ended()
    }

    // ---- sending ----------------------------------------------------------------------

    /// Send to the default destination. TCP waits while the write buffer is full.
    pub async fn send(&self, data: &[u8]) -> Result<(), SendError> {
        self.send_inner(data, None).await
    }

    /// Send to `dest` (UDP), or to the peer (TCP, where `dest` must be the peer).
    pub async fn send_to(&self, data: &[u8], dest: SocketAddr) -> Result<(), SendError> {
        self.send_inner(data, Some(dest)).await
    }

    pub(crate) async fn send_inner(
        &self,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<(), SendError> {
        loop {
            match self.try_send(data, dest) {
                Err(SendError::WouldBlock) if self.entry.is_ended() => {
                    return Err(SendError::Closed)
                }
                Err(SendError::WouldBlock) => self.make_room().await,
                other => return other,
            }
        }
    }

    /// Wait until the outbound buffer can take more. The sender flushes the buffer itself as
    /// soon as the socket is writable, rather than waiting for the pipe's I/O task: that task
    /// may itself be waiting to forward into this sender's pipe (a two-way relay), which would
    /// deadlock, and it would cost a task hop per refill.
    async fn make_room(&self) {
        let listener = self.entry.writable.listen();
        let Some(sock) = self
            .shared
            .lock()
            .socks
            .get(&self.id)
            .map(|s| s.sock.clone())
        else {
            return; // closed: the next try says so
        };
        let writable = future::or(
            async {
                listener.await;
                false
            },
            async {
                let _ = sock.writable().await;
                true
            },
        )
        .await;
        drop(sock);
        if writable {
            self.shared.flush_pipe(self.id);
        }
    }

    fn try_send(&self, data: &[u8], dest: Option<SocketAddr>) -> Result<(), SendError> {
        let mut core = self.shared.lock();
        if let Some(dst) = core.engine.can_send_direct(self.id, data.len(), dest)? {
            // Write straight from the caller's buffer; queue (copy) only what the socket does
            // not take. Under the lock, so writes stay in order.
            let written = match core.socks.get(&self.id) {
                Some(SockEntry {
                    sock: Sock::Tcp(s),
                    unsent: None,
                }) => s.try_write(data),
                Some(SockEntry {
                    sock: Sock::Udp(s),
                    unsent: None,
                }) => s.try_send_to(data, dst),
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
                Err(e) if self.entry.proto == Proto::Udp => return Err(refused(e, data.len())),
                Err(e) => {
                    core.engine
                        .handle_error(self.shared.rt.now(), self.id, e.to_string());
                    self.shared.pump(&mut core);
                    return Err(SendError::from(e));
                }
            };
            if written == data.len() {
                return Ok(());
            }
            let res = core
                .engine
                .send(self.shared.rt.now(), self.id, &data[written..], dest);
            self.shared.pump(&mut core);
            return res;
        }
        let now = self.shared.rt.now();
        core.send_error = None;
        let res = core.engine.send(now, self.id, data, dest);
        let forwards = self.shared.pump(&mut core);
        debug_assert!(forwards.is_empty());
        match (res, core.send_error.take()) {
            (Ok(()), Some(e)) => Err(refused(e, data.len())),
            (res, _) => res,
        }
    }

    /// Send reliably (UDP pipes opened with `Conf::reliable_udp`) and wait for the outcome:
    /// `Acked`, or `Unconfirmed` after `1 + send_retry` tries `retry_interval` apart.
    pub async fn send_reliable(
        &self,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<Outcome, SendError> {
        let id: MessageId = loop {
            let res = {
                let mut core = self.shared.lock();
                let now = self.shared.rt.now();
                let res = core.engine.send_reliable(now, self.id, data, dest);
                self.shared.pump(&mut core);
                if let Some(root) = core.root.and_then(|r| core.entries.get(&r)) {
                    root.wake_io.notify(1);
                }
                res
            };
            match res {
                Err(SendError::WouldBlock) if self.entry.is_ended() => {
                    return Err(SendError::Closed)
                }
                Err(SendError::WouldBlock) => self.make_room().await,
                Err(e) => return Err(e),
                Ok(id) => break id,
            }
        };
        loop {
            let listener = self.entry.reliable.listen();
            if let Some(o) = Shared::take_outcome(&mut self.shared.lock(), self.id, id) {
                return Ok(o);
            }
            listener.await;
        }
    }

    // ---- receiving --------------------------------------------------------------------

    /// Receive from the all-messages subscription, waiting up to the pipe's `recv_timeout`.
    /// `Ok(None)` on timeout.
    pub async fn recv(&self) -> Result<Option<Message>, RecvError> {
        self.recv_on(SubId::ALL, None).await
    }

    /// Receive from the all-messages subscription, waiting up to `timeout`.
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
        let timeout = {
            let mut core = self.shared.lock();
            if let Some(m) = core.engine.recv(self.id, sub)? {
                return Ok(Some(m));
            }
            timeout.unwrap_or_else(|| {
                core.engine
                    .conf(self.id)
                    .map_or(Duration::from_secs(2), |c| c.recv_timeout)
            })
        };
        let mut sleep = self.shared.rt.sleep_until(self.shared.rt.now() + timeout);
        loop {
            let listener = self.entry.readable.listen();
            if let Some(m) = self.shared.lock().engine.recv(self.id, sub)? {
                return Ok(Some(m));
            }
            let notified = future::or(
                async {
                    listener.await;
                    true
                },
                async {
                    (&mut sleep).await;
                    false
                },
            )
            .await;
            if !notified {
                return Ok(None);
            }
        }
    }

    /// Wait for `listener` or `deadline`; true if notified.
    async fn wait_until(
        &self,
        listener: impl Future<Output = ()>,
        deadline: std::time::Instant,
    ) -> bool {
        let sleep = self.shared.rt.sleep_until(deadline);
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
        self.shared.lock().engine.subscribe(self.id, filter)
    }

    /// Remove a subscription.
    pub fn unsubscribe(&self, sub: SubId) -> Result<(), RecvError> {
        self.shared.lock().engine.unsubscribe(self.id, sub)
    }

    // ---- servers ----------------------------------------------------------------------

    /// The next accepted connection of a TCP server, each exactly once, in accept order.
    /// `Err(Closed)` once the server is closed and every accepted connection was handed out.
    pub async fn accept(&self) -> Result<Pipe<R>, RecvError> {
        loop {
            let listener = self.entry.accept.listen();
            if let Some(p) = self.try_accept()? {
                return Ok(p);
            }
            listener.await;
        }
    }

    /// Like [`Pipe::accept`], giving up after `timeout` with `Ok(None)`.
    pub async fn accept_timeout(&self, timeout: Duration) -> Result<Option<Pipe<R>>, RecvError> {
        let deadline = self.shared.rt.now() + timeout;
        loop {
            let listener = self.entry.accept.listen();
            if let Some(p) = self.try_accept()? {
                return Ok(Some(p));
            }
            if !self.wait_until(listener, deadline).await {
                return Ok(None);
            }
        }
    }

    fn try_accept(&self) -> Result<Option<Pipe<R>>, RecvError> {
        let mut core = self.shared.lock();
        let Some(conn) = core.engine.pop_accepted(self.id)? else {
            return Ok(None);
        };
        let entry = core
            .entries
            .get(&conn)
            .cloned()
            .unwrap_or_else(|| Entry::gone(Proto::Tcp));
        Ok(Some(Pipe::handle(self.shared.clone(), conn, entry)))
    }

    /// The live connections of a TCP server, in accept order.
    pub fn connections(&self) -> Vec<Pipe<R>> {
        let core = self.shared.lock();
        core.engine
            .connections(self.id)
            .into_iter()
            .filter_map(|c| {
                core.entries
                    .get(&c)
                    .map(|e| Pipe::handle(self.shared.clone(), c, e.clone()))
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
        if Arc::ptr_eq(&self.shared, &target.shared) {
            return self.shared.lock().engine.link(
                self.id,
                LinkTarget::Local(target.id),
                dest,
                from,
            );
        }
        // Look at the target before taking our own lock: never hold two groups' locks.
        if target.entry.is_ended() {
            return Err(LinkError::Closed);
        }
        if target.kind() == Some(Kind::TcpListener) {
            return Err(LinkError::WrongKind("TCP listener"));
        }
        let mut core = self.shared.lock();
        let token = core.next_token;
        let id = core
            .engine
            .link(self.id, LinkTarget::External(token), dest, from)?;
        core.next_token += 1;
        let handle = Pipe::handle(target.shared.clone(), target.id, target.entry.clone());
        core.link_targets.insert(token, handle);
        core.link_tokens.insert((self.id, id), token);
        Ok(id)
    }

    /// Remove a link.
    pub fn unlink(&self, link: LinkId) -> Result<(), LinkError> {
        Shared::unlink(&mut self.shared.lock(), self.id, link)
    }

    // ---- callbacks --------------------------------------------------------------------

    /// Add a message callback: `f(message, pipe)` where `pipe` is the pipe it arrived on (the
    /// accepted connection, for a TCP server). Callbacks run in order, one at a time.
    pub fn add_msg_cb<F, Fut>(&self, f: F) -> CallbackId
    where
        F: Fn(Message, Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.edit_callbacks(|c, id| Arc::make_mut(&mut c.msg).push((id, msg_fn(f))))
    }

    /// Add an up callback. It fires once when the pipe can send; added later, it does not fire.
    pub fn add_up_cb<F, Fut>(&self, f: F) -> CallbackId
    where
        F: Fn(Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.edit_callbacks(|c, id| Arc::make_mut(&mut c.up).push((id, up_fn(f))))
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
            let pipe = self.clone_handle();
            let reason = EndReason::Local;
            let fut = cb(reason, pipe);
            self.shared.rt.spawn(fut);
            return CallbackId(0);
        }
        self.edit_callbacks(|c, id| Arc::make_mut(&mut c.end).push((id, cb)))
    }

    /// Remove a callback by the id its `add_*` returned. True if it was there.
    pub fn del_cb(&self, id: CallbackId) -> bool {
        let mut core = self.shared.lock();
        let Some(c) = core.cbs.get_mut(&self.id) else {
            return false;
        };
        let before = c.msg.len() + c.up.len() + c.end.len();
        Arc::make_mut(&mut c.msg).retain(|(i, _)| *i != id);
        Arc::make_mut(&mut c.up).retain(|(i, _)| *i != id);
        Arc::make_mut(&mut c.end).retain(|(i, _)| *i != id);
        let removed = before != c.msg.len() + c.up.len() + c.end.len();
        let has_msg = !c.msg.is_empty();
        core.engine.set_callbacks(self.id, has_msg);
        removed
    }

    fn edit_callbacks(&self, f: impl FnOnce(&mut Callbacks<R>, CallbackId)) -> CallbackId {
        let mut core = self.shared.lock();
        let id = CallbackId(core.next_cb);
        core.next_cb += 1;
        let c = core.cbs.entry(self.id).or_default();
        f(c, id);
        let has_msg = !c.msg.is_empty();
        core.engine.set_callbacks(self.id, has_msg);
        id
    }

    fn clone_handle(&self) -> Pipe<R> {
        Pipe::handle(self.shared.clone(), self.id, self.entry.clone())
    }

    // ---- closing ----------------------------------------------------------------------

    /// Close the pipe and wait until its socket is closed. A server closes its connections
    /// first. Idempotent. Safe to call from the pipe's own callbacks.
    pub async fn close(&self) {
        {
            let mut core = self.shared.lock();
            let now = self.shared.rt.now();
            core.engine.close(now, self.id);
            self.shared.pump(&mut core);
        }
        self.closed().await;
    }

    /// Wait until the pipe has ended and its socket is closed.
    pub async fn closed(&self) {
        loop {
            let listener = self.entry.closed.listen();
            if self.entry.is_closed() {
                return;
            }
            listener.await;
        }
    }
}

/// The error for a datagram of `len` bytes the OS refused to send.
fn refused(e: io::Error, len: usize) -> SendError {
    if crate::socket::is_msgsize(&e) {
        SendError::TooLarge {
            len,
            max: len.saturating_sub(1),
        }
    } else {
        SendError::from(e)
    }
}

/// Run forwards produced by a pump: each is sent through its target, awaited (backpressure).
/// A target that is gone is unlinked; local delivery was already done.
pub(crate) async fn run_forwards<R: Runtime>(shared: &Arc<Shared<R>>, forwards: Vec<Forward<R>>) {
    for f in forwards {
        match f.target.send_inner(&f.data, f.dest).await {
            Ok(()) => {}
            Err(SendError::Closed) => {
                let _ = Shared::unlink(&mut shared.lock(), f.from, f.link);
            }
            Err(e) => log::debug!("{}: forward through link failed: {e}", f.from),
        }
    }
}
