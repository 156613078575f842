//! Network namespaces for the programs' tests (`#[path]`-included by the files that use them).
//!
//! A test runs its body again in a child process of this test binary inside `unshare -n -m`
//! (a new network and mount namespace: nothing it makes is seen outside, and it all goes when
//! the child exits). In there, `/run` is a fresh tmpfs, so `ip netns add NAME` makes named
//! namespaces that `ip netns exec NAME PROGRAM` runs our programs in. The child is its own
//! process group and has a deadline: past it, the whole group (the programs it started too)
//! is killed and the test fails. Without the privilege for namespaces, or without a tool, the
//! test prints a loud SKIP line, or fails with it under `PIPES_REQUIRE_PEERS=1`.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Set in the child that runs inside the namespaces.
const ENV: &str = "PIPES_IN_NETNS";

/// A loud SKIP line, or a panic with `PIPES_REQUIRE_PEERS=1`.
pub fn loud_skip(test: &str, why: &str) {
    let line = format!("SKIP {test}: {why}");
    if std::env::var_os("PIPES_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{line} (PIPES_REQUIRE_PEERS is set: a missing peer is a failure)");
    }
    let _ = writeln!(std::io::stderr().lock(), "\n!!!!! {line} !!!!!\n");
}

/// Run `body` inside fresh network and mount namespaces, in a child of this test binary
/// (`test` is the test's own name) bounded by `limit`. `tools` are programs the body needs
/// (each a loud skip when missing, with its Debian package).
pub fn in_netns(test: &str, limit: Duration, tools: &[(&str, &str)], body: impl FnOnce()) {
    if std::env::var_os(ENV).is_some() {
        sh("mount -t tmpfs none /run && mkdir -p /run/netns && ip link set lo up");
        body();
        return;
    }
    for (tool, package) in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return loud_skip(
                test,
                &format!("{tool} is not installed (apt-get install {package})"),
            );
        }
    }
    let probe = Command::new("unshare")
        .args(["-n", "-m", "sh", "-c"])
        .arg("mount -t tmpfs none /run && ip link add pva type veth peer name pvb")
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return loud_skip(
                test,
                &format!(
                    "cannot create network namespaces with veth pairs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            )
        }
        Err(e) => return loud_skip(test, &format!("unshare is not available: {e}")),
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "-m"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, "1");
    let (out, took) = run_bounded(&mut cmd, limit);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "inside the namespaces ({took:?}):\n{text}"
    );
    // What the child printed (its timings) shows with --nocapture.
    println!("{text}");
}

/// Run a shell command line; panics with its output if it fails.
pub fn sh(line: &str) {
    let out = Command::new("sh").args(["-c", line]).output().expect("sh");
    assert!(
        out.status.success(),
        "`{line}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Load an nftables ruleset into namespace `ns` (`nft -f -`).
pub fn nft(ns: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ruleset.as_bytes())
        .expect("write the ruleset");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -f in {ns} failed: {}\n{ruleset}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `cmd` to its end (stdout and stderr captured), in its own process group; past `limit`
/// the group is killed and this panics.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.expect("wait"), t0.elapsed()),
        Err(_) => {
            // The child and everything it started: its process group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let out = rx.recv_timeout(Duration::from_secs(5));
            panic!("{cmd:?} did not finish within {limit:?} (killed): {out:?}");
        }
    }
}
