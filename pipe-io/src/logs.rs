//! Rate-limited logging: at most one line a second per kind, with a count of the lines held
//! back. A peer that makes every message fail must not make every message log.

use std::fmt::Arguments;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// What a line is about; each kind has its own budget.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A queued datagram the OS refused.
    Refused,
    /// A pipe closed with bytes it could not write.
    Unsent,
    /// An accept failed.
    Accept,
    /// Out of file descriptors.
    Exhausted,
    /// A forward through a link failed.
    Forward,
}

const KINDS: usize = 5;

struct Budget {
    /// Milliseconds since the process epoch of the last line, plus one (0 = never).
    last: AtomicU64,
    held: AtomicU64,
}

fn budgets() -> &'static ([Budget; KINDS], Instant) {
    static B: OnceLock<([Budget; KINDS], Instant)> = OnceLock::new();
    B.get_or_init(|| {
        (
            std::array::from_fn(|_| Budget {
                last: AtomicU64::new(0),
                held: AtomicU64::new(0),
            }),
            Instant::now(),
        )
    })
}

/// Log `args` at warn level for fd exhaustion, debug otherwise, at most once a second per
/// kind.
pub(crate) fn limited(kind: Kind, args: Arguments<'_>) {
    let level = match kind {
        Kind::Exhausted => log::Level::Warn,
        _ => log::Level::Debug,
    };
    if !log::log_enabled!(level) {
        return;
    }
    let (budgets, epoch) = budgets();
    let b = &budgets[kind as usize];
    let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
    let last = b.last.load(Ordering::Relaxed);
    if last != 0 && now < last + 1000
        || b.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        b.held.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match b.held.swap(0, Ordering::Relaxed) {
        0 => log::log!(level, "{args}"),
        n => log::log!(level, "{args} ({n} more like it in the last second)"),
    }
}
