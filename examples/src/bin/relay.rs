//! `relay --proto tcp|udp --listen ADDR --to ADDR [--runtime tokio|smol]`
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
        },
    )
}
