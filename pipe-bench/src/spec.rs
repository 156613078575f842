//! What one measurement is: a workload, an implementation, a runtime flavour and a count.
//! Everything here round-trips through the command line, because every measurement runs in
//! child processes (server, client, relay) of a `pair` process.

use std::fmt;

/// The result of a role.
pub type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Bytes of a ping-pong message.
pub const MSG: usize = 64;
/// Bytes of one bulk write, and of every raw read buffer (pipes' default `reader_limit`).
pub const CHUNK: usize = 64 * 1024;
/// Bytes of one UDP stream datagram.
pub const DGRAM: usize = 1200;
/// UDP stream: datagrams in flight before the sender waits for a credit.
pub const WINDOW: u64 = 64;
/// UDP stream: the receiver returns a credit every this many datagrams.
pub const CREDIT: u64 = 16;
/// Connect+close: every this many connections, one echo before the close, so that the client
/// cannot outrun the server's accept loop (an overflowing accept queue costs 1 s SYN retries).
pub const SYNC_EVERY: u64 = 50;
/// Many connections: connects in flight at once (well under the listen backlogs).
pub const CONNECT_WORKERS: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    TcpPingPong,
    TcpBulk,
    UdpPingPong,
    UdpStream,
    ConnectClose,
    Many,
    Relay,
    TlsPingPong,
    TlsBulk,
}

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::TcpPingPong,
        Workload::TcpBulk,
        Workload::UdpPingPong,
        Workload::UdpStream,
        Workload::ConnectClose,
        Workload::Many,
        Workload::Relay,
        Workload::TlsPingPong,
        Workload::TlsBulk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::TcpPingPong => "tcp-pingpong",
            Workload::TcpBulk => "tcp-bulk",
            Workload::UdpPingPong => "udp-pingpong",
            Workload::UdpStream => "udp-stream",
            Workload::ConnectClose => "connect-close",
            Workload::Many => "many-conns",
            Workload::Relay => "relay",
            Workload::TlsPingPong => "tls-pingpong",
            Workload::TlsBulk => "tls-bulk",
        }
    }

    /// Row label in the table.
    pub fn title(self) -> &'static str {
        match self {
            Workload::TcpPingPong => "1 TCP ping-pong 64 B (round trips/s)",
            Workload::TcpBulk => "2 TCP bulk 64 KiB writes (MB/s)",
            Workload::UdpPingPong => "3 UDP ping-pong 64 B (round trips/s)",
            Workload::UdpStream => "4 UDP stream 1200 B (datagrams/s)",
            Workload::ConnectClose => "5 TCP connect+close, 1 echo per 50 (connections/s)",
            Workload::Many => "6 many connections",
            Workload::Relay => "7 TCP relay bulk (MB/s)",
            Workload::TlsPingPong => "8 TLS ping-pong 64 B (round trips/s)",
            Workload::TlsBulk => "9 TLS bulk 64 KiB writes (MB/s)",
        }
    }

    /// TCP in TLS: pipes with `Conf::tls` against raw tokio over tokio-rustls.
    pub fn is_tls(self) -> bool {
        matches!(self, Workload::TlsPingPong | Workload::TlsBulk)
    }

    /// Whether the workload runs in `fl`. The TLS workloads run on the tokio flavours only:
    /// their raw side is tokio-rustls, and a pipes-on-smol row would have no raw smol TLS
    /// to be compared with.
    pub fn runs_on(self, fl: Flavour) -> bool {
        !self.is_tls() || fl.is_tokio()
    }

    pub fn parse(s: &str) -> Res<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown workload {s:?}").into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flavour {
    TokioCt,
    TokioMt,
    Smol1,
    Smol2,
}

impl Flavour {
    pub const ALL: [Flavour; 4] = [
        Flavour::TokioCt,
        Flavour::TokioMt,
        Flavour::Smol1,
        Flavour::Smol2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flavour::TokioCt => "tokio-ct",
            Flavour::TokioMt => "tokio-mt",
            Flavour::Smol1 => "smol-1t",
            Flavour::Smol2 => "smol-2t",
        }
    }

    /// What the flavour means, for the table's notes.
    pub fn describe(self) -> &'static str {
        match self {
            Flavour::TokioCt => "tokio current-thread runtime",
            Flavour::TokioMt => "tokio multi-thread runtime, 2 workers",
            Flavour::Smol1 => "one smol::Executor driven by block_on on 1 thread",
            Flavour::Smol2 => "one smol::Executor driven by block_on on 2 threads",
        }
    }

    /// Single-threaded flavours run every process of a measurement on one core (CPU 1), so that
    /// no run pays for cross-core wake-ups and no run is at the mercy of where the scheduler
    /// puts the two processes; the two-thread flavours are not pinned.
    pub fn pinned(self) -> bool {
        matches!(self, Flavour::TokioCt | Flavour::Smol1)
    }

    /// Where its processes run.
    pub fn cores(self) -> &'static str {
        if self.pinned() {
            "1 core (pinned)"
        } else {
            "2 cores"
        }
    }

    pub fn is_tokio(self) -> bool {
        matches!(self, Flavour::TokioCt | Flavour::TokioMt)
    }

    pub fn parse(s: &str) -> Res<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown flavour {s:?}").into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Imp {
    /// Plain tokio `TcpStream`/`UdpSocket` loops, or plain async-io `Async<..>` loops on smol.
    Raw,
    /// pipe-tokio or pipe-smol.
    Pipes,
    /// Relay only: `socat -b65536`.
    Socat,
    /// Relay only: the client talks to the echo server directly.
    Direct,
    /// Relay only: the pipes relay on its copying path (`Conf::zero_copy` off); `Pipes` is the
    /// default, zero copy where the runtime and the OS can splice.
    PipesCopy,
}

