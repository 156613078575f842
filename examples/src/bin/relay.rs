//! `relay --proto tcp|udp --listen ADDR --to ADDR [--runtime tokio|smol]
//! [--idle-timeout SECS] [--write-stall SECS] [--tls-listen CERT KEY] [--tls-to NAME
//! [--ca FILE]] [-v]`
use examples::cli::{self, Opt, Spec, IDLE_TIMEOUT, PROTO, RUNTIME, VERBOSE, WRITE_STALL};
use examples::relay::{Relay, RelayTls};
use examples::{run_on, serve::Tally};

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
        Opt {
            long: "tls-listen",
            short: None,
            value: Some("CERT KEY"),
            required: false,
            help: "TCP: terminate TLS from clients with this certificate chain and key (PEM)",
        },
        Opt {
            long: "tls-to",
            short: None,
            value: Some("NAME"),
            required: false,
            help: "TCP: connect to the upstream with TLS, verifying its certificate for NAME",
        },
        Opt {
            long: "ca",
            short: None,
            value: Some("FILE"),
            required: false,
            help: "with --tls-to: trust these roots (PEM) instead of the OS's",
        },
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
        let tls = relay_tls(&args)?;
        if (tls.listen.is_some() || tls.to.is_some()) && proto != pipe_io::Proto::Tcp {
            return Err(
                examples::Usage("--tls-listen and --tls-to need --proto tcp".into()).into(),
            );
        }
        run_on(
            runtime,
            Relay {
                proto,
                listen,
                to,
                deadlines,
                tally: args.switch("verbose").then(Tally::new),
                tls,
            },
        )
    })
}

/// `--tls-listen`, `--tls-to` and `--ca`.
fn relay_tls(args: &cli::Args) -> examples::Res<RelayTls> {
    use pipe_io::tls::{self, ServerName, TlsClient};
    if args.get("ca").is_some() && args.get("tls-to").is_none() {
        return Err(examples::Usage("--ca needs --tls-to".into()).into());
    }
    let to = match args.get("tls-to") {
        None => None,
        Some(name) => {
            let name = ServerName::try_from(name.to_owned())
                .map_err(|_| examples::Usage(format!("--tls-to: {name:?} is not a server name")))?;
            let roots = match args.get("ca") {
                Some(file) => tls::load_roots(file).map_err(|e| format!("--ca: {e}"))?,
                None => tls::os_roots(),
            };
            let client = TlsClient::new(roots)
                .server_name(name)
                .build()
                .map_err(|e| format!("--tls-to: {e}"))?;
            Some(client)
        }
    };
    Ok(RelayTls {
        listen: args.tls_server("tls-listen")?,
        to,
    })
}
