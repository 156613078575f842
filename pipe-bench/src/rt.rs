//! Runtime flavours, and the process plumbing every role shares: the file-descriptor limit,
//! the stdin-EOF stop signal, RSS.

use std::future::Future;
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use smol::Executor;

use crate::spec::{Flavour, Res};

/// Run `make()`'s future as a task of a fresh tokio runtime (current-thread, or
/// multi-thread with 2 workers), so that on the multi-thread flavour the work itself runs on
/// a worker like every task it spawns.
pub fn run_tokio<F, Fut, T>(flavour: Flavour, make: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let rt = match flavour {
        Flavour::TokioMt => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    let out = rt.block_on(async move {
        tokio::spawn(make())
            .await
            .expect("the benchmark task panicked")
    });
    // Background tasks of a finished client may still hold sockets: do not wait for them.
    rt.shutdown_background();
    out
}

/// Run `make(executor)`'s future as a task of one `smol::Executor` driven by `block_on` on one
/// thread (`Smol1`) or two (`Smol2`). Pipes and raw tasks spawn on the same executor.
pub fn run_smol<F, Fut, T>(flavour: Flavour, make: F) -> T
where
    F: FnOnce(Arc<Executor<'static>>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let ex = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let helpers: Vec<_> = (1..if flavour == Flavour::Smol2 { 2 } else { 1 })
        .map(|_| {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
        })
        .collect();
    let task = ex.spawn(make(ex.clone()));
    let out = smol::block_on(ex.run(task));
    drop(stop);
    for h in helpers {
        let _ = h.join();
    }
    out
}

/// A `Smol` runtime for pipes that spawns on `ex`.
pub fn pipe_smol(ex: &Arc<Executor<'static>>) -> pipe_smol::Smol {
    let ex = ex.clone();
    pipe_smol::Smol::with_spawner(move |fut| ex.spawn(fut).detach())
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (10,000 connections need 10,000 fds).
pub fn raise_nofile() -> Res<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    )?;
    Ok(hard.unwrap_or(u64::MAX))
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

static RELEASE: OnceLock<async_channel::Receiver<()>> = OnceLock::new();

/// Watch stdin on a thread: at EOF, exit the process (`exit_at_eof`) or release [`held`].
/// Servers and relays exit when their pair closes their stdin; clients use [`held`].
pub fn watch_stdin(exit_at_eof: bool) {
    let (tx, rx) = async_channel::bounded::<()>(1);
    let _ = RELEASE.set(rx);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        if exit_at_eof {
            std::process::exit(0);
        }
        drop(tx);
    });
}

/// Print `HOLD` and wait until the pair closes our stdin (it measures the server meanwhile).
pub async fn held() {
    println!("HOLD");
    if let Some(rx) = RELEASE.get() {
        let _ = rx.recv().await;
    }
}

/// Print the line a pair waits for to learn a server's address.
pub fn announce(port: u16) {
    println!("PORT {port}");
}

/// Seconds since `t`, never zero.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64().max(1e-9)
}

/// Timeout for one echo or acknowledgement: a stuck run fails instead of hanging.
pub const STUCK: Duration = Duration::from_secs(10);