impl Imp {
    pub fn name(self) -> &'static str {
        match self {
            Imp::Raw => "raw",
            Imp::Pipes => "pipes",
            Imp::Socat => "socat",
            Imp::Direct => "direct",
            Imp::PipesCopy => "pipes-copy",
        }
    }

    pub fn parse(s: &str) -> Res<Self> {
        [
            Imp::Raw,
            Imp::Pipes,
            Imp::Socat,
            Imp::Direct,
            Imp::PipesCopy,
        ]
        .into_iter()
        .find(|i| i.name() == s)
        .ok_or_else(|| format!("unknown implementation {s:?}").into())
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spec {
    pub workload: Workload,
    pub imp: Imp,
    pub flavour: Flavour,
    /// Round trips, bytes, datagrams or connections, depending on the workload.
    pub count: u64,
}

impl Spec {
    pub fn args(&self) -> Vec<String> {
        vec![
            self.workload.name().into(),
            self.imp.name().into(),
            self.flavour.name().into(),
            self.count.to_string(),
        ]
    }

    /// Parse the four words written by [`Spec::args`].
    pub fn parse(args: &[String]) -> Res<Self> {
        let [w, i, f, c, ..] = args else {
            return Err("expected: <workload> <impl> <flavour> <count>".into());
        };
        Ok(Spec {
            workload: Workload::parse(w)?,
            imp: Imp::parse(i)?,
            flavour: Flavour::parse(f)?,
            count: c.parse()?,
        })
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.imp {
            Imp::Socat | Imp::Direct => write!(
                f,
                "{} {} {}",
                self.workload.name(),
                self.imp.name(),
                self.flavour.cores()
            ),
            _ => write!(
                f,
                "{} {} {}",
                self.workload.name(),
                self.flavour.name(),
                self.imp.name()
            ),
        }
    }
}

/// How much work each workload does per measurement.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub tcp_pingpong: u64,
    pub tcp_bulk: u64,
    pub udp_pingpong: u64,
    pub udp_stream: u64,
    pub connect_close: u64,
    pub many: u64,
    pub relay: u64,
    pub tls_pingpong: u64,
    pub tls_bulk: u64,
}

impl Counts {
    pub fn full() -> Self {
        Counts {
            tcp_pingpong: 20_000,
            tcp_bulk: 512 << 20,
            udp_pingpong: 20_000,
            udp_stream: 200_000,
            connect_close: 2_000,
            many: 10_000,
            relay: 512 << 20,
            tls_pingpong: 20_000,
            tls_bulk: 512 << 20,
        }
    }

    pub fn smoke() -> Self {
        Counts {
            tcp_pingpong: 200,
            tcp_bulk: 4 << 20,
            udp_pingpong: 200,
            udp_stream: 2_000,
            connect_close: 50,
            many: 200,
            relay: 4 << 20,
            tls_pingpong: 200,
            tls_bulk: 4 << 20,
        }
    }

    pub fn of(&self, w: Workload) -> u64 {
        match w {
            Workload::TcpPingPong => self.tcp_pingpong,
            Workload::TcpBulk => self.tcp_bulk,
            Workload::UdpPingPong => self.udp_pingpong,
            Workload::UdpStream => self.udp_stream,
            Workload::ConnectClose => self.connect_close,
            Workload::Many => self.many,
            Workload::Relay => self.relay,
            Workload::TlsPingPong => self.tls_pingpong,
            Workload::TlsBulk => self.tls_bulk,
        }
    }
}

/// Warm-up iterations before the clock starts: a tenth, at least one.
pub fn warmup(count: u64) -> u64 {
    (count / 10).max(1)
}

/// Metrics a client reports, as `key=value` words after `RESULT`.
pub type Metrics = Vec<(String, f64)>;

pub fn metric(key: &str, value: f64) -> (String, f64) {
    (key.to_owned(), value)
}
