//! What a client connection costs the allocator: a counting global allocator, on for this
//! thread only, counts the allocations a TCP client pipe makes to open and close (a raw
//! listener on another thread accepts). The group (its engine, the pipe's engine state, the
//! driver's slot and callbacks) is one allocation, and no allocation is above glibc's
//! thread-cache limit (1,032 bytes): a larger one goes through the slower bins on every
//! connection (measured on pipe-bench's connect+close: more instructions than the
//! allocation it merged saved).
//!
//! One test in this file: the counter is global to the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pipe_io::Proto;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}

static COUNT: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout, true);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout, true);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note(layout, false);
        unsafe { System.realloc(ptr, layout, new) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Count an allocation; `fresh`: not a growth (`realloc`). A growing buffer's growth is
/// counted but not sized: tokio's list of sockets to deregister grows by doubling while
/// connections close between two turns of its driver, for raw sockets as for pipes.
fn note(layout: Layout, fresh: bool) {
    // `try_with`: the thread's locals may be gone while it exits.
    if ON.try_with(Cell::get).unwrap_or(false) {
        COUNT.fetch_add(1, Ordering::Relaxed);
        if fresh {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// glibc's largest thread-cached request (`tcache_max_bytes`).
const TCACHE_MAX: usize = 1032;
/// The client's own (the group, the subscription queue, the engine's event queue, the
/// socket's `Arc`, the entry) and tokio's `ScheduledIo`, which a raw `TcpStream` has too.
const PER_CONNECTION: usize = 6;

#[test]
fn a_client_connection_allocates_six_times_each_thread_cached() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The peer: accept and drop, until the test's end closes the listener's last client.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (count, largest) = rt.block_on(async {
        // Opened and closed, counted from the builder's `open` to the end of `close`.
        let open_close = |counted: bool| async move {
            let builder = pipe_tokio::builder(Proto::Tcp).dest(addr);
            ON.set(counted);
            let p = builder.open().await.unwrap();
            p.close().await;
            ON.set(false);
        };
        let limit = Duration::from_secs(10);
        // Warm-up: the runtime's and the driver's first-use buffers.
        for _ in 0..200 {
            tokio::time::timeout(limit, open_close(false))
                .await
                .unwrap();
        }
        let n = 1000;
        for _ in 0..n {
            tokio::time::timeout(limit, open_close(true)).await.unwrap();
        }
        let count = COUNT.load(Ordering::Relaxed) as f64 / f64::from(n);
        (count, LARGEST.load(Ordering::Relaxed))
    });
    eprintln!("{count:.3} allocations a connection, the largest {largest} bytes");
    assert!(
        count <= PER_CONNECTION as f64 + 0.05,
        "{count:.2} allocations a connection (at most {PER_CONNECTION})"
    );
    assert!(count >= 1.0, "the counter saw nothing: {count}");
    assert!(
        largest <= TCACHE_MAX,
        "an allocation of {largest} bytes, past glibc's thread cache ({TCACHE_MAX})"
    );
}
