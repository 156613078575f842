//! Subscription delivery, the last step of the inbound pipeline: a message reaches the
//! subscriptions of its pipe only after its callbacks finished, and a subscription with a
//! handler hands it to the driver instead of queueing it.
//!
//! - **Callback, then subscriptions.** A message given to the driver's callbacks
//!   ([`Event::Message`]) waits in the pipe's held list until the driver reports its callbacks
//!   done ([`Engine::handle_callback_done`]); then it is offered to the subscriptions. So
//!   `recv` cannot return a message whose callbacks have not run, on any executor. Messages
//!   behind a held one wait too (order is kept). A pipe without message callbacks pays
//!   nothing: its messages go straight to the subscriptions. The held list is bounded by the
//!   callback caps (`max_callback_jobs`, `max_callback_bytes`: past them the pipe stops
//!   reading), and by `MAX_HELD` for a driver that ignores `Pause`. A message callback that
//!   awaits `recv` on its own pipe therefore sees only
//!   messages before the one it handles (and times out waiting for later ones).
//! - **Handler subscriptions** (P2PD's `subscribe(sub, handler)`,
//!   [`Engine::subscribe_handler`]): a matching message is emitted as
//!   [`Event::SubMessage`] for the driver to run the subscription's handler, and is not queued
//!   for that subscription. The driver reports the handler done with
//!   [`Engine::handle_handler_done`]; until then the message counts against the same caps as
//!   callback messages.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{Engine, MAX_EVENTS};

/// Most messages a pipe holds for its callbacks. The driver's `Pause` keeps it far below
/// (`max_callback_jobs`); past it (a driver that ignores `Pause`), a message goes to the
/// subscriptions without waiting, and only a payload-less place is kept.
const MAX_HELD: usize = MAX_EVENTS;
/// Largest emptied held list (in messages) the engine keeps as its one spare.
pub(super) const SPARE_HELD: usize = 4;
use crate::error::SubscribeError;
use crate::event::{Event, Message, PipeId, SubId};
use crate::sub::{Filter, Held};

impl Engine {
    /// Subscribe to messages matching `filter` with a handler: each matching message is
    /// emitted as [`Event::SubMessage`] (after the pipe's message callbacks) instead of being
    /// queued. An existing subscription with an equal filter becomes a handler subscription
    /// (what it queued before stays readable with [`Engine::recv`]).
    pub fn subscribe_handler(
        &mut self,
        pipe: PipeId,
        filter: Filter,
    ) -> Result<SubId, SubscribeError> {
        let id = self.subscribe(pipe, filter)?;
        if let Some(s) = self.pipes.get_mut(&pipe).and_then(|p| p.sub_mut(id)) {
            s.handler = true;
        }
        Ok(id)
    }

    /// Whether `sub` of `pipe` exists and has a handler.
    pub fn is_handler(&self, pipe: PipeId, sub: SubId) -> bool {
        self.pipes
            .get(&pipe)
            .and_then(|p| p.subs.iter().find(|s| s.id == sub))
            .is_some_and(|s| s.handler)
    }

