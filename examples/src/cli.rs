//! The programs' command line: each program declares its options in a [`Spec`], and one small
//! layer over lexopt parses them, prints `--help` and `--version`, and maps failures to exit
//! codes.
//!
//! - `-h`/`--help` prints the help and exits 0; `-V`/`--version` prints the version and exits 0.
//! - Usage errors exit 2 with one line naming the flag: an unknown flag (with the closest known
//!   one, if any), a missing value, a flag given twice (every flag takes one value: a repeat is
//!   an error, never last-wins or first-wins), a bad value, a missing required flag or
//!   argument, an extra argument.
//! - Runtime errors (a failed bind, a name that does not resolve, an unreachable server) exit 1
//!   with the error and its causes, each printed once.
//! - `--flag value` and `--flag=value` are both accepted.

use std::error::Error;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use crate::{Deadlines, Res, Which};

/// One option of a program.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// Its long name, without the dashes.
    pub long: &'static str,
    /// Its short name, if any.
    pub short: Option<char>,
    /// The value's name in the help (`ADDR`); `None` for a switch.
    pub value: Option<&'static str>,
    /// Must be given.
    pub required: bool,
    /// One line of help.
    pub help: &'static str,
}

impl Opt {
    /// This option, required.
    pub const fn required(self) -> Self {
        Opt {
            required: true,
            ..self
        }
    }

    /// This option with another help line.
    pub const fn help(self, help: &'static str) -> Self {
        Opt { help, ..self }
    }

