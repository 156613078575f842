//! Half-close, stream mode and messages as a `Stream`.
//!
//! - [`Pipe::shutdown`]: shut a TCP pipe's write side (flush, then FIN); it still reads.
//! - [`Pipe::into_stream`]: a TCP pipe with `Framing::Raw` becomes a [`PipeStream`], a byte
//!   stream with poll-based read, write, flush and shutdown, implementing tokio's
//!   `AsyncRead` + `AsyncWrite` (feature `tokio`, enabled by pipe-tokio) and futures-io's
//!   (feature `futures-io`, enabled by pipe-smol).
//! - [`Pipe::messages`]: a subscription as a `futures_core::Stream` of [`Message`]s.
//!
//! Nothing here keeps state of its own about a pipe beyond a stream's unread leftover and its
//! pending wake-ups: the bytes wait in the engine's subscription queue, writes go through the
//! engine's outbound buffer (its cap is the backpressure), and half-close is the engine's
//! (`pipe_core::Engine::shutdown_write`, `keep_writable`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use event_listener::EventListener;
use futures_lite::future;
use pipe_core::{
    EndReason, Filter, Framing, Kind, LinkId, Message, Proto, RecvError, SendError, SubId,
};

use crate::group::{flush, Entry, Group};
use crate::pipe::Pipe;
use crate::runtime::{BoxFuture, Runtime};

impl<R: Runtime> Pipe<R> {
    /// Shut the pipe's write side (TCP): what was sent before is written, then the FIN goes
    /// out (a TLS pipe sends `close_notify` first); the pipe still receives until the peer's
    /// FIN, which then ends it. Returns once the FIN is sent (or the pipe ended cleanly
    /// meanwhile). Sends fail with `Closed` from the call on. Idempotent.
    ///
    /// Like a `TcpStream`'s flush and shutdown, it waits for the peer to take the queued
    /// bytes: `Conf::write_stall_timeout` bounds that wait. Errors: `WrongKind` for UDP
    /// pipes and listeners, `Closed` when the pipe had ended, or ended abnormally (reset,
    /// deadline) before the FIN went out.
    pub async fn shutdown(&self) -> Result<(), SendError> {
        {
            let mut g = self.group.lock();
            let now = self.group.rt.now();
            let res = g.engine.shutdown_write(now, self.id);
            let _ = flush(&mut g, self.id, now, false);
            self.group.pump(&mut g);
            res?;
        }
        loop {
            let listener = self.entry.writable.listen();
            if let Some(done) = shutdown_done(&self.entry) {
                return done;
            }
            wait_room(self.group.clone(), self.id, listener).await;
        }
    }

    /// Turn a TCP pipe with `Framing::Raw` (the default) into a byte stream: the bytes the
    /// pipe receives are read in order, writes go through the pipe's send path (its outbound
    /// buffer, `max_out_bytes`, is the backpressure), and shutdown is a real half-close. The
    /// pipe keeps its route, conf, deadlines, stats and TLS; [`PipeStream::pipe`] lends it.
    ///
    /// No byte is lost: what arrived before the call waits in the pipe's all-messages
    /// subscription (a client pipe has it from the start; an accepted connection of a listener
    /// without message callbacks too) and is read first. From the call on the engine pauses
    /// reading the socket while that queue could not take one more read, instead of dropping
    /// its oldest message. Before the call that queue is an ordinary one (drop-oldest past
    /// `max_qsize` messages or `max_queue_bytes`), so make the stream soon after opening or
    /// accepting, before the peer can send that much. After the peer's FIN the pipe stays writable until the stream shuts
    /// down or is dropped (the engine's `keep_writable`), like a `TcpStream`.
    ///
    /// Message callbacks and links of the pipe still see every read; a pipe used as a stream
    /// should normally have neither. Fails for UDP pipes, listeners, other framings, and a
    /// pipe already closed and drained.
    pub fn into_stream(self) -> Result<PipeStream<R>, StreamError> {
        if self.entry.proto != Proto::Tcp {
            return Err(StreamError::NotTcp);
        }
        {
            let mut g = self.group.lock();
            let kind = g.engine.kind(self.id).ok_or(StreamError::Closed)?;
            if kind == Kind::TcpListener {
                return Err(StreamError::Listener);
            }
            let framing = g.engine.conf(self.id).map(|c| c.framing.clone());
            if !matches!(framing, Some(Framing::Raw)) {
                return Err(StreamError::Framing);
            }
            // Stream mode first: it is the user's act that keeps the pipe writable after a
            // FIN read since `accept()` (subscribing alone would end it, `Engine::user_acts`).
            g.engine.keep_writable(self.id, true);
            match g.engine.subscribe(self.id, Filter::all()) {
                Ok(_) => {}
                // Ended: the queue, if any, is still read to its end.
                Err(_)
                    if g.engine
                        .find_subscription(self.id, &Filter::all())
                        .is_some() => {}
                Err(_) => return Err(StreamError::Closed),
            }
            self.group.pump(&mut g);
        }
        Ok(PipeStream {
            pipe: self,
            leftover: Bytes::new(),
            read_wait: None,
            write_wait: None,
            shutdown: false,
        })
    }

