//! Half-close of stream pipes (TCP, and TLS over it).
//!
//! A peer's FIN closes a pipe's read side only. The pipe stays writable while something may
//! still answer, and ends (`End { PeerClosed }`) when:
//! - its write side is shut too (a local [`Engine::shutdown_write`], or a linked partner's
//!   FIN propagated to it), the queued bytes then leave before the socket closes; or
//! - nothing may answer any more: no callback job of the pipe is pending, the pipe is not in
//!   stream mode ([`Engine::keep_writable`]) and it has no paired link (a relay partner that
//!   may still forward into it), and it is not a connection a user holds: one queued at a
//!   listener that `accept()` serves, or one `accept()` handed out, until its user acts on it
//!   in P2PD's way ([`Engine::user_acts`]: a callback edit, a wait for its end). A user that
//!   takes a connection and reads and writes it holds it like a `TcpStream`: the peer's FIN
//!   ends its reading, not its writing, whether the driver read the FIN before or after the
//!   take (that is a matter of scheduling, so it must not decide whether the user may answer
//!   the request it read). Its queued bytes then leave as after any end.
//!
//! A local `close` ends it as always. Every wait stays bounded by the pipe's deadlines: the
//! idle and write-stall deadlines while it is open, `close_timeout` once it ended.
//!
//! Links propagate half-close pairwise: a pipe whose link's target links back to it (two
//! pipes linked both ways, a relay) shuts the target's write side when its peer's FIN
//! arrives, or when it ends, after every byte it forwarded before (a local target at once:
//! its queue already holds them; another engine's through [`Event::ForwardShutdown`], which
//! the driver runs in order with the forwards emitted before it).
//!
//! TLS: the peer's `close_notify` closes the read side like a FIN (a FIN without it still
//! ends the pipe with `TlsError::Truncated`); `shutdown_write` queues our `close_notify`,
//! then the FIN. After sending `close_notify` the pipe still reads.

use std::time::Instant;

use super::{Engine, State, Target};
use crate::error::SendError;
use crate::event::{EndReason, Event, LinkId, PipeId, TargetToken};

impl Engine {
    /// Shut the pipe's write side: sends fail from now on ([`SendError::Closed`]); once the
    /// bytes queued before are written the engine emits [`Event::WriteShut`] and the driver
    /// shuts the socket's write side (a FIN; a TLS pipe sends `close_notify` first). The pipe
    /// still reads until the peer's FIN, which then ends it. If the peer's FIN came first, the
    /// pipe ends now (`PeerClosed`) and its socket closes once the queue is written.
    /// Idempotent. Stream pipes only ([`SendError::WrongKind`] otherwise).
    pub fn shutdown_write(&mut self, now: Instant, pipe: PipeId) -> Result<(), SendError> {
        self.tick(now);
        let p = self.pipes.get_mut(&pipe).ok_or(SendError::Closed)?;
        if !p.kind.is_stream() {
            return Err(SendError::WrongKind(p.kind.name()));
        }
        if !p.is_open() {
            return Err(SendError::Closed);
        }
        if p.half.write_shut {
            return Ok(());
        }
        p.half.write_shut = true;
        if let Some(t) = p.session.tls() {
            t.close_notify();
            self.flush_tls(pipe);
        }
        self.check_half(pipe);
        self.maybe_fin(pipe);
        Ok(())
    }

