//! Zero-copy relaying: a TCP pipe's I/O task moving its socket's bytes to its link target's
//! socket in the kernel (Linux `splice(2)` through a kernel pipe) while the engine allows it
//! (`Engine::splice_source`; the rule and the accounting are pipe-core's, `engine/splice.rs`).
//!
//! A session runs inside the source pipe's read loop and returns to the copying path as soon
//! as the engine says no (a subscription, a callback), the target cannot take spliced bytes
//! now (it has queued bytes: they go first, so order is kept), or the runtime cannot splice
//! ([`TcpIo::try_splice_to_pipe`] is `Unsupported` by default). Per chunk: reserve the target
//! (`Engine::splice_begin`: its sends queue meanwhile, so none lands inside the chunk), move
//! up to the kernel pipe's size from the source socket into the kernel pipe, then all of it
//! into the target's socket, waiting for the target's writability (backpressure: the source
//! is not read meanwhile), then end the reservation (`Engine::splice_end`; what the target
//! queued meanwhile is written next). Every wait also wakes for the source's own signal and,
//! if this task holds it, the group's timer, so the engine's deadlines keep running; the
//! target's write stall runs from its reservation. Bytes the target cannot take any more
//! (its socket failed, or its close deadline passed) are reported as unsent. The source's EOF
//! goes through the engine's peer-FIN path after the last chunk was written, so the FIN
//! reaches the partner after the spliced bytes.
//!
//! Only bulk is spliced: the read loop enters a session after a copied read of at least half
//! its buffer, and a session whose source runs dry after a small chunk returns to copying. The
//! kernel pipe is made for the first chunk and dropped before every wait on the source, so an
//! idle connection holds none.

use std::io::{self, ErrorKind};
use std::sync::Arc;

use futures_lite::future;
use pipe_core::{LinkId, PipeId};

use crate::group::{Entry, Forward, Group, GroupState, Sock};
use crate::pipe::{run_forwards, Pipe};
use crate::runtime::{Readiness, Runtime, TcpIo};
use crate::tasks;

/// A kernel pipe: the buffer spliced bytes pass through (Linux only; elsewhere
/// [`KernelPipe::new`] is `Unsupported`). Drivers hand it to `splice(2)` in their
/// [`TcpIo::try_splice_to_pipe`] / [`TcpIo::try_splice_from_pipe`] through
/// [`KernelPipe::fill_from`] and [`KernelPipe::drain_to`].
#[derive(Debug)]
pub struct KernelPipe {
    #[cfg(target_os = "linux")]
    read: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    write: std::os::fd::OwnedFd,
    capacity: usize,
}

/// The kernel pipe size asked for (`F_SETPIPE_SZ`; the default of 64 KiB is kept when the
/// system refuses, e.g. past `/proc/sys/fs/pipe-user-pages-soft`).
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1 << 20;

impl KernelPipe {
    /// A non-blocking kernel pipe. `Unsupported` where the OS has no `splice(2)`.
    pub fn new() -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        return sys::kernel_pipe();
        #[cfg(not(target_os = "linux"))]
        return Err(ErrorKind::Unsupported.into());
    }

    /// How many bytes it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Move up to `len` bytes from `from` (a socket) into the pipe without waiting:
    /// `splice(2)` with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`. `Ok(0)` is the socket's EOF;
    /// `WouldBlock` when nothing is readable (or the pipe is full).
    #[cfg(target_os = "linux")]
    pub fn fill_from(&self, from: std::os::fd::BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        sys::splice(from, self.write.as_fd(), len)
    }

    /// Move up to `len` bytes from the pipe into `to` (a socket) without waiting.
    /// `WouldBlock` when the socket is full (or the pipe empty). splice(2) has no
    /// `MSG_NOSIGNAL`: writing to a socket its peer closed raises `SIGPIPE`, which Rust
    /// programs ignore from the start (a host that does not must ignore it, or turn
    /// `Conf::zero_copy` off).
    #[cfg(target_os = "linux")]
    pub fn drain_to(&self, to: std::os::fd::BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        sys::splice(self.read.as_fd(), to, len)
    }
}

