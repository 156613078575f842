//! The seed's UDP example: `udp-stun [SERVER] [--runtime tokio|smol]`. Without SERVER it
//! starts a STUN responder on 127.0.0.1 and asks it (this machine may be offline).
use std::net::SocketAddr;

use examples::cli::{self, HostPort, Pos, Spec, RUNTIME};
use examples::{run_on, seed::UdpStun, stun_responder, Program, Res};
use pipe_io::Runtime;

static SPEC: Spec = Spec {
    name: "udp-stun",
    about: "the seed's UDP example: ask a STUN server which address it sees us as",
    opts: &[RUNTIME],
    positional: &[Pos {
        name: "SERVER",
        required: false,
        help: "HOST[:PORT] of the STUN server (port 3478 by default); without it, a \
               responder started on 127.0.0.1",
    }],
    notes: "",
};

struct Main(Option<SocketAddr>);

impl Program for Main {
    type Output = ();
    async fn run<R: Runtime>(self, rt: R) -> Res {
        let (server, _responder) = match self.0 {
            Some(s) => (s, None),
            None => {
                let r = stun_responder::start(rt.clone(), "127.0.0.1:0".parse()?).await?;
                (r.local_addr().ok_or("responder has no address")?, Some(r))
            }
        };
        match (UdpStun { server }).run(rt).await? {
            Some(mapped) => println!("STUN server {server} sees us as {mapped}"),
            None => println!("no STUN answer from {server} after 3 tries"),
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let runtime = args.runtime()?;
        let server = match args.positional.first() {
            Some(s) => Some(HostPort::parse("SERVER", s, Some(3478))?.resolve("SERVER", None)?),
            None => None,
        };
        run_on(runtime, Main(server))
    })
}