    fn label(&self) -> String {
        match self.value {
            Some(v) => format!("--{} {v}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// A positional argument.
#[derive(Debug, Clone, Copy)]
pub struct Pos {
    /// Its name in the help (`SERVER`).
    pub name: &'static str,
    /// Must be given.
    pub required: bool,
    /// One line of help.
    pub help: &'static str,
}

/// A program's command line.
#[derive(Debug)]
pub struct Spec {
    /// The program's name.
    pub name: &'static str,
    /// What it does, one line.
    pub about: &'static str,
    /// Its options (`--help` and `--version` are added).
    pub opts: &'static [Opt],
    /// Its positional arguments, in order.
    pub positional: &'static [Pos],
    /// Text after the options (may be empty).
    pub notes: &'static str,
}

/// `--runtime tokio|smol`.
pub const RUNTIME: Opt = Opt {
    long: "runtime",
    short: None,
    value: Some("tokio|smol"),
    required: false,
    help: "the async runtime to run on (default: tokio)",
};

/// `--proto tcp|udp`.
pub const PROTO: Opt = Opt {
    long: "proto",
    short: None,
    value: Some("tcp|udp"),
    required: true,
    help: "the transport",
};

/// `--bind ADDR`.
pub const BIND: Opt = Opt {
    long: "bind",
    short: None,
    value: Some("ADDR"),
    required: true,
    help: "where to listen, HOST:PORT (port 0: any free port; a name is resolved once)",
};

/// `--bind ADDR` of a server that can also listen everywhere (echo-server): `HOST:PORT`, or
/// `all:PORT`, `all4:PORT`, `all6:PORT` (parsed by [`Args::bind_or_all`]).
pub const BIND_ALL: Opt = Opt {
    long: "bind",
    short: None,
    value: Some("ADDR"),
    required: true,
    help: "where to listen, HOST:PORT (port 0: any free port; a name is resolved once), or \
           all:PORT for every address of every up interface, both families (all4:PORT, \
           all6:PORT: one family); one `listening on` line per address",
};

/// `--idle-timeout SECS`.
pub const IDLE_TIMEOUT: Opt = Opt {
    long: "idle-timeout",
    short: None,
    value: Some("SECS"),
    required: false,
    help: "end a connection after no bytes either way for SECS (default 30; 0: never)",
};

/// `--write-stall SECS`.
pub const WRITE_STALL: Opt = Opt {
    long: "write-stall",
    short: None,
    value: Some("SECS"),
    required: false,
    help: "end a connection whose peer stops reading for SECS (default 30, or the idle \
           timeout if shorter; 0: never)",
};

/// `-v`, `--verbose`.
pub const VERBOSE: Opt = Opt {
    long: "verbose",
    short: Some('v'),
    value: None,
    required: false,
    help: "log each connection's open and close (peer, end reason, bytes) to stderr, and a \
           summary on Ctrl-C",
};

const HELP: Opt = Opt {
    long: "help",
    short: Some('h'),
    value: None,
    required: false,
    help: "print this help and exit",
};

const VERSION: Opt = Opt {
    long: "version",
    short: Some('V'),
    value: None,
    required: false,
    help: "print the version and exit",
};

/// A usage error: exit code 2. Its text names the flag or argument at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Usage {}

fn usage(msg: impl Into<String>) -> Usage {
    Usage(msg.into())
}

/// Why parsing stopped short of a program run.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--help`: print the help, exit 0.
    Help,
    /// `--version`: print the version, exit 0.
    Version,
    /// A usage error: exit 2.
    Usage(Usage),
}

impl From<Usage> for Stop {
    fn from(u: Usage) -> Self {
        Stop::Usage(u)
    }
}

impl Spec {
    /// The one-line usage: `echo-server --proto tcp|udp --bind ADDR [OPTIONS]`.
    pub fn usage_line(&self) -> String {
        let mut s = format!("usage: {}", self.name);
        for o in self.opts.iter().filter(|o| o.required) {
            s.push(' ');
            s.push_str(&o.label());
        }
        if self.opts.iter().any(|o| !o.required) {
            s.push_str(" [OPTIONS]");
        }
        for p in self.positional {
            if p.required {
                let _ = write!(s, " {}", p.name);
            } else {
                let _ = write!(s, " [{}]", p.name);
            }
        }
        s
    }

    /// The whole `--help` text.
    pub fn help(&self) -> String {
        let mut s = format!("{}: {}\n\n{}\n", self.name, self.about, self.usage_line());
        if !self.positional.is_empty() {
            s.push_str("\narguments:\n");
            for p in self.positional {
                item(&mut s, p.name, p.help);
            }
        }
        s.push_str("\noptions:\n");
        for o in self.opts.iter().chain([&HELP, &VERSION]) {
            let name = match o.short {
                Some(c) => format!("-{c}, {}", o.label()),
                None => o.label(),
            };
            let req = if o.required { " (required)" } else { "" };
            item(&mut s, &name, &format!("{}{req}", o.help));
        }
        if !self.notes.is_empty() {
            let _ = write!(s, "\n{}\n", self.notes.trim_end());
        }
        s
    }

    /// The `--version` line.
    pub fn version(&self) -> String {
        format!("{} {} (pipes)", self.name, env!("CARGO_PKG_VERSION"))
    }

    fn by_long(&self, name: &str) -> Option<&'static Opt> {
        self.opts.iter().find(|o| o.long == name)
    }

    fn by_short(&self, c: char) -> Option<&'static Opt> {
        self.opts.iter().find(|o| o.short == Some(c))
    }

    /// The known flag closest to a misspelled one.
    fn closest(&self, name: &str) -> Option<&'static str> {
        self.opts
            .iter()
            .chain([&HELP, &VERSION])
            .map(|o| (edit_distance(name, o.long), o.long))
            .filter(|(d, long)| *d <= 2.max(long.len() / 3))
            .min_by_key(|(d, _)| *d)
            .map(|(_, long)| long)
    }

