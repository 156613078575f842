//! `cargo run --release -p pipe-bench [-- --rounds N | --smoke]`: every workload, for pipes and
//! for raw tokio / raw smol, in every runtime flavour, interleaved over N rounds; prints a
//! markdown table of median (min–max) and the pipes/raw ratio, then the pipe-core
//! microbenchmark. Each measurement is a separate server process and client process, in a
//! fresh network namespace when `unshare -n` is permitted. `--smoke` runs everything once with
//! tiny counts, without namespaces, in seconds, and fails if any workload fails. With
//! `PIPES_REQUIRE_PEERS=1` (as `.ci/run` sets) a missing tool (socat, taskset, a permitted
//! `unshare -n`) fails the run instead of leaving a note.
//!
//! Other flags: `--only w1,w2` (workload names), `--flavours tokio-ct,smol-1t`, `--no-netns`,
//! `--no-micro`. Internal: `--role pair|server|client|relay ...`.

mod pipes;
mod raw_smol;
mod raw_tokio;
mod report;
mod roles;
mod rt;
mod spec;
mod tls;

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use roles::Proc;
use spec::{Counts, Flavour, Imp, Metrics, Res, Spec, Workload};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = if args.first().map(String::as_str) == Some("--role") {
        role(&args[1..])
    } else {
        orchestrate(&args)
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipe-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn role(args: &[String]) -> Res {
    let (name, rest) = args.split_first().ok_or("--role needs a name")?;
    match name.as_str() {
        "pair" => {
            let spec = Spec::parse(rest)?;
            let netns = rest.iter().any(|a| a == "--netns");
            let secs: u64 = rest.last().ok_or("no timeout")?.parse()?;
            roles::pair(spec, netns, Duration::from_secs(secs))
        }
        "server" => roles::server(Spec::parse(rest)?),
        "client" => roles::client(
            Spec::parse(rest)?,
            rest.get(4).ok_or("no address")?.parse()?,
            rest.get(5).map(String::as_str),
        ),
        "relay" => {
            let [imp, fl, to, ..] = rest else {
                return Err("relay: <impl> <flavour> <to>".into());
            };
            roles::relay(Imp::parse(imp)?, Flavour::parse(fl)?, to.parse()?)
        }
        other => Err(format!("unknown role {other:?}").into()),
    }
}

struct Opts {
    smoke: bool,
    rounds: usize,
    workloads: Vec<Workload>,
    flavours: Vec<Flavour>,
    netns: bool,
    micro: bool,
}

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        smoke: false,
        rounds: 5,
        workloads: Workload::ALL.to_vec(),
        flavours: Flavour::ALL.to_vec(),
        netns: true,
        micro: true,
    };
    let mut it = args.iter();
    let mut rounds = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => o.smoke = true,
            "--rounds" => rounds = Some(it.next().ok_or("--rounds N")?.parse()?),
            "--only" => {
                o.workloads = it
                    .next()
                    .ok_or("--only w,...")?
                    .split(',')
                    .map(Workload::parse)
                    .collect::<Res<_>>()?
            }
            "--flavours" => {
                o.flavours = it
                    .next()
                    .ok_or("--flavours f,...")?
                    .split(',')
                    .map(Flavour::parse)
                    .collect::<Res<_>>()?
            }
            "--no-netns" => o.netns = false,
            "--no-micro" => o.micro = false,
            other => {
                return Err(format!(
                    "unknown flag {other:?} (see the crate doc in pipe-bench/src/main.rs)"
                )
                .into())
            }
        }
    }
    if o.smoke {
        o.rounds = 1;
        o.netns = false;
        o.micro = false;
    }
    if let Some(r) = rounds {
        o.rounds = r;
    }
    Ok(o)
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    let lscpu = shell("lscpu", &[]);
    let line = lscpu
        .lines()
        .find(|l| l.starts_with("Model name:"))
        .map(|l| l["Model name:".len()..].trim().to_owned());
    line.unwrap_or_else(|| "unknown".into())
}

