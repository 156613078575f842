//! Callback registry and dispatch.
//!
//! Callbacks of one pipe run in order, one at a time, awaited, on a worker task that exists
//! only while the pipe has jobs queued (no task per message, none for idle pipes). The queue is
//! bounded: the pipe's reader stops reading while it is full, so a slow callback slows its
//! own connection (backpressure). A panicking callback is caught and logged; the pipe goes on.
//! Because the worker is not the pipe's I/O task, a callback may send, recv, link or close on
//! its own pipe without deadlocking.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_lite::FutureExt;
use pipe_core::{EndReason, Message, PipeId};

use crate::pipe::Pipe;
use crate::runtime::{BoxFuture, Runtime};

/// Jobs queued per pipe before its reader pauses.
pub(crate) const JOB_CAP: usize = 256;

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

/// The callbacks of one pipe. Lists are copy-on-write so a worker can snapshot them cheaply.
pub(crate) struct Callbacks<R: Runtime> {
    pub(crate) msg: Arc<Vec<(CallbackId, MsgFn<R>)>>,
    pub(crate) up: Arc<Vec<(CallbackId, UpFn<R>)>>,
    pub(crate) end: Arc<Vec<(CallbackId, EndFn<R>)>>,
    /// Listener only: run for each accepted connection before it reads.
    pub(crate) accept: Arc<Vec<(CallbackId, UpFn<R>)>>,
}

impl<R: Runtime> Default for Callbacks<R> {
    fn default() -> Self {
        Self {
            msg: Arc::default(),
            up: Arc::default(),
            end: Arc::default(),
            accept: Arc::default(),
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
        }
    }
}

/// A queued callback invocation.
pub(crate) enum Job {
    Up,
    Msg(Message),
    End(EndReason),
}

/// The job queue of one pipe; it exists while its worker runs.
#[derive(Default)]
pub(crate) struct JobQueue {
    pub(crate) jobs: VecDeque<Job>,
    pub(crate) running: bool,
}

/// Run one job: every callback of its kind, in registration order, the listener's first for
/// an accepted connection. Panics are caught per callback.
pub(crate) async fn run_job<R: Runtime>(
    job: Job,
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
            for set in sets {
                for (_, f) in set.msg.iter() {
                    guarded(id, f(msg.clone(), pipe.clone())).await;
                }
            }
        }
        Job::End(reason) => {
            for set in sets {
                for (_, f) in set.end.iter() {
                    guarded(id, f(reason.clone(), pipe.clone())).await;
                }
            }
        }
    }
}

/// Run a listener's accept hooks for a new connection, in order.
pub(crate) async fn run_accept_hooks<R: Runtime>(
    hooks: Arc<Vec<(CallbackId, UpFn<R>)>>,
    pipe: Pipe<R>,
) {
    for (_, f) in hooks.iter() {
        guarded(pipe.id(), f(pipe.clone())).await;
    }
}

async fn guarded(pipe: PipeId, fut: BoxFuture<()>) {
    if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        log::error!("{pipe}: a callback panicked: {what}; the pipe goes on");
    }
}
