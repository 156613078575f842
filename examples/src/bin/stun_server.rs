//! `stun-server --bind ADDR [--runtime tokio|smol]`: a STUN Binding responder. Prints
//! `listening on <addr>` first, then answers until killed (Ctrl-C or SIGTERM: exit 0).

use examples::cli::{self, Spec, BIND, RUNTIME};
use examples::serve::serve;
use examples::{run_on, stun_responder, Program, Res};
use pipe_io::Runtime;

static SPEC: Spec = Spec {
    name: "stun-server",
    about: "a STUN Binding responder (RFC 8489) on UDP",
    opts: &[BIND, RUNTIME],
    positional: &[],
    notes: "Prints `listening on ADDR` first. Ctrl-C (SIGINT) or SIGTERM stops it (exit 0).",
};

struct Main(std::net::SocketAddr);

impl Program for Main {
    type Output = ();
    async fn run<R: Runtime>(self, rt: R) -> Res {
        let pipe = stun_responder::start(rt, self.0).await?;
        serve(&pipe).await?;
        pipe.close().await;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let runtime = args.runtime()?;
        run_on(runtime, Main(args.addr("bind")?))
    })
}
