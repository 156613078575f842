//! `echo-server --proto tcp|udp --bind ADDR [--runtime tokio|smol] [--idle-timeout SECS]
//! [--write-stall SECS]`
use examples::{echo::EchoServer, run_on, Args, Res};

fn main() -> Res {
    let args = Args::from_env()?;
    let bind = args.require("bind")?.parse()?;
    run_on(
        args.runtime()?,
        EchoServer {
            proto: args.proto()?,
            bind,
            deadlines: args.deadlines()?,
        },
    )
}