/// The system calls, the one place of unsafe code in pipe-io.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // splice(2), pipe2(2), fcntl(2): no safe wrapper in std or socket2
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    use super::{KernelPipe, PIPE_SIZE};

    pub(super) fn kernel_pipe() -> io::Result<KernelPipe> {
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int and touches no memory.
        let size = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        let capacity = if size > 0 {
            size as usize
        } else {
            // SAFETY: as above; F_GETPIPE_SZ takes no argument.
            let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if size > 0 {
                size as usize
            } else {
                1 << 16
            }
        };
        Ok(KernelPipe {
            read,
            write,
            capacity,
        })
    }

    pub(super) fn splice(
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        len: usize,
    ) -> io::Result<usize> {
        // SAFETY: both descriptors are borrowed, so open for the call; null offsets are what
        // splice takes for pipes and sockets; no memory is passed.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// The runtime or the OS cannot splice these sockets: copy from now on.
fn unsupported(e: &io::Error) -> bool {
    e.kind() == ErrorKind::Unsupported || e.raw_os_error().is_some_and(|c| c == EINVAL)
}

/// EINVAL: splice(2)'s answer for descriptors it cannot splice.
const EINVAL: i32 = 22;

/// Chunks moved before the session yields to other tasks (like the read loop's budget).
const YIELD_EVERY: u32 = 16;

/// Why a session ended, for the read loop.
pub(crate) enum Session<R: Runtime> {
    /// Back to the copying path: read and feed once (the engine decides again after it).
    Copy,
    /// The runtime or the OS cannot splice: copy from now on.
    Off,
    /// The pipe ended, or its peer's FIN came (run these forwards, the partner's shutdown
    /// among them): the task writes what is left until the engine releases the socket.
    End(Vec<Forward<R>>),
}

/// One zero-copy session of the source pipe `id`, until the engine's rule, the target, the
/// end or the FIN of the source sends it back to the read loop.
pub(crate) async fn run<R: Runtime>(
    group: Arc<Group<R>>,
    id: PipeId,
    sock: Arc<R::Tcp>,
    entry: Arc<Entry>,
    bulk: usize,
) -> Session<R> {
    // Made when a reservation succeeds (a target with queued bytes sends the session back to
    // copying before it costs a pipe), dropped before each wait on the source: an idle
    // connection holds no kernel pipe.
    let mut kpipe: Option<KernelPipe> = None;
    // The size of the last chunk: a session that moves small chunks returns to copying when
    // the source runs dry (a kernel pipe per small message costs more than the copy).
    let mut last = usize::MAX;
    // The rule's answer and the target, from the lock taken to report the last chunk; used
    // only when nothing was awaited since (else asked again).
    let mut next: Option<(LinkId, Pipe<R>)> = None;
    let mut chunks = 0u32;
    loop {
        if entry.is_ended() {
            return Session::End(Vec::new());
        }
        chunks += 1;
        if chunks % YIELD_EVERY == 0 {
            // Let the other tasks of a single-threaded runtime run (the other direction).
            future::yield_now().await;
            next = None;
        }
        if entry.is_paused() {
            // The read loop waits for the engine's resume.
            return Session::Copy;
        }
        // The rule, and the target's handle (its group's link-target slot).
        let target = match next.take() {
            Some(t) => Some(t),
            None => splice_target(&group.lock(), id),
        };
        let Some((link, target)) = target else {
            return Session::Copy;
        };
        // Reserve the target and take its socket.
        let tsock = {
            let mut tg = target.group.lock();
            let now = target.group.rt.now();
            if !tg.engine.splice_begin(now, target.id) {
                return Session::Copy;
            }
            match tg.slots.get(&target.id).and_then(|s| s.sock.clone()) {
                Some(Sock::Tcp(t)) => Some(t),
                _ => None,
            }
        };
        let Some(tsock) = tsock else {
            end_reservation(&target, 0, 0).await;
            return Session::Copy;
        };
        let kp = match &kpipe {
            Some(kp) => kp,
            None => match KernelPipe::new() {
                Ok(kp) => kpipe.insert(kp),
                Err(e) => {
                    end_reservation(&target, 0, 0).await;
                    if unsupported(&e) {
                        return Session::Off;
                    }
                    // Out of descriptors or pipe memory: copy this read, try again later.
                    log::debug!("{id}: kernel pipe: {e}");
                    return Session::Copy;
                }
            },
        };
        let read = loop {
            match sock.try_splice_to_pipe(kp, kp.capacity()) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match read {
            Ok(0) => {
                // EOF: the engine's peer-FIN path, after every spliced byte was written (the
                // kernel pipe is empty here), so the partner's FIN follows them.
                end_reservation(&target, 0, 0).await;
                let mut g = group.lock();
                g.engine.handle_peer_closed(group.rt.now(), id, false);
                return Session::End(group.pump(&mut g));
            }
            Ok(n) => {
                last = n;
                n
            }
            Err(e) => {
                end_reservation(&target, 0, 0).await;
                match e.kind() {
                    ErrorKind::WouldBlock => {
                        if last < bulk {
                            return Session::Copy;
                        }
                        kpipe = None;
                        // Ask the rule afresh after the wait (a subscription may come).
                        next = None;
                        let wake = tasks::wait(&group, id, &entry, &*sock, true).await;
                        tasks::on_wake(&group, id, wake);
                        continue;
                    }
                    _ if unsupported(&e) => return Session::Off,
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe => {
                        let mut g = group.lock();
                        g.engine.handle_peer_closed(group.rt.now(), id, true);
                        group.pump(&mut g);
                        return Session::End(Vec::new());
                    }
                    _ => {
                        tasks::fail(&group, id, e);
                        return Session::End(Vec::new());
                    }
                }
            }
        };
        let forwards = {
            let mut g = group.lock();
            g.engine.handle_spliced(group.rt.now(), id, link, n);
            next = splice_target(&g, id);
            group.pump(&mut g)
        };
        if !forwards.is_empty() {
            Box::pin(run_forwards(&group, forwards)).await;
        }
        // Into the target's socket, all of it, before anything else is read.
        let mut left = n;
        let mut written = 0;
        while left > 0 {
            match tsock.try_splice_from_pipe(kp, left) {
                Ok(m) => {
                    left -= m.min(left);
                    written += m;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if report_out(&target, std::mem::take(&mut written)) {
                        break;
                    }
                    // Things may change while we wait (a subscription): ask again after.
                    next = None;
                    wait_target(&group, id, &entry, &target, &*tsock).await;
                }
                Err(e) => {
                    // The target's socket failed: it ends, as a failed flush ends it.
                    log::debug!("{}: spliced write: {e}", target.id);
                    let mut tg = target.group.lock();
                    let now = target.group.rt.now();
                    tg.engine.handle_spliced_out(now, target.id, written);
                    written = 0;
                    tg.engine.handle_error(now, target.id, e.into());
                    drop(tg);
                    break;
                }
            }
        }
        drop(tsock);
        end_reservation(&target, written, left).await;
        if left > 0 {
            // The rest is dropped with this kernel pipe: a new session gets a fresh one.
            return Session::Copy;
        }
    }
}

/// The engine's answer for the source, with the driver's handle on the target.
fn splice_target<R: Runtime>(g: &GroupState<R>, id: PipeId) -> Option<(LinkId, Pipe<R>)> {
    let (link, token) = g.engine.splice_source(id)?;
    g.link_targets.get(&token).map(|t| (link, t.clone()))
}

/// Count `written` bytes on the reserved target. True when the reservation is gone (the
/// target's socket closed, or its close deadline passed): nothing more can be written.
fn report_out<R: Runtime>(target: &Pipe<R>, written: usize) -> bool {
    let mut tg = target.group.lock();
    let now = target.group.rt.now();
    tg.engine.handle_spliced_out(now, target.id, written);
    !tg.engine.is_splicing(target.id) || tg.slots.get(&target.id).is_none_or(|s| s.sock.is_none())
}

/// End the target's reservation: count what was written and what is lost, then let its
/// queue go (and its FIN or release, if they waited).
async fn end_reservation<R: Runtime>(target: &Pipe<R>, written: usize, unsent: usize) {
    let forwards = {
        let mut tg = target.group.lock();
        let now = target.group.rt.now();
        tg.engine.handle_spliced_out(now, target.id, written);
        tg.engine.splice_end(now, target.id, unsent);
        target.group.pump(&mut tg)
    };
    if !forwards.is_empty() {
        Box::pin(run_forwards(&target.group, forwards)).await;
    }
}

/// Wait until the target's socket may take more, the target ended or was released (its
/// `writable` signal), the source's own signal fires, or the group's timer is due (if this
/// task holds it; it then runs it).
async fn wait_target<R: Runtime>(
    group: &Arc<Group<R>>,
    id: PipeId,
    entry: &Entry,
    target: &Pipe<R>,
    tsock: &R::Tcp,
) {
    let signal = entry.wake_io().listen();
    let tsig = target.entry.writable.listen();
    let deadline = tasks::timer_deadline(group, id);
    if target.entry.is_released() {
        return;
    }
    let timer = async {
        tasks::sleep_to(group, deadline).await;
        true
    };
    let woke = Box::pin(future::or(
        async {
            let _ = tsock.writable().await;
            false
        },
        future::or(
            async {
                signal.await;
                false
            },
            future::or(
                async {
                    tsig.await;
                    false
                },
                timer,
            ),
        ),
    ))
    .await;
    if woke {
        tasks::timer(group);
    }
}