    /// The pipe's all-messages subscription as a `futures_core::Stream` of messages, ending
    /// (`None`) when the pipe has ended and the queue is drained, or after the peer's FIN on
    /// a TCP pipe. Unlike [`Pipe::recv`] it waits with no deadline. It holds a clone of this
    /// handle (an owning one keeps the pipe open). A pipe without that subscription (a
    /// server, a pipe with message callbacks) yields nothing: subscribe first.
    pub fn messages(&self) -> Messages<R> {
        self.messages_on(SubId::ALL)
    }

    /// Like [`Pipe::messages`], for one subscription.
    pub fn messages_on(&self, sub: SubId) -> Messages<R> {
        Messages {
            pipe: self.clone(),
            sub,
            wait: None,
        }
    }

    /// A relay partner's FIN (or end) reached this link target: shut its write side after
    /// the bytes forwarded before (which are queued already). Does not wait.
    pub(crate) fn shutdown_link_target(&self) {
        let mut g = self.group.lock();
        let now = self.group.rt.now();
        let _ = g.engine.shutdown_write(now, self.id);
        self.group.pump(&mut g);
    }

    /// After `self` linked to `target` in another group (`link`): if `target` links back to
    /// `self`, both links are a pair, which propagates half-close (the engine finds pairs
    /// within one group itself). The two groups are locked one after the other, never both.
    pub(crate) fn pair_links(&self, target: &Pipe<R>, link: LinkId) {
        if std::sync::Arc::ptr_eq(&self.group, &target.group) {
            return;
        }
        let back = {
            let mut tg = target.group.lock();
            let back = tg
                .engine
                .external_links(target.id)
                .into_iter()
                .find(|(_, token)| {
                    tg.link_targets.get(token).is_some_and(|p| {
                        p.id == self.id && std::sync::Arc::ptr_eq(&p.group, &self.group)
                    })
                });
            if let Some((l, _)) = back {
                tg.engine.set_link_paired(target.id, l);
            }
            back
        };
        if back.is_some() {
            self.group.lock().engine.set_link_paired(self.id, link);
        }
    }
}

/// `Some` once a shutdown is over: the FIN went out, or the pipe ended.
fn shutdown_done(entry: &Entry) -> Option<Result<(), SendError>> {
    if entry.write_shut.load(Ordering::Acquire) {
        return Some(Ok(()));
    }
    if entry.is_released() || entry.is_closed() {
        return Some(match entry.end_reason() {
            None | Some(EndReason::PeerClosed) | Some(EndReason::Local) => Ok(()),
            Some(_) => Err(SendError::Closed),
        });
    }
    None
}

