//! The inbound pipeline, in P2PD's order with its bugs fixed:
//! reliable-UDP control → relay stamp → dedup → links → callback event → subscriptions
//! (after the callbacks, `subs.rs`).
//!
//! On a pipe with `Conf::relay_stamp`, the stamp step splits off a message's stamp header (or
//! stamps an unstamped one as an original of this engine) and drops a stamp seen before; local
//! sinks get the payload without the header, links forward it with one hop less, or not at all
//! when no hops are left ([`crate::relay`]).
//!
//! Each sink is isolated: a failing forward never stops local delivery (P2PD skipped the
//! callbacks and queues of a message whose forward raised), and every message that reaches no
//! sink is counted.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::Target;
use super::{Engine, Kind, State, MAX_EVENTS};
use crate::addr::same_ip;
use crate::dedup::Seq;
use crate::event::{EndReason, Event, Message, Outcome, PipeId};
use crate::relay::{self, Stamp};
use crate::rudp::{self, Frame};

impl Engine {
    /// A datagram arrived on a UDP pipe's socket.
    pub fn handle_datagram(&mut self, now: Instant, pipe: PipeId, from: SocketAddr, data: &[u8]) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.kind != Kind::Udp || !p.is_open() {
            p.stats.rare().ignored += 1;
            return;
        }
        p.stats.bytes_in += data.len() as u64;
        p.t.last_activity = p.t.mark(now);
        if !p.conf.reliable_udp {
            self.deliver_slice(pipe, from, data);
            self.settle(pipe);
            return;
        }
        self.datagram_reliable(pipe, from, data);
        self.settle(pipe);
    }

    fn datagram_reliable(&mut self, pipe: PipeId, from: SocketAddr, data: &[u8]) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        match rudp::decode(data) {
            Err(e) => {
                log::trace!("{pipe}: dropped datagram from {from}: {e}");
                p.stats.rare().malformed += 1;
            }
            Ok(Frame::Ack { seq }) => {
                let pending = p.rare().rel.as_ref().and_then(|r| r.outstanding.get(&seq));
                let matched = pending.is_some_and(|o| {
                    same_ip(o.dest.ip(), from.ip()) && o.dest.port() == from.port()
                });
                if !matched {
                    p.stats.rare().stray_acks += 1;
                    return;
                }
                if let Some(o) = pending {
                    self.timers.remove(&(o.deadline, pipe, seq));
                }
                self.finish_reliable(pipe, seq, Outcome::Acked);
            }
            Ok(Frame::Data { seq, payload }) => {
                let verdict = p
                    .rare_opt()
                    .and_then(|r| r.seen.as_mut())
                    .map_or(Seq::Fresh, |s| s.check(canonical(from), seq));
                let fresh = match verdict {
                    Seq::Fresh => true,
                    Seq::Repeat => {
                        p.stats.rare().reliable_repeats += 1;
                        false
                    }
                    Seq::TooOld => {
                        // Not acknowledged: the sender ends it `Unconfirmed` (it may have been
                        // delivered), so that `Acked` keeps meaning delivered.
                        log::trace!("{pipe}: seq {seq} from {from} is older than the window");
                        p.stats.rare().reliable_too_old += 1;
                        return;
                    }
                };
                // Ack every copy in the window: the first ACK may have been lost.
                self.push_internal(pipe, from, rudp::encode(seq, rudp::FLAG_ACK, &[]));
                if fresh {
                    self.deliver_slice(pipe, from, payload);
                }
            }
            Ok(Frame::Plain { payload }) => self.deliver_slice(pipe, from, payload),
        }
    }

    /// Bytes arrived on a TCP connection. All of `data` is consumed: complete frames go through
    /// the pipeline, a partial frame is buffered (within the framing limit). A frame over the
    /// limit ends the connection with [`EndReason::FrameTooLarge`].
    pub fn handle_stream(&mut self, now: Instant, pipe: PipeId, data: &[u8]) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if !p.kind.is_stream() || !p.is_open() {
            p.stats.rare().ignored += 1;
            return;
        }
        let Some(from) = p.dest else { return };
        p.stats.bytes_in += data.len() as u64;
        p.t.last_activity = p.t.mark(now);
        if p.session.tls().is_some() {
            self.tls_stream(pipe, from, data);
            return;
        }
        self.stream_plain(pipe, from, data);
    }

    /// Socket bytes of a TLS pipe: decrypt, answer the handshake, deliver the plaintext.
    fn tls_stream(&mut self, pipe: PipeId, from: SocketAddr, data: &[u8]) {
        let Some(t) = self.pipes.get_mut(&pipe).and_then(|p| p.session.tls()) else {
            return;
        };
        let res = t.inbound(data);
        self.flush_tls(pipe);
        match res {
            Err(e) => {
                log::debug!("{pipe}: TLS: {e}");
                self.end(pipe, State::PeerClosed, EndReason::Tls(e));
            }
            Ok(tin) => {
                if tin.handshake_done {
                    self.handshake_done(pipe);
                }
                if !tin.plain.is_empty() {
                    let raw = self.pipes.get(&pipe).is_some_and(|p| p.deframer.is_none());
                    if raw {
                        // A read's plaintext is the message: the decrypted buffer becomes
                        // it, not a copy of it.
                        self.stream_raw(pipe, from, Bytes::from(tin.plain));
                    } else {
                        self.stream_plain(pipe, from, &tin.plain);
                    }
                }
                if tin.peer_closed {
                    // `close_notify`: the read side is closed (half-close, `half.rs`).
                    self.peer_fin(pipe);
                }
            }
        }
        self.settle(pipe);
    }

    /// A read of a `Framing::Raw` stream (not empty): one message.
    fn stream_raw(&mut self, pipe: PipeId, from: SocketAddr, data: Bytes) {
        if !self.pipes.get(&pipe).is_some_and(|p| p.is_open()) {
            return;
        }
        self.deliver(pipe, from, data);
        self.settle(pipe);
    }

    /// Plaintext of a stream: a message per read (raw), or frames.
    fn stream_plain(&mut self, pipe: PipeId, from: SocketAddr, plain: &[u8]) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if !p.is_open() {
            return;
        }
        let Some(deframer) = p.deframer.as_mut() else {
            if !plain.is_empty() {
                self.stream_raw(pipe, from, Bytes::copy_from_slice(plain));
            }
            return;
        };
        let mut frames = std::mem::take(&mut self.scratch);
        let result = deframer.feed(plain, &mut |f| frames.push(f));
        for f in frames.drain(..) {
            self.deliver(pipe, from, f);
        }
        self.scratch = frames;
        self.settle(pipe);
        if let Err(e) = result {
            log::debug!(
                "{pipe}: frame of {} bytes over the limit of {}",
                e.len,
                e.max
            );
            self.end(
                pipe,
                State::PeerClosed,
                EndReason::FrameTooLarge {
                    len: e.len,
                    max: e.max,
                },
            );
        }
    }

    /// Like [`Engine::handle_stream`], taking bytes the driver already owns: with
    /// `Framing::Raw` over the plain session they become the message without a copy.
    pub fn handle_stream_bytes(&mut self, now: Instant, pipe: PipeId, data: Bytes) {
        let passthrough = self.pipes.get(&pipe).is_some_and(|p| {
            p.kind.is_stream() && p.is_open() && p.session.is_plain() && p.deframer.is_none()
        });
        let from = self.pipes.get(&pipe).and_then(|p| p.dest);
        match from {
            Some(from) if passthrough && !data.is_empty() => {
                self.tick(now);
                if let Some(p) = self.pipes.get_mut(&pipe) {
                    p.stats.bytes_in += data.len() as u64;
                    p.t.last_activity = p.t.mark(now);
                }
                self.deliver(pipe, from, data);
                self.settle(pipe);
            }
            _ => self.handle_stream(now, pipe, &data),
        }
    }

    /// Dedup before copying, so a duplicate costs no allocation.
    fn deliver_slice(&mut self, pipe: PipeId, from: SocketAddr, data: &[u8]) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.stats.received += 1;
        p.t.got_message = true;
        let (stamp, skip) = if p.rare().stamps.is_some() {
            match self.unstamp(pipe, data) {
                Some((stamp, skip)) => (Some(stamp), skip),
                None => return,
            }
        } else {
            (None, 0)
        };
        let body = &data[skip..];
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if let Some(d) = p.dedup.as_mut() {
            if !d.check(&from, body) {
                p.stats.rare().duplicates += 1;
                return;
            }
        }
        self.sinks(pipe, from, Bytes::copy_from_slice(body), stamp);
    }

    fn deliver(&mut self, pipe: PipeId, from: SocketAddr, data: Bytes) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.stats.received += 1;
        p.t.got_message = true;
        let (stamp, data) = if p.rare().stamps.is_some() {
            match self.unstamp(pipe, &data) {
                Some((stamp, skip)) => (Some(stamp), data.slice(skip..)),
                None => return,
            }
        } else {
            (None, data)
        };
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if let Some(d) = p.dedup.as_mut() {
            if !d.check(&from, &data) {
                p.stats.rare().duplicates += 1;
                return;
            }
        }
        self.sinks(pipe, from, data, stamp);
    }

    /// The relay-stamp step of a stamping pipe: the message's stamp and header length, or a
    /// new stamp of this engine for an unstamped message (an original, recorded so that its
    /// copy coming back around a cycle is dropped). `None`: dropped and counted (a header cut
    /// short, or a stamp already seen).
    fn unstamp(&mut self, pipe: PipeId, data: &[u8]) -> Option<(Stamp, usize)> {
        let decoded = relay::decode(data);
        let (stamp, skip) = match decoded {
            Ok(Some((stamp, _))) => (stamp, relay::HEADER),
            Ok(None) => {
                let origin = *self.relay_origin.get_or_insert_with(|| self.rng.next_u64());
                let id = self.relay_next_id;
                self.relay_next_id = id.wrapping_add(1);
                let hops = self.pipes.get(&pipe)?.conf.relay_hops;
                (Stamp { origin, id, hops }, 0)
            }
            Err(e) => {
                let p = self.pipes.get_mut(&pipe)?;
                log::trace!("{pipe}: dropped message: {e}");
                p.stats.rare().malformed += 1;
                return None;
            }
        };
        let p = self.pipes.get_mut(&pipe)?;
        let stamps = p.rare.as_deref_mut()?.stamps.as_mut()?;
        if !stamps.check(stamp.origin, stamp.id) {
            p.stats.rare().duplicates += 1;
            return None;
        }
        Some((stamp, skip))
    }

    /// Links, then the callback event, then subscriptions. `stamp`: the message's relay stamp
    /// as received (stamping pipes only); links forward it with one hop less.
    fn sinks(&mut self, pipe: PipeId, from: SocketAddr, data: Bytes, stamp: Option<Stamp>) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let mut claimed = false;
        if !p.rare().links.is_empty() {
            // The engine's list, not one allocated per message (left empty between uses).
            let mut hops = std::mem::take(&mut self.hops);
            hops.extend(
                p.rare()
                    .links
                    .iter()
                    .filter(|l| {
                        l.from.is_none_or(|f| {
                            same_ip(f.ip(), from.ip()) && (f.port() == 0 || f.port() == from.port())
                        })
                    })
                    .map(|l| (l.id, l.target, l.dest)),
            );
            claimed = !hops.is_empty();
            // What the links forward: the message itself, or it with its stamp one hop less.
            let restamped = match stamp {
                None => None,
                Some(s) if s.hops > 1 => Some(relay::encode(
                    Stamp {
                        hops: s.hops - 1,
                        ..s
                    },
                    &data,
                )),
                Some(_) => {
                    if claimed {
                        p.stats.rare().hop_limited += 1;
                    }
                    hops.clear();
                    None
                }
            };
            let fwd = restamped.as_ref().unwrap_or(&data);
            for &(link, target, dest) in &hops {
                let ok = match target {
                    Target::Local(t) => self.forward_local(pipe, t, fwd, dest),
                    Target::External(target) if self.events.len() < MAX_EVENTS => {
                        self.events.push_back(Event::Forward {
                            from: pipe,
                            link,
                            target,
                            dest,
                            data: fwd.clone(),
                        });
                        true
                    }
                    Target::External(_) => {
                        if let Some(p) = self.pipes.get_mut(&pipe) {
                            p.stats.rare().events_dropped += 1;
                        }
                        false
                    }
                };
                let Some(p) = self.pipes.get_mut(&pipe) else {
                    return;
                };
                if ok {
                    // An external forward counts when the driver reports its result.
                    if matches!(target, Target::Local(_)) {
                        p.stats.forwarded += 1;
                    }
                } else {
                    p.stats.rare().forward_failed += 1;
                    if matches!(target, Target::Local(t) if self_state_closed(t, &self.pipes)) {
                        if let Some(p) = self.pipes.get_mut(&pipe) {
                            if let Some(r) = p.rare_opt() {
                                r.links.retain(|l| l.id != link);
                            }
                        }
                    }
                }
            }
            hops.clear();
            self.hops = hops;
        }
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let mut waits = false;
        let mut data = data;
        if p.callbacks || p.parent_callbacks {
            claimed = true;
            if self.events.len() < MAX_EVENTS {
                waits = true;
                p.t.held_bytes += data.len();
                p.t.held_jobs += 1;
                // Without subscriptions the next step keeps nothing of it: the callbacks get
                // the message itself (a clone of a freshly copied `Bytes` allocates).
                let data = if p.subs.is_empty() {
                    std::mem::take(&mut data)
                } else {
                    data.clone()
                };
                self.events.push_back(Event::Message {
                    pipe,
                    msg: Message { data, from },
                });
            } else {
                p.stats.rare().events_dropped += 1;
            }
        }
        // Subscriptions after the callbacks (`subs.rs`).
        self.subscriptions_step(pipe, from, data, claimed, waits);
    }

    /// Send a linked message from `source` out through a pipe of this engine.
    ///
    /// A datagram target takes it up to the hard cap of engine-made transmits, past which it
    /// is dropped (counted in `out_dropped`), like any datagram. A stream target never drops
    /// one: a byte stream has no holes, and a TLS record dropped after it was encrypted would
    /// break the session. Once the target holds `max_out_bytes` the source pauses instead
    /// (backpressure, as a link to another engine's pipe waits for room), so the target holds
    /// at most its buffer plus the read of each source that filled it.
    fn forward_local(
        &mut self,
        source: PipeId,
        target: PipeId,
        data: &Bytes,
        dest: Option<SocketAddr>,
    ) -> bool {
        let Some(t) = self.pipes.get_mut(&target) else {
            return false;
        };
        if !t.can_write() {
            return false;
        }
        match Self::frame_out(t, data, Some(data), dest) {
            Ok((dst, payload)) => {
                let ok = if t.kind.is_stream() {
                    // Empty: TLS holds it until the target's handshake is done.
                    if !payload.is_empty() {
                        self.push_out(target, dst, payload);
                    }
                    self.wait_if_full(source, target);
                    true
                } else {
                    self.push_internal(target, dst, payload)
                };
                self.settle(target);
                ok
            }
            Err(e) => {
                log::debug!("forward through {target} failed: {e}");
                false
            }
        }
    }
}

fn self_state_closed(t: PipeId, pipes: &super::Pipes) -> bool {
    pipes.get(&t).is_none_or(|p| !p.can_write())
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
