//! `stun-server --bind ADDR [--alt ADDR] [--runtime tokio|smol]`: a STUN Binding responder
//! (classic RFC 3489 clients too); with `--alt`, an RFC 5780 behaviour-discovery server on
//! four sockets. Prints `listening on <addr>` first, then answers until killed (Ctrl-C or
//! SIGTERM: exit 0).

use examples::cli::{self, Opt, Spec, BIND, RUNTIME};
use examples::serve::serve;
use examples::{run_on, stun_responder, Program, Res};
use pipe_io::Runtime;

static SPEC: Spec = Spec {
    name: "stun-server",
    about: "a STUN Binding responder (RFC 8489) on UDP",
    opts: &[
        BIND,
        Opt {
            long: "alt",
            short: None,
            value: Some("ADDR"),
            required: false,
            help: "a second address and port: serve RFC 5780 NAT behaviour discovery \
                   (OTHER-ADDRESS, CHANGE-REQUEST) on --bind, ADDR and their two crossings",
        },
        RUNTIME,
    ],
    positional: &[],
    notes: "Prints `listening on ADDR` first. Ctrl-C (SIGINT) or SIGTERM stops it (exit 0).",
};

struct Main(std::net::SocketAddr, Option<std::net::SocketAddr>);

impl Program for Main {
    type Output = ();
    async fn run<R: Runtime>(self, rt: R) -> Res {
        let pipes = match self.1 {
            None => vec![stun_responder::start(rt, self.0).await?],
            Some(alt) => stun_responder::start_rfc5780(rt, self.0, alt).await?,
        };
        // The primary address first (the announced one), the others on stderr.
        for p in &pipes[1..] {
            if let Some(a) = p.local_addr() {
                eprintln!("also on {a}");
            }
        }
        serve(&pipes[0]).await?;
        for p in &pipes {
            p.close().await;
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let runtime = args.runtime()?;
        let alt = args.get("alt").map(|_| args.addr("alt")).transpose()?;
        run_on(runtime, Main(args.addr("bind")?, alt))
    })
}
