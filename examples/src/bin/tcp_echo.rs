//! The seed's TCP echo example: `tcp-echo [--runtime tokio|smol]`.
use examples::cli::{self, Spec, RUNTIME};
use examples::{run_on, seed::TcpEcho};

static SPEC: Spec = Spec {
    name: "tcp-echo",
    about: "the seed's TCP echo example: a server and a client on 127.0.0.1",
    opts: &[RUNTIME],
    positional: &[],
    notes: "",
};

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        println!("{}", run_on(args.runtime()?, TcpEcho)?);
        Ok(())
    })
}
