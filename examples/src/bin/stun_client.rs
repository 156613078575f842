//! `stun-client SERVER [--bind ADDR] [--runtime tokio|smol]`: print the mapped address a
//! STUN server sees for us.
use std::net::{IpAddr, SocketAddr};

use examples::{run_on, Args, Program, Res};
use pipe_io::{external_address, ExternalConf, Route, Runtime};

struct Main {
    server: SocketAddr,
    bind: Option<IpAddr>,
}

impl Program for Main {
    type Output = ();
    async fn run<R: Runtime>(self, rt: R) -> Res {
        let route = match self.bind {
            Some(ip) => Route::from_ip(ip),
            None => Route::any(pipe_io::Family::of_addr(&self.server)),
        };
        let mapped = external_address(&rt, &route, &ExternalConf::new(vec![self.server])).await?;
        println!("{mapped}");
        Ok(())
    }
}

fn main() -> Res {
    let args = Args::from_env()?;
    let server = args
        .positional
        .first()
        .ok_or("usage: stun-client SERVER [--bind ADDR]")?
        .parse()?;
    let bind = args.get("bind").map(|b| b.parse()).transpose()?;
    run_on(args.runtime()?, Main { server, bind })
}
