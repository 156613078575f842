//! Shared code of the example programs: runtime selection, the command line ([`cli`]),
//! serving until Ctrl-C ([`serve`]), the seed's two examples, a loopback STUN responder, the
//! echo server and the relay. Every program is written once, generic over
//! `pipe_io::Runtime`, and runs on tokio or smol.
//!
//! Exit codes of every program: 0 on success (and for `--help`, `--version`, and a server
//! stopped by Ctrl-C or SIGTERM), 2 for usage errors, 1 for runtime errors.

use std::error::Error;
use std::future::Future;

use pipe_io::Runtime;

pub mod cli;
pub mod echo;
pub mod relay;
pub mod seed;
pub mod serve;
pub mod stun_responder;

pub use cli::{Args, Usage};

/// The result of a program.
pub type Res<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;

/// Which runtime to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// tokio, current-thread.
    Tokio,
    /// smol.
    Smol,
}

impl Which {
    /// Both, in order.
    pub const ALL: [Which; 2] = [Which::Tokio, Which::Smol];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Which::Tokio => "tokio",
            Which::Smol => "smol",
        }
    }
}

/// A program that runs on any runtime.
pub trait Program {
    /// What it returns.
    type Output;
    /// Run on `rt`.
    fn run<R: Runtime>(self, rt: R) -> impl Future<Output = Res<Self::Output>>;
}

/// Run `p` on the chosen runtime.
pub fn run_on<P: Program>(which: Which, p: P) -> Res<P::Output> {
    match which {
        Which::Tokio => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async { p.run(pipe_tokio::Tokio::current()).await })
        }
        Which::Smol => smol::block_on(p.run(pipe_smol::Smol::default())),
    }
}

/// The deadlines a server program applies: `--idle-timeout SECS` (default: the library's
/// server default, [`pipe_io::pipe_core::conf::SERVER_IDLE_TIMEOUT`]) and `--write-stall
/// SECS` (default: the library's server default, or the idle timeout if that is shorter).
/// `0` turns a deadline off. Parsed by [`Args::deadlines`].
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// No bytes either way for this long ends a connection.
    pub idle: Option<std::time::Duration>,
    /// Queued bytes with no write progress for this long end a connection.
    pub write_stall: Option<std::time::Duration>,
}

impl Deadlines {
    /// A conf for pipes facing untrusted peers with these deadlines (and the library's
    /// server defaults otherwise).
    pub fn conf(&self) -> pipe_io::Conf {
        pipe_io::Conf {
            idle_timeout: self.idle,
            write_stall_timeout: self.write_stall,
            ..pipe_io::Conf::server()
        }
    }
}

/// At most one line a second to stderr, with a count of the lines held back: a peer that
/// makes every message fail must not make every message log.
#[derive(Debug, Default)]
pub struct RateLimited {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimited {
    /// Print `line` unless a line was printed less than a second ago.
    pub fn eprint(&self, line: std::fmt::Arguments<'_>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if st
            .0
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            st.1 += 1;
            return;
        }
        match std::mem::take(&mut st.1) {
            0 => eprintln!("{line}"),
            n => eprintln!("{line} ({n} more in the last second)"),
        }
        st.0 = Some(now);
    }
}

/// Print `listening on <addr>` as the first line on stdout, flushed, as the programs promise.
pub fn announce(addr: Option<std::net::SocketAddr>) -> Res {
    use std::io::Write;
    let addr = addr.ok_or("no local address")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    Ok(())
}