    /// The driver finished a subscription handler for a message of `len` bytes that came
    /// with [`Event::SubMessage`] (or has no handler for it): the pipe holds it no longer.
    pub fn handle_handler_done(&mut self, pipe: PipeId, len: usize) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.t.held_bytes = p.t.held_bytes.saturating_sub(len);
        p.t.held_jobs = p.t.held_jobs.saturating_sub(1);
        self.settle(pipe);
        self.maybe_remove(pipe);
    }

    /// The subscription step of the pipeline. `waits`: the message went to callbacks
    /// ([`Event::Message`]) and waits for them; `claimed`: a link or a callback took it.
    pub(super) fn subscriptions_step(
        &mut self,
        pipe: PipeId,
        from: SocketAddr,
        data: Bytes,
        claimed: bool,
        waits: bool,
    ) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if (waits || !p.held.is_empty()) && p.held.len() < MAX_HELD {
            let msg = (!p.subs.is_empty()).then_some(Message { data, from });
            if msg.is_none() && !claimed {
                p.stats.rare().unclaimed += 1;
            }
            push_held(
                &mut p.held,
                &mut self.spare_held,
                Held {
                    waits,
                    claimed,
                    msg,
                },
            );
            return;
        }
        if waits {
            // Past the cap (a driver that ignores `Pause`): the message does not wait, but the
            // report of its callbacks still needs its place in the list.
            push_held(
                &mut p.held,
                &mut self.spare_held,
                Held {
                    waits,
                    claimed,
                    msg: None,
                },
            );
        }
        self.offer(pipe, from, data, claimed);
    }

    /// The callbacks of the oldest message waiting for them are done: it, and every message
    /// behind it that waits for nothing, go to the subscriptions.
    pub(super) fn callbacks_finished(&mut self, pipe: PipeId) {
        let Some(mut p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if let Some(h) = p.held.iter_mut().find(|h| h.waits) {
            h.waits = false;
        }
        loop {
            if p.held.front().is_none_or(|h| h.waits) {
                return;
            }
            let Some(h) = p.held.pop_front() else { return };
            if p.held.is_empty() {
                // An idle connection keeps no buffer (72 bytes each). A small one becomes the
                // engine's spare, for the next pipe whose message waits: one message at a
                // time allocates nothing.
                let held = std::mem::take(&mut p.held);
                if held.capacity() <= SPARE_HELD && self.spare_held.capacity() == 0 {
                    self.spare_held = held;
                }
            }
            if let Some(m) = h.msg {
                self.offer(pipe, m.from, m.data, h.claimed);
                // `offer` may change the table: look the pipe up again.
                let Some(again) = self.pipes.get_mut(&pipe) else {
                    return;
                };
                p = again;
            }
        }
    }

    /// Offer a message to every matching subscription: queue it, or emit it for the handler.
    fn offer(&mut self, pipe: PipeId, from: SocketAddr, data: Bytes, claimed: bool) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let mut queued = false;
        let mut handled = false;
        // The queue that takes the message last gets `data` itself, the others a clone: a
        // clone of a freshly copied `Bytes` allocates its shared header.
        let mut last: Option<usize> = None;
        // An accepted connection's fallback subscription takes only what nothing else took.
        let skip_all = claimed && p.fallback_all;
        for i in 0..p.subs.len() {
            let s = &mut p.subs[i];
            if skip_all && s.id == SubId::ALL {
                continue;
            }
            if !s.filter.matches_parts(&data, &from) {
                continue;
            }
            if s.handler {
                handled = true;
                if self.events.len() < MAX_EVENTS {
                    p.t.held_bytes += data.len();
                    p.t.held_jobs += 1;
                    self.events.push_back(Event::SubMessage {
                        pipe,
                        sub: s.id,
                        msg: Message {
                            data: data.clone(),
                            from,
                        },
                    });
                } else {
                    p.stats.rare().events_dropped += 1;
                }
                continue;
            }
            if let Some(j) = last.replace(i) {
                push_counted(p, j, data.clone(), from);
            }
        }
        if let Some(j) = last {
            push_counted(p, j, data, from);
            queued = true;
        }
        if queued && !p.readable_pending {
            p.readable_pending = true;
            self.events.push_back(Event::Readable { pipe });
        }
        if !claimed && !queued && !handled {
            p.stats.rare().unclaimed += 1;
        }
    }
}

/// Most pipes hold one message at a time: a first `push_back` would make room for four. An
/// empty list takes the engine's spare if it has one.
fn push_held(
    held: &mut std::collections::VecDeque<Held>,
    spare: &mut std::collections::VecDeque<Held>,
    h: Held,
) {
    if held.capacity() == 0 {
        if spare.capacity() == 0 {
            held.reserve_exact(1);
        } else {
            *held = std::mem::take(spare);
        }
    }
    held.push_back(h);
}

/// Queue a message on the pipe's subscription `i`, counting it and what the queue dropped.
#[inline]
fn push_counted(p: &mut super::PipeState, i: usize, data: Bytes, from: SocketAddr) {
    let q = &mut p.subs[i].queue;
    let before = q.dropped;
    q.push(Message { data, from });
    let dropped = q.dropped - before;
    if dropped > 0 {
        // The rare counters live in a box made on first use: not for every queued message.
        p.stats.rare().queue_dropped += dropped;
    }
    p.stats.queued += 1;
}
