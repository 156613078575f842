//! Serving until killed: `listening on <addr>` first, then until the server ends or a SIGINT
//! (Ctrl-C) or SIGTERM arrives, which closes the server and exits 0. With `-v` a [`Tally`]
//! logs each connection's open and close and prints a summary at the signal.
//!
//! Signals come from `async-signal`: one crate for both runtimes (it runs on any executor,
//! its reactor is async-io's), and already in the tree through smol.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::{future, StreamExt};
use pipe_io::{EndReason, ListenAll, Pipe, Runtime, Stats};

use crate::Res;

/// Counts of the connections a server served, and `-v`'s log lines on stderr.
#[derive(Debug, Default)]
pub struct Tally {
    opened: AtomicU64,
    closed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Tally {
    /// A new tally, shared by a server's callbacks.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A connection (or a UDP client) opened.
    pub fn open(&self, what: &str, peer: Option<SocketAddr>) {
        self.opened.fetch_add(1, Relaxed);
        eprintln!("open {what} {}", Peer(peer));
    }

    /// A connection closed: `bytes_in` were received from the peer, `bytes_out` sent to it.
    pub fn close(
        &self,
        what: &str,
        peer: Option<SocketAddr>,
        reason: &EndReason,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.closed.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        eprintln!(
            "close {what} {}: {reason}, {bytes_in} bytes in, {bytes_out} bytes out",
            Peer(peer)
        );
    }

    /// [`Tally::close`] with a pipe's own counters (`None`: nothing counted).
    pub fn close_stats(
        &self,
        what: &str,
        peer: Option<SocketAddr>,
        reason: &EndReason,
        stats: Option<Stats>,
    ) {
        let s = stats.unwrap_or_default();
        self.close(what, peer, reason, s.bytes_in, s.bytes_out);
    }

    /// Add bytes not tied to a connection (a UDP server's own socket).
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// Wait (at most `limit`) until every opened connection has closed: after its server
    /// closes them, their end callbacks may still be on their way.
    pub async fn settle<R: Runtime>(&self, rt: &R, limit: Duration) {
        let deadline = rt.now() + limit;
        while self.closed.load(Relaxed) < self.opened.load(Relaxed) && rt.now() < deadline {
            rt.sleep_until(rt.now() + Duration::from_millis(10)).await;
        }
    }

    /// `summary: 3 connections served (0 still open), 120 bytes in, 120 bytes out`; without
    /// `closes` (peers of a UDP server, which never close), no "still open".
    pub fn summary(&self, what: &str, closes: bool) -> String {
        let (o, c) = (self.opened.load(Relaxed), self.closed.load(Relaxed));
        let open = if closes {
            format!(" ({} still open)", o.saturating_sub(c))
        } else {
            String::new()
        };
        format!(
            "summary: {o} {what} served{open}, {} bytes in, {} bytes out",
            self.bytes_in.load(Relaxed),
            self.bytes_out.load(Relaxed)
        )
    }
}

struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("(unknown peer)"),
        }
    }
}

/// How a served program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server pipe ended by itself.
    Closed,
    /// A SIGINT or SIGTERM arrived; the server is still open (the caller closes it).
    Signal,
}

/// Announce `server` (`listening on <addr>`, after the signal handlers are in place, so a
/// signal sent once the line is read is caught), then wait for its end or a SIGINT/SIGTERM.
pub async fn serve<R: Runtime>(server: &Pipe<R>) -> Res<Ended> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    crate::announce(server.local_addr())?;
    until_end(server.closed(), &mut signals).await
}

/// [`serve`] for a server on many addresses (`--bind all:PORT`): one `listening on <addr>`
/// line per address, written at once (the first line is still the one the programs promise),
/// a `not listening on <addr>: <error>` line on stderr for each address that failed, then
/// until every server pipe has ended or a SIGINT/SIGTERM arrives.
pub async fn serve_all<R: Runtime>(servers: &ListenAll<R>) -> Res<Ended> {
    use std::io::Write;
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    for (addr, e) in servers.failed() {
        eprintln!("not listening on {addr}: {}", crate::cli::error_chain(e));
    }
    let lines: String = servers
        .local_addrs()
        .iter()
        .map(|a| format!("listening on {a}\n"))
        .collect();
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes())?;
    out.flush()?;
    drop(out);
    until_end(servers.closed(), &mut signals).await
}

/// Wait until `closed` completes or a signal arrives.
async fn until_end(
    closed: impl std::future::Future<Output = ()>,
    signals: &mut Signals,
) -> Res<Ended> {
    let got = future::or(
        async {
            closed.await;
            None
        },
        async { signals.next().await },
    )
    .await;
    match got {
        Some(_) => Ok(Ended::Signal),
        None => Ok(Ended::Closed),
    }
}