    /// Stream mode: after the peer's FIN the pipe stays writable until it is shut down or
    /// closed locally, like a `TcpStream` (otherwise it ends once nothing may answer).
    /// Turning it off re-applies that rule.
    pub fn keep_writable(&mut self, pipe: PipeId, on: bool) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.half.keep_writable = on;
        p.half.undecided = false;
        self.settle(pipe);
        self.check_half(pipe);
    }

    /// The user of a connection `accept()` handed out acted on it in P2PD's way: a callback
    /// edit ([`Engine::set_callbacks`] calls this itself), a wait for its end, or a listener
    /// whose callbacks serve it (a driver calls this). Until then the connection is held like
    /// a `TcpStream` (`recv`, `send` and subscriptions do not change that): a peer's FIN ends
    /// its reading, not its writing, and only a local close, a shutdown or a deadline ends
    /// it. From now on the usual rule applies: a FIN, or one that came before, ends it once
    /// nothing may answer. Stream mode ([`Engine::keep_writable`]) settles it the other way:
    /// writable until shut down. A no-op for any other pipe, and after the first act.
    pub fn user_acts(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if std::mem::take(&mut p.half.undecided) {
            self.check_half(pipe);
        }
    }

    /// The peer's FIN (or `close_notify`) arrived: nothing more will be read.
    pub fn is_read_closed(&self, pipe: PipeId) -> bool {
        self.pipes
            .get(&pipe)
            .is_none_or(|p| p.half.read_closed || !p.is_open())
    }

    /// The write side was shut ([`Engine::shutdown_write`], or propagated from a partner).
    pub fn is_write_shut(&self, pipe: PipeId) -> bool {
        self.pipes.get(&pipe).is_none_or(|p| !p.can_write())
    }

    /// Mark a link as one half of a pair: its target links back to `pipe` (the driver knows
    /// this for a link to another engine's pipe; the engine finds local pairs itself). A
    /// paired link propagates half-close (module docs). False if there is no such link.
    pub fn set_link_paired(&mut self, pipe: PipeId, link: LinkId) -> bool {
        let Some(l) = self
            .pipes
            .get_mut(&pipe)
            .and_then(|p| p.rare_opt()?.links.iter_mut().find(|l| l.id == link))
        else {
            return false;
        };
        l.paired = true;
        true
    }

    /// The links of `pipe` to other engines' pipes, with their tokens (a driver pairs them:
    /// [`Engine::set_link_paired`]).
    pub fn external_links(&self, pipe: PipeId) -> Vec<(LinkId, TargetToken)> {
        self.pipes.get(&pipe).map_or_else(Vec::new, |p| {
            p.rare()
                .links
                .iter()
                .filter_map(|l| match l.target {
                    Target::External(t) => Some((l.id, t)),
                    Target::Local(_) => None,
                })
                .collect()
        })
    }

    /// After `link` made a local link from `pipe` to `target`: if `target` links back to
    /// `pipe`, both links are a pair.
    pub(crate) fn pair_local(&mut self, pipe: PipeId, link: LinkId, target: PipeId) {
        let back = self.pipes.get_mut(&target).and_then(|t| {
            t.rare_opt()?
                .links
                .iter_mut()
                .find(|l| l.target == Target::Local(pipe))
        });
        let Some(back) = back else {
            return;
        };
        back.paired = true;
        self.set_link_paired(pipe, link);
    }

    /// The peer's FIN on a stream pipe (not truncated TLS, not a reset).
    pub(crate) fn peer_fin(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if !p.is_open() || p.half.read_closed {
            return;
        }
        p.half.read_closed = true;
        // Readers waiting on an empty queue learn that nothing more comes.
        if !p.readable_pending {
            p.readable_pending = true;
            self.events.push_back(Event::Readable { pipe });
        }
        self.propagate_shutdown(pipe);
        self.check_half(pipe);
    }

    /// Shut the write side of every paired link's target, after what was forwarded to it.
    pub(crate) fn propagate_shutdown(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get(&pipe) else {
            return;
        };
        let paired: Vec<(LinkId, Target)> = p
            .rare()
            .links
            .iter()
            .filter(|l| l.paired)
            .map(|l| (l.id, l.target))
            .collect();
        let now = self.now;
        for (link, target) in paired {
            match target {
                Target::Local(t) => {
                    if let Some(now) = now {
                        let _ = self.shutdown_write(now, t);
                    }
                }
                Target::External(target) => self.events.push_back(Event::ForwardShutdown {
                    from: pipe,
                    link,
                    target,
                }),
            }
        }
    }

    /// End a half-closed pipe once nothing may answer, or once both sides are shut.
    pub(crate) fn check_half(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get(&pipe) else {
            return;
        };
        if !p.is_open() || !p.half.read_closed {
            return;
        }
        // A connection a user holds or will hold: only a local close (or dropping its owning
        // handle), a shutdown or a deadline ends it. That is one waiting in the queue of a
        // listener that `accept()` serves, and one taken from there that its user has not
        // acted on in P2PD's way (`user_acts`).
        let user_served = p.half.undecided
            || (p.in_accept_q
                && match p.kind {
                    super::Kind::TcpConn { listener } => self
                        .pipes
                        .get_likely_first(&listener)
                        .is_some_and(|l| l.ls().accepting),
                    _ => false,
                });
        let answerable = p.t.held_jobs > 0
            || p.half.keep_writable
            || user_served
            || p.rare().links.iter().any(|l| l.paired);
        if p.half.write_shut || !answerable {
            self.end(pipe, State::PeerClosed, EndReason::PeerClosed);
        }
    }

    /// Emit `WriteShut` once the write side is shut and the queue is written.
    pub(crate) fn maybe_fin(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.is_open() && p.half.write_shut && !p.half.fin_out && p.out_idle() {
            p.half.fin_out = true;
            self.events.push_back(Event::WriteShut { pipe });
        }
    }
}
