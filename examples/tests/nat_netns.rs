//! NAT behaviour discovery against real NATs: netfilter (nftables) in a namespace between a
//! client namespace and a "public" one that holds the STUN server's two addresses.
//!
//! ```text
//!  cli                     nat                               srv
//!  c0 10.0.0.2/24 ──── n0 10.0.0.1/24                                  (default via 10.0.0.1)
//!                          n1 198.51.100.1/24 ──── s0 198.51.100.10/24 + 198.51.100.11/24
//!                          (nft rules here)            stun-server --bind .10:P --alt .11:P+1
//! ```
//!
//! One scenario per P2PD class, each in its own namespaces (a child of this test binary, see
//! support/netns.rs), each rule set the smallest nftables one that makes the behaviour:
//!
//! | scenario | nftables in `nat` | mapping | filtering | class |
//! |---|---|---|---|---|
//! | open internet | none (routed, no NAT) | none | endpoint-independent | 1 |
//! | symmetric UDP firewall | forward: established ok, new UDP in dropped | none | address-and-port-dependent | 2 |
//! | full cone | masquerade + DNAT of any inbound UDP to the client | endpoint-independent | endpoint-independent | 3 |
//! | restricted | masquerade + DNAT of inbound UDP from (address, mapped port) pairs the client sent to | endpoint-independent | address-dependent | 4 |
//! | port restricted | masquerade (Linux's default) | endpoint-independent | address-and-port-dependent | 5 |
//! | symmetric | `masquerade random,fully-random` | address(-and-port)-dependent | any | 6 |
//! | blocked | forward: all UDP dropped | - | - | 7 |
//!
//! In each, `stun-client --nat` runs on tokio against a `stun-server` on smol and on smol
//! against one on tokio; the behaviours and class it prints must be the NAT's, within the
//! discovery's 6 s bound (each program run is also killed past 20 s, each scenario past 60 s).

#[path = "support/netns.rs"]
mod netns;
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use netns::{in_netns, nft, run_bounded, sh};
use support::Server;

const CLIENT: &str = "10.0.0.2";
const NAT_PUBLIC: &str = "198.51.100.1";
const SERVER_A: &str = "198.51.100.10";
const SERVER_B: &str = "198.51.100.11";

/// `NatConfig::timeout`, the bound `stun-client --nat` promises.
const DISCOVERY_BOUND: Duration = Duration::from_secs(6);

/// What a scenario must discover.
struct Expect {
    /// Mapping behaviours accepted (`Debug` names as printed).
    mapping: &'static [&'static str],
    filtering: &'static [&'static str],
    /// `class: NAME (CODE)` as printed.
    class: &'static str,
    /// The mapped IP: `Some(CLIENT)` without NAT, the NAT's public address behind one,
    /// `None` when blocked.
    mapped_ip: Option<&'static str>,
}

/// Three namespaces, two veth pairs, routes; `ruleset` loaded into `nat`.
fn topology(ruleset: Option<&str>) {
    for line in [
        "ip netns add cli",
        "ip netns add nat",
        "ip netns add srv",
        "ip -n cli link set lo up",
        "ip -n nat link set lo up",
        "ip -n srv link set lo up",
        "ip link add c0 netns cli type veth peer name n0 netns nat",
        "ip link add n1 netns nat type veth peer name s0 netns srv",
        &format!("ip -n cli addr add {CLIENT}/24 dev c0"),
        "ip -n nat addr add 10.0.0.1/24 dev n0",
        &format!("ip -n nat addr add {NAT_PUBLIC}/24 dev n1"),
        &format!("ip -n srv addr add {SERVER_A}/24 dev s0"),
        &format!("ip -n srv addr add {SERVER_B}/24 dev s0"),
        "ip -n cli link set c0 up",
        "ip -n nat link set n0 up",
        "ip -n nat link set n1 up",
        "ip -n srv link set s0 up",
        "ip -n cli route add default via 10.0.0.1",
        &format!("ip -n srv route add default via {NAT_PUBLIC}"),
        "ip netns exec nat sysctl -qw net.ipv4.ip_forward=1",
    ] {
        sh(line);
    }
    if let Some(r) = ruleset {
        nft("nat", r);
    }
}

/// `stun-server --bind A:port --alt B:port+1` in `srv`.
fn stun_server(port: u16, runtime: &str) -> Server {
    let (bind, alt) = (
        format!("{SERVER_A}:{port}"),
        format!("{SERVER_B}:{}", port + 1),
    );
    Server::start(
        "ip",
        &[
            "netns",
            "exec",
            "srv",
            env!("CARGO_BIN_EXE_stun-server"),
            "--bind",
            &bind,
            "--alt",
            &alt,
            "--runtime",
            runtime,
        ],
    )
}

