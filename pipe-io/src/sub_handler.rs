//! Subscriptions with a handler: P2PD's `subscribe(sub, handler)`.
//!
//! [`Pipe::subscribe_with`] subscribes a filter and gives it a handler. The engine decides
//! what matches (`pipe_core`'s `Engine::subscribe_handler`): a matching message is handed to
//! the handler and is **not** queued for that subscription (other subscriptions matching it
//! still queue it). The handler runs in the pipe's callback job queue, so handlers and
//! callbacks of a pipe run one at a time, in message order, and for each message the
//! message callbacks first, then the handlers of the subscriptions it matches (in
//! subscription order). The message counts against the pipe's callback caps until its
//! handler finished. A panicking handler is caught like a callback; the pipe goes on.

use std::future::Future;

use pipe_core::{Filter, Message, SubId, SubscribeError};

use crate::callbacks::{msg_fn, Callbacks};
use crate::pipe::Pipe;
use crate::runtime::Runtime;

impl<R: Runtime> Pipe<R> {
    /// Subscribe to messages matching `filter`, handing each to `handler(message, pipe)`
    /// instead of queueing it (P2PD's `subscribe(sub, handler)`). Returns the subscription's
    /// id: after [`Pipe::unsubscribe`] the handler gets no message that arrives later (those
    /// already matched still run; the closure is dropped at the next `subscribe_with` on this
    /// pipe, or with the pipe).
    ///
    /// A filter equal to an existing subscription's names that subscription: it becomes a
    /// handler subscription (what it queued before stays readable with [`Pipe::recv_on`];
    /// nothing more is queued there), or, if it had a handler, the handler is replaced.
    /// [`Pipe::subscribe`] with the same filter afterwards returns the same id and leaves the
    /// handler in place. `recv_on` a handler subscription waits for queued messages only, so
    /// it times out once those are taken (as in P2PD).
    pub fn subscribe_with<F, Fut>(
        &self,
        filter: Filter,
        handler: F,
    ) -> Result<SubId, SubscribeError>
    where
        F: Fn(Message, Pipe<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut g = self.group.lock();
        let id = g.engine.subscribe_handler(self.id, filter)?;
        let pipe = self.id;
        // Keep the handlers of live handler subscriptions only (an unsubscribed one goes here).
        let live: Vec<SubId> = g
            .own_cbs(pipe)
            .map(|c| c.sub.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default();
        let live: Vec<SubId> = live
            .into_iter()
            .filter(|s| *s != id && g.engine.is_handler(pipe, *s))
            .collect();
        let cbs: &mut Callbacks<R> = if g.first == Some(pipe) {
            &mut g.cbs
        } else {
            match g.slots.get_mut(&pipe) {
                Some(s) => s.cbs.get_or_insert_with(Default::default),
                None => return Err(SubscribeError::Closed),
            }
        };
        let list = cbs.sub.make_mut();
        list.retain(|(s, _)| live.contains(s));
        list.push((id, msg_fn(handler)));
        Ok(id)
    }
}