/// One measurement: a `pair` process, in its own namespace if `netns`.
fn measure(spec: Spec, netns: bool, pin: bool, timeout: Duration) -> Res<Metrics> {
    let exe = std::env::current_exe()?;
    let mut cmd = if pin && spec.flavour.pinned() {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]);
        c
    } else if netns {
        Command::new("unshare")
    } else {
        Command::new(&exe)
    };
    if pin && spec.flavour.pinned() && netns {
        cmd.arg("unshare");
    }
    if netns {
        cmd.args(["-n", "--"]);
    }
    if (pin && spec.flavour.pinned()) || netns {
        cmd.arg(&exe);
    }
    cmd.args(["--role", "pair"]).args(spec.args());
    if netns {
        cmd.arg("--netns");
    }
    cmd.arg(timeout.as_secs().to_string());
    let pair = Proc::spawn("pair", cmd)?;
    let line = pair.expect("RESULT ", Instant::now() + timeout + Duration::from_secs(5));
    pair.finish();
    let mut m = Metrics::new();
    for word in line?.split_whitespace() {
        let (k, v) = word.split_once('=').ok_or("bad RESULT word")?;
        m.push((k.to_owned(), v.parse()?));
    }
    Ok(m)
}

fn orchestrate(args: &[String]) -> Res {
    let o = parse_opts(args)?;
    let started = Instant::now();
    let counts = if o.smoke {
        Counts::smoke()
    } else {
        Counts::full()
    };
    let timeout = Duration::from_secs(if o.smoke { 15 } else { 120 });
    let mut netns = o.netns;
    let mut notes = Vec::new();
    if netns && !(works("unshare", &["-n", "--", "ip", "link", "set", "lo", "up"])) {
        netns = false;
        notes.push("`unshare -n` is not permitted here: every run shares the host's network namespace (TIME_WAIT sockets of one run stay during the next).".to_string());
    }
    let pin = works("taskset", &["-c", "1", "true"]);
    if !pin {
        notes.push(
            "`taskset -c 1` failed: the single-thread flavours are not pinned to one core."
                .to_string(),
        );
    }
    let socat = works("socat", &["-V"]);
    if !socat && o.workloads.contains(&Workload::Relay) {
        notes.push(
            "socat is not installed: the socat relay rows are empty (apt-get install socat)."
                .to_string(),
        );
    }
    // Under CI (`PIPES_REQUIRE_PEERS=1`) a missing tool is a failure, not a note.
    if !notes.is_empty()
        && std::env::var_os("PIPES_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0")
    {
        return Err(format!("PIPES_REQUIRE_PEERS is set: {}", notes.join(" ")).into());
    }
    let mut results: report::Results = BTreeMap::new();
    let mut failures = Vec::new();
    let mut failed: report::Failures = BTreeMap::new();
    for round in 0..o.rounds {
        for &w in &o.workloads {
            let mut runs: Vec<(Imp, Option<Flavour>)> = Vec::new();
            for &fl in o.flavours.iter().filter(|&&fl| w.runs_on(fl)) {
                // Alternate which side goes first, so a drift within a round hits both alike.
                let order = if round % 2 == 0 {
                    [Imp::Raw, Imp::Pipes]
                } else {
                    [Imp::Pipes, Imp::Raw]
                };
                runs.extend(order.map(|i| (i, Some(fl))));
            }
            if w == Workload::Relay {
                // The pipes relay's copying path (zero copy is `Imp::Pipes`, the default).
                for &fl in o.flavours.iter().filter(|&&fl| w.runs_on(fl)) {
                    runs.push((Imp::PipesCopy, Some(fl)));
                }
                // socat and no relay at all, pinned to one core and not, to compare each
                // flavour with the setting it runs in.
                for fl in [Flavour::TokioCt, Flavour::TokioMt] {
                    if socat {
                        runs.push((Imp::Socat, Some(fl)));
                    }
                    runs.push((Imp::Direct, Some(fl)));
                }
            }
            for (imp, fl) in runs {
                let spec = Spec {
                    workload: w,
                    imp,
                    flavour: fl.unwrap_or(Flavour::TokioCt),
                    count: counts.of(w),
                };
                let t = Instant::now();
                match measure(spec, netns, pin, timeout) {
                    Ok(m) => {
                        let shown: Vec<String> = m
                            .iter()
                            .map(|(k, v)| format!("{k}={}", report::num(*v)))
                            .collect();
                        eprintln!(
                            "[{}/{}] {spec}: {} ({:.2} s)",
                            round + 1,
                            o.rounds,
                            shown.join(" "),
                            t.elapsed().as_secs_f64()
                        );
                        results.entry((w, imp, fl)).or_default().push(m);
                    }
                    Err(e) => {
                        eprintln!("[{}/{}] {spec}: FAILED: {e}", round + 1, o.rounds);
                        failures.push(format!("{spec}: {e}"));
                        *failed.entry((w, imp, fl)).or_default() += 1;
                    }
                }
            }
        }
    }
    let (table, missed) = report::table(&results, &failed, &o.flavours, &o.workloads);
    println!("{}", header(&o, netns, &counts));
    println!("{table}");
    for n in &notes {
        println!("Note: {n}\n");
    }
    if !missed.is_empty() {
        println!("Targets missed:\n");
        for m in &missed {
            println!("- {m}");
        }
        println!();
    }
    if o.micro {
        micro();
    }
    eprintln!(
        "pipe-bench: {} measurements in {:.1} s",
        results.values().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        return Err(format!(
            "{} measurement(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )
        .into());
    }
    Ok(())
}

fn header(o: &Opts, netns: bool, c: &Counts) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "pipe-bench{}: {} round(s), interleaved; machine: nproc {}, {}, Linux {}, TCP congestion control {}; date {}; network namespace per run: {}\n\n",
        if o.smoke { " --smoke" } else { "" },
        o.rounds,
        shell("nproc", &[]),
        cpu_model(),
        shell("uname", &["-r"]),
        // A new namespace starts with the host's; it decides the bulk and relay rates (BBR
        // paces loopback senders with timers, cubic does not).
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        shell("date", &["-u", "+%Y-%m-%d"]),
        if netns { "yes" } else { "no" },
    ));
    h.push_str(&format!(
        "Per run: {} ping-pong round trips (TCP and UDP, {} warm-up), {} MiB bulk, {} UDP stream datagrams, {} connects, {} concurrent connections, {} MiB through the relay, {} TLS ping-pong round trips ({} warm-up), {} MiB TLS bulk.\n",
        c.tcp_pingpong,
        spec::warmup(c.tcp_pingpong),
        c.tcp_bulk >> 20,
        c.udp_stream,
        c.connect_close,
        c.many,
        c.relay >> 20,
        c.tls_pingpong,
        spec::warmup(c.tls_pingpong),
        c.tls_bulk >> 20,
    ));
    if o.workloads.iter().any(|w| w.is_tls()) {
        h.push_str(&format!(
            "TLS (8, 9): {}; raw is tokio over tokio-rustls, pipes is `Conf::tls`; tokio flavours only (no raw smol TLS to compare with). Certificates are made at run time; the handshake is outside the timed part.\n",
            tls::describe()
        ));
    }
    for fl in &o.flavours {
        h.push_str(&format!(
            "`{}`: {}, in the server and the client process alike. ",
            fl.name(),
            fl.describe()
        ));
    }
    h.push('\n');
    h
}

/// The pipe-core microbenchmark (divan), if it exists in this checkout.
fn micro() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    println!("## pipe-core microbenchmark (`cargo bench -p pipe-core --bench pipeline`)\n");
    if !root.join("pipe-core/benches/pipeline.rs").exists() {
        println!("skipped: pipe-core/benches/pipeline.rs is not there yet.");
        return;
    }
    eprintln!("pipe-bench: running the pipe-core microbenchmark");
    match Command::new("cargo")
        .args(["bench", "-q", "-p", "pipe-core", "--bench", "pipeline"])
        .current_dir(&root)
        .output()
    {
        Ok(o) if o.status.success() => println!(
            "```\n{}\n```",
            String::from_utf8_lossy(&o.stdout).trim_end()
        ),
        Ok(o) => println!(
            "failed ({}):\n```\n{}\n```",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim_end()
        ),
        Err(e) => println!("skipped: cannot run cargo: {e}"),
    }
}
