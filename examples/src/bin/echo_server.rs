//! `echo-server --proto tcp|udp --bind ADDR|all:PORT [--runtime tokio|smol] [--idle-timeout SECS]
//! [--write-stall SECS] [--reliable] [-v]`
use examples::cli::{
    self, Opt, Spec, BIND_ALL, IDLE_TIMEOUT, PROTO, RUNTIME, VERBOSE, WRITE_STALL,
};
use examples::{echo::EchoServer, run_on, serve::Tally};

static SPEC: Spec = Spec {
    name: "echo-server",
    about: "echo every message back to its sender",
    opts: &[
        PROTO,
        BIND_ALL,
        RUNTIME,
        IDLE_TIMEOUT.help(
            "TCP: end a connection after no bytes either way for SECS (default 30; 0: never)",
        ),
        WRITE_STALL,
        Opt {
            long: "reliable",
            short: None,
            value: None,
            required: false,
            help: "UDP: P2PD's reliable UDP: ACK each data frame, echo it with send_reliable",
        },
        Opt {
            long: "tls",
            short: None,
            value: Some("CERT KEY"),
            required: false,
            help: "TCP: serve TLS with this certificate chain and key (PEM files)",
        },
        VERBOSE,
    ],
    positional: &[],
    notes: "Prints `listening on ADDR` first (with --bind all:PORT, one such line per address, \
            and `not listening on ADDR: ERROR` on stderr for each address that failed). Ctrl-C \
            (SIGINT) or SIGTERM stops it (exit 0).",
};

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let (proto, runtime, deadlines) = (args.proto()?, args.runtime()?, args.deadlines()?);
        let reliable = args.switch("reliable");
        if reliable && proto != pipe_io::Proto::Udp {
            return Err(examples::Usage("--reliable needs --proto udp".into()).into());
        }
        let bind = args.bind_or_all("bind")?;
        let tally = args.switch("verbose").then(Tally::new);
        let tls = args.tls_server("tls")?;
        if tls.is_some() && proto != pipe_io::Proto::Tcp {
            return Err(examples::Usage("--tls needs --proto tcp".into()).into());
        }
        run_on(
            runtime,
            EchoServer {
                proto,
                bind,
                deadlines,
                reliable,
                tally,
                tls,
            },
        )
    })
}
