//! The seed's TCP echo example: `tcp-echo [--runtime tokio|smol]`.
use examples::{run_on, seed::TcpEcho, Args, Res};

fn main() -> Res {
    let args = Args::from_env()?;
    println!("{}", run_on(args.runtime()?, TcpEcho)?);
    Ok(())
}
