//! Zero-copy relaying: the engine's side of moving a relay's bytes in the kernel.
//!
//! Two raw TCP pipes linked both ways (a relay) need not see the bytes they forward: the
//! driver may move them from the source pipe's socket into a kernel pipe and from there into
//! the target's socket (Linux `splice(2)`), without copying them through user space. The
//! engine decides when that is allowed and keeps the accounting, as for copied bytes:
//!
//! - [`Engine::splice_source`]: the source pipe may hand its bytes to the kernel: both sides
//!   allow it ([`crate::Conf::zero_copy`]), it is an open TCP pipe that has not seen its
//!   peer's FIN, plain (no TLS), `Framing::Raw`, without dedup or relay stamps, without
//!   message callbacks (its own or its listener's) or messages held for them, with no
//!   subscription but an accepted connection's fallback (which takes only what no link
//!   took), not paused, and with exactly one link, which forwards everything, to its default
//!   destination, to another engine's pipe that links back (a paired link). Anything else
//!   (someone subscribes, adds a callback) makes it `None`, and the driver copies again.
//! - [`Engine::handle_spliced`]: `n` bytes left the source's socket through the link: counted
//!   as received, forwarded and spliced bytes, and as activity (idle and first-message
//!   deadlines).
//! - On the target: [`Engine::splice_begin`] reserves the pipe's socket for spliced bytes
//!   (only while its outbound queue is empty, so order is kept); while reserved its sends
//!   queue and nothing of its queue is written ([`Engine::peek_transmit`] gives nothing), so
//!   no send lands inside a spliced chunk; the pipe is not released and its FIN
//!   ([`crate::Event::WriteShut`]) waits. [`Engine::handle_spliced_out`] counts bytes written
//!   (output and write progress: the write-stall deadline runs from the reservation);
//!   [`Engine::splice_end`] ends the reservation, counting bytes the driver could not
//!   deliver as unsent; the queue then leaves as usual. The close deadline ends a reservation
//!   of an ended pipe like any queued output.
//!
//! The source's EOF goes through [`Engine::handle_peer_closed`] as on the copying path, so the
//! partner's FIN follows the spliced bytes.

use std::time::Instant;

use super::{Engine, Kind, Target};
use crate::addr::same_ip;
use crate::event::{LinkId, PipeId, SubId, TargetToken};

impl Engine {
    /// Whether `pipe`'s incoming bytes may be spliced to its link's target, and which link
    /// and target: see the module docs for the rule. The target's side is checked by its own
    /// engine ([`Engine::splice_begin`]).
    pub fn splice_source(&self, pipe: PipeId) -> Option<(LinkId, TargetToken)> {
        let p = self.pipes.get(&pipe)?;
        // Cheapest checks first: the driver asks after every copied read.
        let [l] = p.rare().links.as_slice() else {
            return None;
        };
        let Target::External(token) = l.target else {
            return None;
        };
        let eligible = p.conf.zero_copy
            && l.paired
            && l.dest.is_none()
            && l.from.is_none_or(|f| {
                p.dest.is_some_and(|d| {
                    same_ip(f.ip(), d.ip()) && (f.port() == 0 || f.port() == d.port())
                })
            })
            && matches!(p.kind, Kind::TcpClient | Kind::TcpConn { .. })
            && p.is_open()
            && !p.half.read_closed
            && p.session.is_plain()
            && p.deframer.is_none()
            && p.dedup.is_none()
            && p.rare().stamps.is_none()
            && !p.callbacks
            && !p.parent_callbacks
            && p.held.is_empty()
            && p.t.held_jobs == 0
            && !p.t.paused
            && p.subs
                .iter()
                .all(|s| s.id == SubId::ALL && p.fallback_all && !s.handler);
        eligible.then_some((l.id, token))
    }

    /// `n` bytes read from `pipe`'s socket went to its link's target in the kernel (after
    /// [`Engine::splice_source`] gave `link`): counted like a forwarded read.
    pub fn handle_spliced(&mut self, now: Instant, pipe: PipeId, link: LinkId, n: usize) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if n == 0 {
            return;
        }
        p.stats.bytes_in += n as u64;
        p.stats.received += 1;
        // Unlinked meanwhile: the chunk still goes to the target it was reserved for.
        if p.rare().links.iter().any(|l| l.id == link) {
            p.stats.forwarded += 1;
        }
        p.stats.rare().spliced_in += n as u64;
        p.t.last_activity = p.t.mark(now);
        p.t.got_message = true;
    }

    /// Reserve `pipe`'s socket for bytes spliced into it: true when it may take them now (a
    /// plain, raw, writable TCP pipe allowing zero copy, nothing queued, not reserved
    /// already). Until [`Engine::splice_end`], its queue is held back and its release and FIN
    /// wait; the write-stall deadline runs from now.
    pub fn splice_begin(&mut self, now: Instant, pipe: PipeId) -> bool {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return false;
        };
        let ok = p.conf.zero_copy
            && matches!(p.kind, Kind::TcpClient | Kind::TcpConn { .. })
            && p.can_write()
            && p.session.is_plain()
            && p.deframer.is_none()
            && p.out_idle();
        if !ok {
            return false;
        }
        p.splice_busy = true;
        p.t.stall_since = p.t.mark(now);
        if p.conf.write_stall_timeout.is_some() {
            self.rearm(pipe);
        }
        true
    }

    /// `n` spliced bytes were written to `pipe`'s socket: output and write progress.
    pub fn handle_spliced_out(&mut self, now: Instant, pipe: PipeId, n: usize) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if n == 0 || !p.splice_busy {
            return;
        }
        p.stats.bytes_out += n as u64;
        p.stats.rare().spliced_out += n as u64;
        p.t.last_activity = p.t.mark(now);
        p.t.stall_since = p.t.mark(now);
    }

    /// End the reservation [`Engine::splice_begin`] made: `unsent` bytes spliced for `pipe`
    /// could not be written (its socket closed or failed) and are counted in
    /// [`crate::Stats::unsent_dropped`]. What was queued meanwhile is written next; an ended
    /// pipe with nothing left is released.
    pub fn splice_end(&mut self, now: Instant, pipe: PipeId, unsent: usize) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let was = std::mem::take(&mut p.splice_busy);
        if unsent > 0 {
            p.stats.rare().unsent_dropped += unsent as u64;
        }
        if !was {
            return;
        }
        p.stats.sent += 1;
        if !p.out.is_empty() {
            p.t.stall_since = p.t.mark(now);
            if !p.in_dirty {
                p.in_dirty = true;
                self.dirty.push_back(pipe);
            }
        }
        self.after_write(pipe);
    }

    /// `pipe`'s socket is reserved for spliced bytes ([`Engine::splice_begin`]).
    pub fn is_splicing(&self, pipe: PipeId) -> bool {
        self.pipes.get(&pipe).is_some_and(|p| p.splice_busy)
    }
}
