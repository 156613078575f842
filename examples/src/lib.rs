//! Shared code of the example programs: runtime selection, argument parsing, the seed's two
//! examples, a loopback STUN responder, the echo server and the relay. Every program is
//! written once, generic over `pipe_io::Runtime`, and runs on tokio or smol.

use std::error::Error;
use std::future::Future;

use pipe_io::Runtime;

pub mod echo;
pub mod relay;
pub mod seed;
pub mod stun_responder;

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

    fn parse(s: &str) -> Res<Self> {
        match s {
            "tokio" => Ok(Which::Tokio),
            "smol" => Ok(Which::Smol),
            other => Err(format!("unknown runtime {other:?} (tokio or smol)").into()),
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

/// Command-line flags: `--name value` pairs and positional arguments.
#[derive(Debug, Default)]
pub struct Args {
    flags: Vec<(String, String)>,
    /// Positional arguments.
    pub positional: Vec<String>,
}

impl Args {
    /// Parse `std::env::args()`.
    pub fn from_env() -> Res<Self> {
        let mut args = Args::default();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                args.flags.push((name.to_owned(), value));
            } else {
                args.positional.push(a);
            }
        }
        Ok(args)
    }

    /// A flag's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required flag.
    pub fn require(&self, name: &str) -> Res<&str> {
        self.get(name)
            .ok_or_else(|| format!("missing --{name}").into())
    }

    /// `--runtime tokio|smol`, tokio by default.
    pub fn runtime(&self) -> Res<Which> {
        self.get("runtime").map_or(Ok(Which::Tokio), Which::parse)
    }

    /// `--proto tcp|udp`.
    pub fn proto(&self) -> Res<pipe_io::Proto> {
        match self.require("proto")? {
            "tcp" => Ok(pipe_io::Proto::Tcp),
            "udp" => Ok(pipe_io::Proto::Udp),
            other => Err(format!("unknown proto {other:?} (tcp or udp)").into()),
        }
    }
}

/// The deadlines a server program applies: `--idle-timeout SECS` (default: the library's
/// server default, [`pipe_io::pipe_core::conf::SERVER_IDLE_TIMEOUT`]) and `--write-stall
/// SECS` (default: the library's server default, or the idle timeout if that is shorter).
/// `0` turns a deadline off.
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

impl Args {
    /// `--idle-timeout SECS` and `--write-stall SECS`.
    pub fn deadlines(&self) -> Res<Deadlines> {
        use pipe_io::pipe_core::conf::{SERVER_IDLE_TIMEOUT, SERVER_WRITE_STALL_TIMEOUT};
        let secs = |name: &str| -> Res<Option<Option<std::time::Duration>>> {
            let Some(v) = self.get(name) else {
                return Ok(None);
            };
            let s: f64 = v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not a number of seconds"))?;
            if !(0.0..=86_400.0).contains(&s) {
                return Err(format!("--{name}: {v} is not between 0 and 86400 seconds").into());
            }
            Ok(Some(
                (s > 0.0).then(|| std::time::Duration::from_secs_f64(s)),
            ))
        };
        let idle = secs("idle-timeout")?.unwrap_or(Some(SERVER_IDLE_TIMEOUT));
        let write_stall = secs("write-stall")?.unwrap_or_else(|| {
            Some(idle.map_or(SERVER_WRITE_STALL_TIMEOUT, |i| {
                i.min(SERVER_WRITE_STALL_TIMEOUT)
            }))
        });
        Ok(Deadlines { idle, write_stall })
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
