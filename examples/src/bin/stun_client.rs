//! `stun-client SERVER [--bind ADDR] [--nat] [--runtime tokio|smol]`: print the mapped
//! address a STUN server sees for us, or with `--nat` each NAT behaviour (RFC 5780) and
//! P2PD's class. SERVER is `HOST[:PORT]`, port 3478 by default.
use std::net::{IpAddr, SocketAddr};

use examples::cli::{self, HostPort, Opt, Pos, Spec, RUNTIME};
use examples::{run_on, Program, Res};
use pipe_io::{external_address, ExternalConf, Route, Runtime};

/// The STUN port (RFC 8489), when SERVER has none.
const STUN_PORT: u16 = 3478;

static SPEC: Spec = Spec {
    name: "stun-client",
    about: "print the address a STUN server sees us as",
    opts: &[
        Opt {
            long: "bind",
            short: None,
            value: Some("IP"),
            required: false,
            help: "the local address to send from (default: any address of SERVER's family)",
        },
        Opt {
            long: "nat",
            short: None,
            value: None,
            required: false,
            help: "discover the NAT's behaviour (mapping, filtering, port preservation, \
                   hairpinning) and class; SERVER must be an RFC 5780 server (stun-server --alt)",
        },
        RUNTIME,
    ],
    positional: &[Pos {
        name: "SERVER",
        required: true,
        help: "HOST[:PORT] of the STUN server, port 3478 by default (stun.example.org, \
               127.0.0.1:3478, [::1])",
    }],
    notes: "",
};

struct Main {
    server: SocketAddr,
    bind: Option<IpAddr>,
    nat: bool,
}

impl Program for Main {
    type Output = ();
    async fn run<R: Runtime>(self, rt: R) -> Res {
        if self.nat {
            let report =
                examples::stun_responder::nat_report(rt, vec![self.server], self.bind).await?;
            print!("{report}");
            return Ok(());
        }
        let route = match self.bind {
            Some(ip) => Route::from_ip(ip),
            None => Route::any(pipe_io::Family::of_addr(&self.server)),
        };
        let mapped = external_address(&rt, &route, &ExternalConf::new(vec![self.server])).await?;
        println!("{mapped}");
        Ok(())
    }
}

/// SERVER and `--bind` as typed (checked, not resolved).
fn parse(args: &examples::Args) -> Result<(HostPort, Option<HostPort>), examples::Usage> {
    let server = HostPort::parse("SERVER", &args.positional[0], Some(STUN_PORT))?;
    let bind = args
        .get("bind")
        .map(|b| HostPort::parse("--bind", b, Some(0)))
        .transpose()?;
    if let Some(b) = bind.as_ref().filter(|b| b.port != 0) {
        let text = args.get("bind").unwrap_or_default();
        return Err(examples::Usage(format!(
            "--bind: {text:?} has a port {}; give the IP (or host name) alone",
            b.port
        )));
    }
    Ok((server, bind))
}

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |args| {
        let runtime = args.runtime()?;
        let (server, bind) = parse(&args)?;
        let bind = bind.map(|b| b.resolve("--bind", None)).transpose()?;
        let server = server.resolve("SERVER", bind.map(|b| pipe_io::Family::of_addr(&b)))?;
        run_on(
            runtime,
            Main {
                server,
                bind: bind.map(|b| b.ip()),
                nat: args.switch("nat"),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_port() {
        let args = super::SPEC.parse(["localhost"]).unwrap();
        let (server, bind) = super::parse(&args).unwrap();
        assert_eq!((server.host.as_str(), server.port), ("localhost", 3478));
        assert!(bind.is_none());
        let args = super::SPEC.parse(["[::1]", "--bind", "::1"]).unwrap();
        let (server, bind) = super::parse(&args).unwrap();
        assert_eq!(server.addr, Some("[::1]:3478".parse().unwrap()));
        assert_eq!(bind.unwrap().addr, Some("[::1]:0".parse().unwrap()));
    }
}
