//! Read buffers. An idle pipe holds none: reads go through a per-thread buffer, handed to
//! the engine before any `.await`. Large TCP reads go into pooled buffers that become the
//! message itself (`Bytes`) with no copy, and return to the pool when the message is dropped.

use std::cell::RefCell;
use std::io;

use bytes::Bytes;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` on this thread's read buffer of at least `len` bytes. Reads go through one buffer
/// per thread, handed to the engine before any `.await`, so an idle pipe holds no buffer
/// (10,000 idle connections cost no 64 KiB each).
pub(crate) fn with_scratch<T>(
    len: usize,
    f: impl FnOnce(&mut [u8]) -> std::io::Result<T>,
) -> std::io::Result<T> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (cannot happen today: nothing inside `f` reads a socket): use a fresh one.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// Pooled buffers kept per thread.
const POOL_CAP: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// What a read produced, for the engine.
pub(crate) enum Input<'a> {
    /// A small read (or end of stream, when empty), to be copied by the engine.
    Slice(&'a [u8]),
    /// A large read, handed over without a copy.
    Owned(Bytes),
}

/// A pooled buffer owned by a `Bytes`; going back to this thread's pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

fn take_buf(len: usize) -> Vec<u8> {
    let pooled = POOL
        .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
        .ok()
        .flatten();
    let mut buf = pooled.unwrap_or_default();
    buf.resize(len, 0);
    buf
}

fn give_back(buf: Vec<u8>) {
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.len() < POOL_CAP {
                p.push(buf);
            }
        }
    });
}

/// Read with `read` into a pooled buffer of `len` bytes and hand the result to `feed`. A
/// read of at least half the buffer is handed over as `Bytes` (a queued message pins at most
/// twice its size); a smaller one is lent as a slice and the buffer goes back to the pool.
pub(crate) fn read_pooled<T>(
    len: usize,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    feed: impl FnOnce(Input<'_>) -> T,
) -> io::Result<T> {
    let mut buf = take_buf(len);
    let n = match read(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            give_back(buf);
            return Err(e);
        }
    };
    if n > 0 && n >= len / 2 {
        return Ok(feed(Input::Owned(Bytes::from_owner(Pooled {
            buf,
            len: n,
        }))));
    }
    let out = feed(Input::Slice(&buf[..n]));
    give_back(buf);
    Ok(out)
}
