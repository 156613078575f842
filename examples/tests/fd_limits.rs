//! Row 6 of the hardening table: a connection flood against `echo-server` running out of file
//! descriptors (`ulimit -n 256`). At the limit the server must not spin (accept backs off on
//! EMFILE), and once descriptors are free again it must serve at once. Loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod support;
use support::Server;

/// Start echo-server with `RLIMIT_NOFILE` = `nofile` (`sh` sets it, then becomes the server:
/// same pid); its address from its first line.
fn echo_server_limited(runtime: &str, nofile: u32) -> (Server, SocketAddr) {
    let script = format!("ulimit -n {nofile} && exec \"$0\" \"$@\"");
    let server = Server::start(
        "sh",
        &[
            "-c",
            &script,
            env!("CARGO_BIN_EXE_echo-server"),
            "--proto",
            "tcp",
            "--bind",
            "127.0.0.1:0",
            "--runtime",
            runtime,
        ],
    );
    let addr = server.addr;
    (server, addr)
}

/// CPU time (user + system) the process used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One echo round trip on a fresh connection, or the error.
fn echo_once(addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let mut c = TcpStream::connect_timeout(&addr, timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf)?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

fn flood_at_the_fd_limit(runtime: &str) {
    let (server, addr) = echo_server_limited(runtime, 256);
    let pid = server.child.id();
    echo_once(addr, Duration::from_secs(5)).expect("a first echo");

    // 1,280 connection attempts from 8 threads: about 250 are served, the rest wait in the
    // accept queue (or time out) while the server is out of descriptors.
    let deadline = Instant::now() + Duration::from_secs(20);
    let held: Vec<TcpStream> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..160 {
                        if Instant::now() > deadline {
                            break;
                        }
                        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                        {
                            mine.push(c);
                        }
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let at_limit = open_fds(pid);
    assert!(
        at_limit >= 240,
        "{runtime}: the server holds {at_limit} descriptors: the flood did not reach the limit"
    );

    // At the limit: the server must not spin on EMFILE.
    let (cpu0, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2)); // a measurement window, not synchronisation
    let cpu = cpu_time(pid) - cpu0;
    let share = cpu.as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!(
        "{runtime}: {} connections held by the client, server at {at_limit} fds, \
         CPU {:.1} % of a core at the limit",
        held.len(),
        share * 100.0
    );
    assert!(
        share <= 0.10,
        "{runtime}: the server used {:.1} % of a core while out of descriptors",
        share * 100.0
    );

    // Free everything: the server must serve a new client at once.
    drop(held);
    let freed = Instant::now();
    let mut last = None;
    while freed.elapsed() < Duration::from_secs(10) {
        match echo_once(addr, Duration::from_millis(500)) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let recovery = freed.elapsed();
    eprintln!("{runtime}: serving again {recovery:?} after the clients left");
    assert!(
        last.is_none(),
        "{runtime}: no echo after recovery: {last:?}"
    );
    assert!(
        recovery < Duration::from_millis(1500),
        "{runtime}: took {recovery:?} to serve again"
    );
}

#[test]
fn fd_exhaustion_tokio() {
    flood_at_the_fd_limit("tokio");
}

#[test]
fn fd_exhaustion_smol() {
    flood_at_the_fd_limit("smol");
}
