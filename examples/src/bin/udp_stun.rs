//! The seed's UDP example: `udp-stun [SERVER] [--runtime tokio|smol]`. Without SERVER it
//! starts a STUN responder on 127.0.0.1 and asks it (this machine may be offline).
use std::net::SocketAddr;

use examples::{run_on, seed::UdpStun, stun_responder, Args, Program, Res};
use pipe_io::Runtime;

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

fn main() -> Res {
    let args = Args::from_env()?;
    let server = args.positional.first().map(|s| s.parse()).transpose()?;
    run_on(args.runtime()?, Main(server))
}