/// Wait until the pipe's outbound buffer may have room (its `writable` signal), flushing it
/// ourselves when the socket turns writable first (as `send` does: the pipe's I/O task may be
/// busy forwarding into this very pipe, as in a two-way relay, which would deadlock; and it
/// would cost a task hop per refill). `Pipe::send` and `PipeStream` writes both wait here.
pub(crate) async fn wait_room<R: Runtime>(
    group: Arc<Group<R>>,
    pipe: pipe_core::PipeId,
    listener: EventListener,
) {
    let (sock, socket_helps) = {
        let g = group.lock();
        let Some(sock) = g.slots.get(&pipe).and_then(|s| s.sock.clone()) else {
            // No socket: ended; the caller's next check says so.
            return;
        };
        if g.engine.out_bytes(pipe) == 0 {
            // Room came before the listener was registered (under this lock, after it).
            return;
        }
        // Nothing for the socket yet: a TLS pipe holds what was sent during its handshake
        // until the handshake is done (then `Up` notifies `writable`), or the socket is
        // reserved for spliced bytes (the queue's flush after `splice_end` notifies it once
        // drained). The socket's writability cannot help: waiting on it would spin.
        (sock, g.engine.peek_transmit(pipe).is_some())
    };
    if !socket_helps {
        drop(sock);
        listener.await;
        return;
    }
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
        group.flush_pipe(pipe);
    }
}

/// Why a pipe cannot become a [`PipeStream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Only TCP pipes are byte streams.
    #[error("only a TCP pipe can become a stream (this one is UDP)")]
    NotTcp,
    /// A listener has no bytes to stream: accept a connection first.
    #[error("a TCP listener cannot become a stream: accept a connection")]
    Listener,
    /// Framed pipes carry messages; a stream needs `Framing::Raw`.
    #[error("a stream needs Framing::Raw (this pipe frames its messages)")]
    Framing,
    /// The pipe is closed and drained.
    #[error("the pipe is closed")]
    Closed,
}

/// A TCP pipe as a byte stream ([`Pipe::into_stream`]).
///
/// Poll-based [`PipeStream::poll_read`], [`PipeStream::poll_write`],
/// [`PipeStream::poll_flush`] and [`PipeStream::poll_shutdown`]; with feature `tokio` it
/// implements `tokio::io::AsyncRead` + `AsyncWrite`, with feature `futures-io`
/// `futures_io::AsyncRead` + `AsyncWrite` (`poll_close` = shutdown of the write side). Each
/// read takes bytes from one message the engine delivered (a socket read), keeping the rest
/// for the next read. Each write takes at most what the pipe's outbound buffer has room for
/// (`max_out_bytes`) and waits while it is full. Reads end (`Ok(0)`) after the peer's FIN or
/// a clean end; a reset reads as `ConnectionReset`, a deadline as `TimedOut`. Dropping the
/// stream drops its pipe handle (the last owning handle closes the pipe, flushing what is
/// queued within `close_timeout`).
pub struct PipeStream<R: Runtime> {
    pipe: Pipe<R>,
    /// The unread rest of the last message taken from the engine.
    leftover: Bytes,
    read_wait: Option<EventListener>,
    write_wait: Option<BoxFuture<()>>,
    shutdown: bool,
}

