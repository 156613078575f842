//! `stun-server --bind ADDR [--runtime tokio|smol]`: a STUN Binding responder. Prints
//! `listening on <addr>` first, then answers until killed.

use examples::{run_on, stun_responder, Args, Program, Res};
use pipe_io::Runtime;

struct Main(std::net::SocketAddr);

impl Program for Main {
    type Output = ();
    async fn run<R: Runtime>(self, rt: R) -> Res {
        let pipe = stun_responder::start(rt, self.0).await?;
        examples::announce(pipe.local_addr())?;
        pipe.closed().await;
        Ok(())
    }
}

fn main() -> Res {
    let args = Args::from_env()?;
    let bind = args.require("bind")?.parse()?;
    run_on(args.runtime()?, Main(bind))
}