    /// Parse `args` (without the program name).
    pub fn parse<I>(&'static self, args: I) -> Result<Args, Stop>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        use lexopt::Arg;
        let mut p = lexopt::Parser::from_args(args);
        let mut out = Args {
            spec: self,
            values: Vec::new(),
            switches: Vec::new(),
            positional: Vec::new(),
        };
        while let Some(arg) = p.next().map_err(|e| lex_error(e, self))? {
            let opt = match arg {
                Arg::Short('h') | Arg::Long("help") => return Err(Stop::Help),
                Arg::Short('V') | Arg::Long("version") => return Err(Stop::Version),
                Arg::Value(v) => {
                    let v = v
                        .into_string()
                        .map_err(|v| usage(format!("argument {v:?} is not UTF-8")))?;
                    if out.positional.len() >= self.positional.len() {
                        return Err(usage(format!("unexpected argument {v:?}")).into());
                    }
                    out.positional.push(v);
                    continue;
                }
                Arg::Short(c) => self
                    .by_short(c)
                    .ok_or_else(|| usage(format!("unknown flag -{c}")))?,
                Arg::Long(name) => self.by_long(name).ok_or_else(|| {
                    usage(match self.closest(name) {
                        Some(near) => format!("unknown flag --{name} (did you mean --{near}?)"),
                        None => format!("unknown flag --{name}"),
                    })
                })?,
            };
            let Some(value_name) = opt.value else {
                if !out.switches.contains(&opt.long) {
                    out.switches.push(opt.long);
                }
                continue;
            };
            let flag = opt.long;
            let value = match p.value() {
                Ok(v) => v,
                Err(_) => {
                    return Err(usage(format!("--{flag} needs a value ({value_name})")).into())
                }
            };
            let mut value = value
                .into_string()
                .map_err(|v| usage(format!("--{flag}: {v:?} is not UTF-8")))?;
            // A value name with a space takes two values (`--tls CERT KEY`), kept as one
            // string split by a newline (see `Args::pair`).
            if value_name.contains(' ') {
                let second = p
                    .value()
                    .map_err(|_| usage(format!("--{flag} needs two values ({value_name})")))?
                    .into_string()
                    .map_err(|v| usage(format!("--{flag}: {v:?} is not UTF-8")))?;
                value = format!("{value}\n{second}");
            }
            if value.starts_with("--") && value.len() > 2 {
                return Err(usage(format!(
                    "--{flag} needs a value ({value_name}), not the flag {value}"
                ))
                .into());
            }
            if out.values.iter().any(|(n, _)| *n == flag) {
                return Err(usage(format!("--{flag} given twice (it takes one value)")).into());
            }
            out.values.push((flag, value));
        }
        for o in self.opts.iter().filter(|o| o.required) {
            if out.get(o.long).is_none() {
                return Err(usage(format!("missing {} (required)", o.label())).into());
            }
        }
        if let Some(p) = self
            .positional
            .iter()
            .skip(out.positional.len())
            .find(|p| p.required)
        {
            return Err(usage(format!("missing {} (required)", p.name)).into());
        }
        Ok(out)
    }
}

/// One entry of the help: the name in a 24-column field, the text wrapped at 80 columns.
fn item(s: &mut String, name: &str, text: &str) {
    const COL: usize = 27;
    const WIDTH: usize = 80;
    let mut line = if name.len() > COL - 3 {
        format!("  {name}\n{:COL$}", "")
    } else {
        format!("  {name:<w$} ", w = COL - 3)
    };
    let mut width = line.len() - line.rfind('\n').map_or(0, |i| i + 1);
    let mut first = true;
    for word in text.split_whitespace() {
        if !first && width + 1 + word.len() > WIDTH {
            s.push_str(line.trim_end());
            s.push('\n');
            line = format!("{:COL$}", "");
            width = COL;
            first = true;
        }
        if !first {
            line.push(' ');
            width += 1;
        }
        line.push_str(word);
        width += word.len();
        first = false;
    }
    s.push_str(line.trim_end());
    s.push('\n');
}

