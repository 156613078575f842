//! `interfaces`: the interface table, each interface's routes, and the default routes.
use examples::cli::{self, Spec};
use examples::Res;
use pipe_io::{default_route, interfaces, Family};

static SPEC: Spec = Spec {
    name: "interfaces",
    about: "print the interface table, each interface's addresses, and the default routes",
    opts: &[],
    positional: &[],
    notes: "",
};

fn main() -> std::process::ExitCode {
    cli::main(&SPEC, |_| list())
}

fn list() -> Res {
    println!(
        "{:<12} {:>5} {:<4} {:<4} addresses",
        "interface", "index", "up", "lo"
    );
    for i in interfaces()?.iter() {
        let addrs: Vec<String> = i
            .addrs
            .iter()
            .map(|a| {
                if a.scope_id != 0 {
                    format!("{}%{}/{}", a.ip, a.scope_id, a.prefix)
                } else {
                    format!("{}/{}", a.ip, a.prefix)
                }
            })
            .collect();
        println!(
            "{:<12} {:>5} {:<4} {:<4} {}",
            i.name,
            i.index,
            i.up,
            i.loopback,
            addrs.join(" ")
        );
    }
    for family in [Family::V4, Family::V6] {
        println!("default {family:?} route: {}", default_route(family));
    }
    Ok(())
}
