//! `relay --proto tcp|udp --listen ADDR --to ADDR [--runtime tokio|smol]
//! [--idle-timeout SECS] [--write-stall SECS] [-v]`
use examples::cli::{self, Opt, Spec, IDLE_TIMEOUT, PROTO, RUNTIME, VERBOSE, WRITE_STALL};
use examples::{relay::Relay, run_on, serve::Tally};

static SPEC: Spec = Spec {
    name: "relay",
    about: "forward every connection (TCP) or client (UDP) to one upstream address",
    opts: &[
        PROTO,
        Opt {
            long: "listen",
            short: None,
            value: Some("ADDR"),
            required: true,
            help: "where to listen, HOST:PORT (port 0: any free port)",
        },
        Opt {
            long: "to",
            short: None,
            value: Some("ADDR"),
            required: true,
            help: "where to forward, HOST:PORT (a name is resolved once, at start)",
        },
        RUNTIME,
        IDLE_TIMEOUT,
        WRITE_STALL,
        VERBOSE,
    ],
    positional: &[],
    notes: "Prints `listening on ADDR` first. Ctrl-C (SIGINT) or SIGTERM stops it (exit 0).",
};

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let (proto, runtime, deadlines) = (args.proto()?, args.runtime()?, args.deadlines()?);
        // Both checked before either is resolved: a usage error wins over a DNS failure.
        args.host_port("listen")?;
        args.host_port("to")?;
        let listen = args.addr("listen")?;
        let to = args.addr("to")?;
        run_on(
            runtime,
            Relay {
                proto,
                listen,
                to,
                deadlines,
                tally: args.switch("verbose").then(Tally::new),
            },
        )
    })
}