fn lex_error(e: lexopt::Error, spec: &Spec) -> Usage {
    use lexopt::Error as E;
    match e {
        E::UnexpectedValue { option, .. } => {
            usage(format!("{option} takes no value (it is a switch)"))
        }
        E::MissingValue {
            option: Some(option),
        } => usage(format!("{option} needs a value")),
        E::UnexpectedOption(o) => usage(format!("unknown flag {o}")),
        E::UnexpectedArgument(a) => usage(format!("unexpected argument {a:?}")),
        E::NonUnicodeValue(v) => usage(format!("argument {v:?} is not UTF-8")),
        other => usage(format!("{other} (see {} --help)", spec.name)),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// A program's parsed command line.
#[derive(Debug)]
pub struct Args {
    spec: &'static Spec,
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
    /// Positional arguments, at most as many as the spec declares.
    pub positional: Vec<String>,
}

impl Args {
    /// A two-valued flag's values (`--tls CERT KEY`).
    pub fn pair(&self, name: &str) -> Option<(&str, &str)> {
        self.get(name).and_then(|v| v.split_once('\n'))
    }

    /// A TLS server config from a `CERT KEY` pair of PEM files.
    pub fn tls_server(&self, name: &str) -> Res<Option<pipe_io::Tls>> {
        let Some((cert, key)) = self.pair(name) else {
            return Ok(None);
        };
        let certs = pipe_io::tls::load_certs(cert).map_err(|e| format!("--{name}: {e}"))?;
        let key = pipe_io::tls::load_key(key).map_err(|e| format!("--{name}: {e}"))?;
        let tls = pipe_io::TlsServer::new(certs, key)
            .build()
            .map_err(|e| format!("--{name}: {e}"))?;
        Ok(Some(tls))
    }

    /// A flag's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        debug_assert!(
            self.spec.by_long(name).is_some(),
            "--{name} is not declared"
        );
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required flag (the parser already checked it is there).
    pub fn require(&self, name: &str) -> Result<&str, Usage> {
        self.get(name)
            .ok_or_else(|| usage(format!("missing --{name} (required)")))
    }

    /// A switch such as `--verbose`.
    pub fn switch(&self, name: &str) -> bool {
        debug_assert!(
            self.spec.by_long(name).is_some(),
            "--{name} is not declared"
        );
        self.switches.contains(&name)
    }

    /// `--runtime tokio|smol`, tokio by default.
    pub fn runtime(&self) -> Result<Which, Usage> {
        match self.get("runtime") {
            None | Some("tokio") => Ok(Which::Tokio),
            Some("smol") => Ok(Which::Smol),
            Some(other) => Err(usage(format!(
                "--runtime: {other:?} is not a runtime (tokio or smol)"
            ))),
        }
    }

    /// `--proto tcp|udp`.
    pub fn proto(&self) -> Result<pipe_io::Proto, Usage> {
        match self.require("proto")? {
            "tcp" => Ok(pipe_io::Proto::Tcp),
            "udp" => Ok(pipe_io::Proto::Udp),
            other => Err(usage(format!(
                "--proto: {other:?} is not a protocol (tcp or udp)"
            ))),
        }
    }

    /// A flag's `HOST:PORT` value, checked but not resolved.
    pub fn host_port(&self, name: &str) -> Result<Option<HostPort>, Usage> {
        self.get(name)
            .map(|v| HostPort::parse(&format!("--{name}"), v, None))
            .transpose()
    }

    /// A required flag's `HOST:PORT`, resolved now (a name to its first address).
    pub fn addr(&self, name: &str) -> Res<SocketAddr> {
        let hp = self
            .host_port(name)?
            .ok_or_else(|| usage(format!("missing --{name} (required)")))?;
        hp.resolve(&format!("--{name}"), None)
    }

    /// A required flag's `HOST:PORT` (resolved now), or `all:PORT` / `all4:PORT` /
    /// `all6:PORT`: every address of every up interface, of both families or one.
    pub fn bind_or_all(&self, name: &str) -> Res<Bind> {
        let text = self.require(name)?;
        match parse_all(&format!("--{name}"), text)? {
            Some(listen) => Ok(Bind::All(listen)),
            None => self.addr(name).map(Bind::Addr),
        }
    }

    /// `--idle-timeout SECS` and `--write-stall SECS`: the library's server defaults unless
    /// given, `0` turns one off.
    pub fn deadlines(&self) -> Result<Deadlines, Usage> {
        use pipe_io::pipe_core::conf::{SERVER_IDLE_TIMEOUT, SERVER_WRITE_STALL_TIMEOUT};
        let secs = |name: &str| -> Result<Option<Option<Duration>>, Usage> {
            let Some(v) = self.get(name) else {
                return Ok(None);
            };
            let s: f64 = v
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite())
                .ok_or_else(|| usage(format!("--{name}: {v:?} is not a number of seconds")))?;
            if !(0.0..=86_400.0).contains(&s) {
                return Err(usage(format!(
                    "--{name}: {v} is not between 0 and 86400 seconds"
                )));
            }
            Ok(Some((s > 0.0).then(|| Duration::from_secs_f64(s))))
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

/// Where a server listens: one address, or every address ([`Args::bind_or_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// `HOST:PORT`.
    Addr(SocketAddr),
    /// `all:PORT` (both families), `all4:PORT`, `all6:PORT`: `PipeBuilder::listen_all`.
    All(pipe_io::Listen),
}

/// `all:PORT`, `all4:PORT` or `all6:PORT` for `label`: `Ok(None)` for any other text (an
/// address, or a host name other than these three words).
pub fn parse_all(label: &str, text: &str) -> Result<Option<pipe_io::Listen>, Usage> {
    let (word, port) = text.split_once(':').unwrap_or((text, ""));
    let family = match word {
        "all" => None,
        "all4" => Some(pipe_io::Family::V4),
        "all6" => Some(pipe_io::Family::V6),
        _ => return Ok(None),
    };
    let port: u16 = port.parse().map_err(|_| {
        usage(format!(
            "{label}: {text:?}: {word}:PORT needs a port (0-65535)"
        ))
    })?;
    let listen = pipe_io::Listen::port(port);
    Ok(Some(match family {
        Some(f) => listen.family(f),
        None => listen,
    }))
}

/// A `HOST:PORT` (or `HOST` with a default port) as typed: an IP literal or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host: a name, or an IP literal (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address, when the host is an IP literal.
    pub addr: Option<SocketAddr>,
}

impl HostPort {
    /// Parse `text` for `label` (`--bind`, `SERVER`): `1.2.3.4:80`, `[::1]:80`, `name:80`,
    /// and, with a `default_port`, `1.2.3.4`, `::1`, `[::1]` or `name` alone.
    pub fn parse(label: &str, text: &str, default_port: Option<u16>) -> Result<Self, Usage> {
        let form = if default_port.is_some() {
            "HOST or HOST:PORT"
        } else {
            "HOST:PORT"
        };
        let not_addr = || usage(format!("{label}: {text:?} is not an address ({form})"));
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self {
                host: addr.ip().to_string(),
                port: addr.port(),
                addr: Some(addr),
            });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            // `[v6]` or `[v6]:port` (a `[v6%scope]:port` parsed as a SocketAddr above).
            match rest.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => (h, Some(p.strip_prefix(':').ok_or_else(not_addr)?)),
                None => return Err(not_addr()),
            }
        } else if text.parse::<IpAddr>().is_ok() {
            (text, None)
        } else {
            match text.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => return Err(not_addr()),
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match (port, default_port) {
            (Some(p), _) => p.parse::<u16>().map_err(|_| {
                usage(format!(
                    "{label}: {text:?} has a bad port {p:?} (a number from 0 to 65535)"
                ))
            })?,
            (None, Some(d)) => d,
            (None, None) => return Err(not_addr()),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self {
                host: ip.to_string(),
                port,
                addr: Some(SocketAddr::new(ip, port)),
            });
        }
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .strip_suffix('.')
                .unwrap_or(host)
                .split('.')
                .all(|l| !l.is_empty())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !name_ok {
            return Err(not_addr());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            addr: None,
        })
    }

    /// The socket address: the IP literal, or the name resolved by the system resolver (its
    /// first address, or its first of `family` when given). A failure is a runtime error.
    pub fn resolve(&self, label: &str, family: Option<pipe_io::Family>) -> Res<SocketAddr> {
        if let Some(a) = self.addr {
            return Ok(a);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{label}: cannot resolve {:?}: {e}", self.host))?
            .collect();
        addrs
            .iter()
            .find(|a| family.is_none_or(|f| pipe_io::Family::of_addr(a) == f))
            .copied()
            .ok_or_else(|| match family {
                Some(f) if !addrs.is_empty() => {
                    format!("{label}: {:?} has no {f:?} address", self.host).into()
                }
                _ => format!("{label}: {:?} has no address", self.host).into(),
            })
    }
}

