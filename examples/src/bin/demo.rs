//! The demo: the seed's two examples on loopback, on tokio and on smol. No network needed.
use examples::cli::{self, Spec};
use examples::{run_on, seed::TcpEcho, seed::UdpStun, stun_responder, Program, Res, Which};
use pipe_io::Runtime;

struct StunDemo;

impl Program for StunDemo {
    type Output = String;
    async fn run<R: Runtime>(self, rt: R) -> Res<String> {
        let responder = stun_responder::start(rt.clone(), "127.0.0.1:0".parse()?).await?;
        let server = responder.local_addr().ok_or("responder has no address")?;
        let mapped = (UdpStun { server })
            .run(rt)
            .await?
            .ok_or("no STUN answer")?;
        responder.close().await;
        Ok(format!(
            "asked the STUN responder on {server}: it sees us as {mapped}"
        ))
    }
}

static SPEC: Spec = Spec {
    name: "demo",
    about: "the seed's two examples on 127.0.0.1, on tokio and smol (no network needed)",
    opts: &[],
    positional: &[],
    notes: "",
};

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |_| demo())
}

fn demo() -> Res {
    for which in Which::ALL {
        println!(
            "[{}] TCP echo example: {}",
            which.name(),
            run_on(which, TcpEcho)?
        );
        println!(
            "[{}] UDP STUN example: {}",
            which.name(),
            run_on(which, StunDemo)?
        );
    }
    println!("demo ok: both seed examples ran on tokio and smol");
    Ok(())
}