/// `stun-client --nat SERVER` in `cli`: its `key: value` lines.
fn discover(server: &Server, runtime: &str) -> HashMap<String, String> {
    let (out, took) = run_bounded(
        Command::new("ip").args([
            "netns",
            "exec",
            "cli",
            env!("CARGO_BIN_EXE_stun-client"),
            "--nat",
            &server.addr.to_string(),
            "--runtime",
            runtime,
        ]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stun-client --nat on {runtime}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("stun-client --nat --runtime {runtime} ({took:?}):\n{text}");
    assert!(
        took < DISCOVERY_BOUND + Duration::from_secs(2),
        "discovery took {took:?}, bound {DISCOVERY_BOUND:?}"
    );
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn scenario(ruleset: Option<&str>, expect: Expect) {
    topology(ruleset);
    let on_tokio = stun_server(3478, "tokio");
    let on_smol = stun_server(4478, "smol");
    for (client_rt, server) in [("tokio", &on_smol), ("smol", &on_tokio)] {
        let r = discover(server, client_rt);
        let what = format!("client on {client_rt}: {r:?}");
        assert_eq!(r["class"], expect.class, "{what}");
        assert!(expect.mapping.contains(&r["mapping"].as_str()), "{what}");
        assert!(
            expect.filtering.contains(&r["filtering"].as_str()),
            "{what}"
        );
        match expect.mapped_ip {
            Some(ip) => {
                let mapped: std::net::SocketAddr = r["mapped"].parse().expect("mapped");
                assert_eq!(mapped.ip().to_string(), ip, "{what}");
                let local: std::net::SocketAddr = r["local"].parse().expect("local");
                assert_eq!(local.ip().to_string(), CLIENT, "{what}");
                if ip == CLIENT {
                    assert_eq!(mapped, local, "no NAT: mapped = local; {what}");
                }
                // The server that answered is the one asked, its other address the --alt.
                assert!(r["server"].starts_with(&server.addr.to_string()), "{what}");
                assert!(r["server"].contains(SERVER_B), "{what}");
            }
            None => assert_eq!(r["mapped"], "-", "{what}"),
        }
    }
}

const LIMIT: Duration = Duration::from_secs(60);
const TOOLS: &[(&str, &str)] = &[("ip", "iproute2"), ("nft", "nftables")];

#[test]
fn nat_open_internet() {
    in_netns("nat_open_internet", LIMIT, TOOLS, || {
        scenario(
            None,
            Expect {
                mapping: &["NoNat"],
                filtering: &["EndpointIndependent"],
                class: "open internet (1)",
                mapped_ip: Some(CLIENT),
            },
        )
    });
}

#[test]
fn nat_symmetric_udp_firewall() {
    in_netns("nat_symmetric_udp_firewall", LIMIT, TOOLS, || {
        scenario(
            Some(
                r#"table inet fw {
                    chain forward {
                        type filter hook forward priority 0;
                        ct state established,related accept
                        iifname "n1" meta l4proto udp drop
                    }
                }"#,
            ),
            Expect {
                mapping: &["NoNat"],
                filtering: &["AddressAndPortDependent"],
                class: "symmetric UDP firewall (2)",
                mapped_ip: Some(CLIENT),
            },
        )
    });
}

#[test]
fn nat_full_cone() {
    in_netns("nat_full_cone", LIMIT, TOOLS, || {
        scenario(
            Some(&format!(
                r#"table ip nat {{
                    chain post {{
                        type nat hook postrouting priority 100;
                        oifname "n1" masquerade
                    }}
                    chain pre {{
                        type nat hook prerouting priority -100;
                        iifname "n1" udp dport 1024-65535 dnat to {CLIENT}
                    }}
                }}"#
            )),
            Expect {
                mapping: &["EndpointIndependent"],
                filtering: &["EndpointIndependent"],
                class: "full cone (3)",
                mapped_ip: Some(NAT_PUBLIC),
            },
        )
    });
}

#[test]
fn nat_restricted() {
    in_netns("nat_restricted", LIMIT, TOOLS, || {
        scenario(
            Some(&format!(
                r#"table ip nat {{
                    set contacted {{
                        type ipv4_addr . inet_service; flags dynamic; timeout 60s;
                    }}
                    chain post {{
                        type nat hook postrouting priority 100;
                        oifname "n1" meta l4proto udp update @contacted {{ ip daddr . udp sport }}
                        oifname "n1" masquerade
                    }}
                    chain pre {{
                        type nat hook prerouting priority -100;
                        iifname "n1" ip saddr . udp dport @contacted dnat to {CLIENT}
                    }}
                }}"#
            )),
            Expect {
                mapping: &["EndpointIndependent"],
                filtering: &["AddressDependent"],
                class: "restricted (4)",
                mapped_ip: Some(NAT_PUBLIC),
            },
        )
    });
}

#[test]
fn nat_port_restricted_linux_masquerade() {
    in_netns("nat_port_restricted_linux_masquerade", LIMIT, TOOLS, || {
        scenario(
            Some(
                r#"table ip nat {
                    chain post {
                        type nat hook postrouting priority 100;
                        oifname "n1" masquerade
                    }
                }"#,
            ),
            Expect {
                mapping: &["EndpointIndependent"],
                filtering: &["AddressAndPortDependent"],
                class: "port restricted (5)",
                mapped_ip: Some(NAT_PUBLIC),
            },
        )
    });
}

#[test]
fn nat_symmetric_fully_random() {
    in_netns("nat_symmetric_fully_random", LIMIT, TOOLS, || {
        scenario(
            Some(
                r#"table ip nat {
                    chain post {
                        type nat hook postrouting priority 100;
                        oifname "n1" masquerade random,fully-random
                    }
                }"#,
            ),
            Expect {
                mapping: &["AddressDependent", "AddressAndPortDependent"],
                filtering: &[
                    "EndpointIndependent",
                    "AddressDependent",
                    "AddressAndPortDependent",
                ],
                class: "symmetric (6)",
                mapped_ip: Some(NAT_PUBLIC),
            },
        )
    });
}

#[test]
fn nat_blocked() {
    in_netns("nat_blocked", LIMIT, TOOLS, || {
        scenario(
            Some(
                r#"table inet fw {
                    chain forward {
                        type filter hook forward priority 0;
                        meta l4proto udp drop
                    }
                }"#,
            ),
            Expect {
                mapping: &["Unknown"],
                filtering: &["Unknown"],
                class: "blocked (7)",
                mapped_ip: None,
            },
        )
    });
}