impl<R: Runtime> std::fmt::Debug for PipeStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeStream")
            .field("pipe", &self.pipe)
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> PipeStream<R> {
    /// The pipe under the stream: its stats, addresses, ALPN, end callbacks.
    pub fn pipe(&self) -> &Pipe<R> {
        &self.pipe
    }

    /// The pipe back, with the bytes read from the engine but not yet from the stream (they
    /// are no longer in the pipe's queue). The pipe stays in stream mode (`keep_writable`).
    pub fn into_parts(self) -> (Pipe<R>, Bytes) {
        (self.pipe, self.leftover)
    }

    /// Make `leftover` non-empty, or report the end of the stream (`leftover` stays empty).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.leftover.is_empty() {
                return Poll::Ready(Ok(()));
            }
            // A queued message costs no listener: one is made only when the queue is empty,
            // and the queue is checked again after it is made, so a message arriving in
            // between is not missed.
            let armed = self.read_wait.is_some();
            let got = {
                let mut g = self.pipe.group.lock();
                let got = g.engine.recv(self.pipe.id, SubId::ALL);
                // Taking a message may resume a paused pipe (the engine's Resume).
                if matches!(got, Ok(Some(_))) {
                    self.pipe.group.pump(&mut g);
                }
                got
            };
            match got {
                Ok(Some(m)) => {
                    self.read_wait = None;
                    self.leftover = m.data;
                }
                Ok(None) if !armed => {
                    self.read_wait = Some(self.pipe.entry.readable.listen());
                }
                Ok(None) => {
                    let listener = self.read_wait.as_mut().expect("armed");
                    match Pin::new(listener).poll(cx) {
                        Poll::Ready(()) => self.read_wait = None,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(RecvError::NotSubscribed) => {
                    self.read_wait = None;
                    return Poll::Ready(Err(io::Error::other(
                        "the stream's subscription was removed",
                    )));
                }
                Err(_) => {
                    self.read_wait = None;
                    return Poll::Ready(end_of_stream(&self.pipe.entry));
                }
            }
        }
    }

    /// The unread bytes, after [`PipeStream::poll_fill`] (empty: end of stream).
    pub fn buffered(&self) -> &[u8] {
        &self.leftover
    }

    /// Mark `n` buffered bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.leftover.advance(n.min(self.leftover.len()));
    }

    /// Read into `buf`: `Ok(0)` at the end of the stream (or for an empty `buf`).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.poll_fill(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_ok(|()| 0),
        }
        let n = buf.len().min(self.leftover.len());
        buf[..n].copy_from_slice(&self.leftover[..n]);
        self.leftover.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Wait for a wake-up set up by an earlier `Pending`.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(w) = self.write_wait.as_mut() {
            std::task::ready!(w.as_mut().poll(cx));
            self.write_wait = None;
        }
        Poll::Ready(())
    }

    /// Arm the wait for room (or the pipe's end) and poll it once.
    fn wait_for_room(&mut self, cx: &mut Context<'_>, listener: EventListener) -> Poll<()> {
        let group = self.pipe.group.clone();
        self.write_wait = Some(Box::pin(wait_room(group, self.pipe.id, listener)));
        self.poll_waiting(cx)
    }

    /// Write some of `buf`: as much as the pipe's outbound buffer has room for.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            std::task::ready!(self.poll_waiting(cx));
            let listener = self.pipe.entry.writable.listen();
            let room = {
                let g = self.pipe.group.lock();
                let max = g.engine.conf(self.pipe.id).map_or(0, |c| c.max_out_bytes);
                max.saturating_sub(g.engine.out_bytes(self.pipe.id))
            };
            let res = if room == 0 {
                Err(SendError::WouldBlock)
            } else {
                let n = buf.len().min(room);
                self.pipe.try_send(&buf[..n], None).map(|()| n)
            };
            match res {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(SendError::WouldBlock) if !self.pipe.entry.is_ended() => {
                    std::task::ready!(self.wait_for_room(cx, listener));
                }
                // Ended: no room will come (a `WouldBlock` error would tell a caller to retry).
                Err(SendError::WouldBlock) => {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
                }
                Err(e) => return Poll::Ready(Err(send_error(e))),
            }
        }
    }

    /// Wait until every byte written was handed to the socket.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.poll_waiting(cx));
            let listener = self.pipe.entry.writable.listen();
            let queued = {
                let mut g = self.pipe.group.lock();
                let now = self.pipe.group.rt.now();
                let _ = flush(&mut g, self.pipe.id, now, false);
                self.pipe.group.pump(&mut g);
                g.engine.out_bytes(self.pipe.id)
            };
            if queued == 0 {
                return Poll::Ready(Ok(()));
            }
            if self.pipe.entry.is_released() || self.pipe.entry.is_closed() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            std::task::ready!(self.wait_for_room(cx, listener));
        }
    }

    /// Half-close: write what is queued, then the FIN (TLS: `close_notify` first); the
    /// stream still reads. Ready once the FIN is sent. A stream whose pipe already ended
    /// cleanly shuts down at once.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shutdown {
            self.shutdown = true;
            let mut g = self.pipe.group.lock();
            let now = self.pipe.group.rt.now();
            let res = g.engine.shutdown_write(now, self.pipe.id);
            let _ = flush(&mut g, self.pipe.id, now, false);
            self.pipe.group.pump(&mut g);
            if let Err(e) = res {
                if e != SendError::Closed {
                    return Poll::Ready(Err(send_error(e)));
                }
            }
        }
        loop {
            std::task::ready!(self.poll_waiting(cx));
            let listener = self.pipe.entry.writable.listen();
            match shutdown_done(&self.pipe.entry) {
                Some(Ok(())) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(send_error(e))),
                None => {}
            }
            std::task::ready!(self.wait_for_room(cx, listener));
        }
    }
}