/// Parse the process's arguments by `spec` and run `body`: the exit code is 0 on success
/// (and for `--help`, `--version`), 2 for usage errors (a [`Usage`] anywhere in the error,
/// including from `body`), 1 for any other error.
pub fn main(spec: &'static Spec, body: impl FnOnce(Args) -> Res) -> ExitCode {
    let code = match spec.parse(std::env::args_os().skip(1)) {
        Err(Stop::Help) => {
            print!("{}", spec.help());
            0
        }
        Err(Stop::Version) => {
            println!("{}", spec.version());
            0
        }
        Err(Stop::Usage(u)) => usage_exit(spec, &u),
        Ok(args) => match body(args) {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<Usage>() {
                Some(u) => usage_exit(spec, u),
                None => {
                    eprintln!("error: {}", error_chain(&*e));
                    1
                }
            },
        },
    };
    ExitCode::from(code)
}

fn usage_exit(spec: &Spec, u: &Usage) -> u8 {
    eprintln!(
        "error: {u}\n{}\n(see {} --help)",
        spec.usage_line(),
        spec.name
    );
    2
}

/// An error and its causes, `: `-separated, each said once: a cause whose text the error's
/// own text already holds is skipped.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_all() {
        use pipe_io::{Family, Listen};
        let all = |t: &str| parse_all("--bind", t);
        assert_eq!(all("all:7000").unwrap(), Some(Listen::port(7000)));
        assert_eq!(
            all("all6:0").unwrap(),
            Some(Listen::port(0).family(Family::V6))
        );
        assert_eq!(
            all("all4:1").unwrap(),
            Some(Listen::port(1).family(Family::V4))
        );
        for bad in ["all", "all:", "all:x", "all:65536", "all4:-1"] {
            let e = all(bad).unwrap_err().to_string();
            assert!(e.contains("needs a port"), "{bad}: {e}");
        }
        for other in ["127.0.0.1:80", "[::1]:80", "allhosts:80", "localhost:80"] {
            assert_eq!(all(other).unwrap(), None, "{other}");
        }
    }

    static SPEC: Spec = Spec {
        name: "t",
        about: "a test",
        opts: &[PROTO, BIND, RUNTIME, IDLE_TIMEOUT, WRITE_STALL, VERBOSE],
        positional: &[],
        notes: "",
    };

    static POS: Spec = Spec {
        name: "p",
        about: "a test",
        opts: &[RUNTIME],
        positional: &[Pos {
            name: "SERVER",
            required: true,
            help: "the server",
        }],
        notes: "",
    };

    fn err(spec: &'static Spec, args: &[&str]) -> String {
        match spec.parse(args.iter().copied()) {
            Err(Stop::Usage(u)) => u.0,
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn flags() {
        let a = SPEC
            .parse([
                "--proto",
                "udp",
                "--bind=127.0.0.1:0",
                "-v",
                "--runtime",
                "smol",
            ])
            .unwrap();
        assert_eq!(a.proto().unwrap(), pipe_io::Proto::Udp);
        assert_eq!(a.get("bind"), Some("127.0.0.1:0"));
        assert!(a.switch("verbose"));
        assert_eq!(a.runtime().unwrap(), Which::Smol);
        assert_eq!(SPEC.parse(["--help", "--bogus"]).unwrap_err(), Stop::Help);
        assert_eq!(SPEC.parse(["-V"]).unwrap_err(), Stop::Version);
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let base = ["--proto", "tcp", "--bind", "127.0.0.1:0"];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            base.iter().chain(extra).copied().collect()
        };
        assert_eq!(
            err(&SPEC, &with(&["--bnd", "x"])),
            "unknown flag --bnd (did you mean --bind?)"
        );
        assert_eq!(err(&SPEC, &with(&["--zzzzzz"])), "unknown flag --zzzzzz");
        assert_eq!(err(&SPEC, &with(&["-q"])), "unknown flag -q");
        assert_eq!(
            err(&SPEC, &with(&["--bind", "127.0.0.1:1"])),
            "--bind given twice (it takes one value)"
        );
        assert_eq!(
            err(&SPEC, &with(&["--runtime"])),
            "--runtime needs a value (tokio|smol)"
        );
        assert_eq!(
            err(&SPEC, &with(&["--verbose=yes"])),
            "--verbose takes no value (it is a switch)"
        );
        assert_eq!(
            err(&SPEC, &with(&["stray"])),
            "unexpected argument \"stray\""
        );
        assert_eq!(
            err(&SPEC, &["--proto", "tcp"]),
            "missing --bind ADDR (required)"
        );
        assert_eq!(
            err(&SPEC, &["--bind", "--proto", "tcp"]),
            "--bind needs a value (ADDR), not the flag --proto"
        );
        assert_eq!(err(&POS, &[]), "missing SERVER (required)");
        let a = SPEC.parse(with(&["--idle-timeout", "x"])).unwrap();
        assert_eq!(
            a.deadlines().unwrap_err().0,
            "--idle-timeout: \"x\" is not a number of seconds"
        );
        let a = SPEC.parse(with(&["--runtime", "tokyo"])).unwrap();
        assert_eq!(
            a.runtime().unwrap_err().0,
            "--runtime: \"tokyo\" is not a runtime (tokio or smol)"
        );
    }

    #[test]
    fn host_port() {
        let p = |t: &str| HostPort::parse("--to", t, None);
        let d = |t: &str| HostPort::parse("SERVER", t, Some(3478));
        assert_eq!(
            p("127.0.0.1:80").unwrap().addr,
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            p("[::1]:80").unwrap().addr,
            Some("[::1]:80".parse().unwrap())
        );
        let n = p("localhost:80").unwrap();
        assert_eq!((n.host.as_str(), n.port, n.addr), ("localhost", 80, None));
        assert_eq!(
            p("x").unwrap_err().0,
            "--to: \"x\" is not an address (HOST:PORT)"
        );
        assert_eq!(
            p("x:http").unwrap_err().0,
            "--to: \"x:http\" has a bad port \"http\" (a number from 0 to 65535)"
        );
        assert!(p("::1").is_err());
        assert!(p("a b:80").is_err());
        // The default port.
        assert_eq!(d("localhost").unwrap().port, 3478);
        assert_eq!(d("localhost:19302").unwrap().port, 19302);
        assert_eq!(
            d("127.0.0.1").unwrap().addr,
            Some("127.0.0.1:3478".parse().unwrap())
        );
        assert_eq!(d("::1").unwrap().addr, Some("[::1]:3478".parse().unwrap()));
        assert_eq!(
            d("[::1]").unwrap().addr,
            Some("[::1]:3478".parse().unwrap())
        );
        assert_eq!(d("[::1]:9").unwrap().addr, Some("[::1]:9".parse().unwrap()));
        assert_eq!(
            d("stun.example.org").unwrap(),
            HostPort {
                host: "stun.example.org".into(),
                port: 3478,
                addr: None
            }
        );
        // Names resolve (loopback only).
        let a = d("localhost").unwrap().resolve("SERVER", None).unwrap();
        assert!(a.ip().is_loopback());
        assert_eq!(a.port(), 3478);
    }

    #[test]
    fn help_mentions_every_flag() {
        let h = SPEC.help();
        for o in SPEC.opts {
            assert!(h.contains(&format!("--{}", o.long)), "{h}");
        }
        assert!(h.contains("--help") && h.contains("--version"));
        assert_eq!(
            SPEC.usage_line(),
            "usage: t --proto tcp|udp --bind ADDR [OPTIONS]"
        );
        assert_eq!(POS.usage_line(), "usage: p [OPTIONS] SERVER");
    }

    #[test]
    fn causes_said_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "bind failed: {}", self.0)
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("address in use"));
        assert_eq!(error_chain(&e), "bind failed: address in use");
    }
}
