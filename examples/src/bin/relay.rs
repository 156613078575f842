//! `relay --proto tcp|udp --listen ADDR --to ADDR [--runtime tokio|smol]
//! [--idle-timeout SECS] [--write-stall SECS]`
use examples::{relay::Relay, run_on, Args, Res};

fn main() -> Res {
    let args = Args::from_env()?;
    let listen = args.require("listen")?.parse()?;
    let to = args.require("to")?.parse()?;
    run_on(
        args.runtime()?,
        Relay {
            proto: args.proto()?,
            listen,
            to,
            deadlines: args.deadlines()?,
        },
    )
}