/// What a read says once the pipe's queue is drained and nothing more comes.
fn end_of_stream(entry: &Entry) -> io::Result<()> {
    let kind = match entry.end_reason() {
        None
        | Some(EndReason::PeerClosed)
        | Some(EndReason::Local)
        | Some(EndReason::ServerClosed) => return Ok(()),
        Some(EndReason::Reset) => io::ErrorKind::ConnectionReset,
        Some(EndReason::IdleTimeout)
        | Some(EndReason::FirstMessageTimeout)
        | Some(EndReason::WriteStalled { .. }) => io::ErrorKind::TimedOut,
        Some(other) => return Err(io::Error::other(other.to_string())),
    };
    Err(kind.into())
}

/// A send error as a stream user meets it.
fn send_error(e: SendError) -> io::Error {
    match e {
        SendError::Closed => io::ErrorKind::BrokenPipe.into(),
        SendError::WouldBlock => io::ErrorKind::WouldBlock.into(),
        other => io::Error::other(other),
    }
}

/// A subscription as a `futures_core::Stream` ([`Pipe::messages`]).
pub struct Messages<R: Runtime> {
    pipe: Pipe<R>,
    sub: SubId,
    wait: Option<EventListener>,
}

impl<R: Runtime> std::fmt::Debug for Messages<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("pipe", &self.pipe)
            .field("sub", &self.sub)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> futures_core::Stream for Messages<R> {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = self.get_mut();
        loop {
            // As `PipeStream::poll_fill`: a listener only when the queue is empty, then the
            // queue checked again.
            let armed = this.wait.is_some();
            let got = {
                let mut g = this.pipe.group.lock();
                let got = g.engine.recv(this.pipe.id, this.sub);
                if matches!(got, Ok(Some(_))) {
                    this.pipe.group.pump(&mut g);
                }
                got
            };
            match got {
                Ok(Some(m)) => {
                    this.wait = None;
                    return Poll::Ready(Some(m));
                }
                Ok(None) if !armed => this.wait = Some(this.pipe.entry.readable.listen()),
                Ok(None) => {
                    let listener = this.wait.as_mut().expect("armed");
                    match Pin::new(listener).poll(cx) {
                        Poll::Ready(()) => this.wait = None,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(_) => {
                    this.wait = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(feature = "tokio")]
mod tokio_io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    impl<R: Runtime> AsyncRead for PipeStream<R> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(this.poll_fill(cx))?;
            let n = buf.remaining().min(this.leftover.len());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            Poll::Ready(Ok(()))
        }
    }

    impl<R: Runtime> AsyncWrite for PipeStream<R> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_shutdown(cx)
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impl {
    use super::*;

    impl<R: Runtime> futures_io::AsyncRead for PipeStream<R> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_read(cx, buf)
        }
    }

    impl<R: Runtime> futures_io::AsyncBufRead for PipeStream<R> {
        fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
            let this = self.get_mut();
            std::task::ready!(this.poll_fill(cx))?;
            Poll::Ready(Ok(&this.leftover))
        }
        fn consume(self: Pin<&mut Self>, amt: usize) {
            self.get_mut().consume(amt);
        }
    }

    impl<R: Runtime> futures_io::AsyncWrite for PipeStream<R> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_flush(cx)
        }
        /// Shuts the write side (a FIN); the stream still reads. Drop it to close.
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_shutdown(cx)
        }
    }
}
