//! TLS against code no one here wrote: Debian's `openssl s_server` and `s_client`, TLS 1.2
//! and 1.3, with a certificate `openssl req` makes at test time. Loopback only.
//!
//! - pipes client (tokio and smol) ↔ `openssl s_server -rev` (it answers each line reversed);
//! - `openssl s_client` ↔ `echo-server --tls CERT KEY`, on both runtimes;
//! - `openssl s_client` → `relay --tls-listen CERT KEY` (TLS-terminating) → plain
//!   `echo-server`, and a pipes-free check that the relay's upstream side is plaintext.
//!
//! A missing `openssl` prints a loud SKIP line (a failure with `PIPES_REQUIRE_PEERS=1`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pipe_io::tls::{self, ServerName};

mod support;
use pipe_io::{Conf, PipeBuilder, Proto, Runtime, TlsClient};
use support::Server;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have_openssl() -> bool {
    support::have_openssl("tls_interop")
}

/// A fresh certificate and key for localhost and 127.0.0.1.
fn make_cert(tag: &str) -> (PathBuf, PathBuf) {
    support::openssl_cert(tag)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A started program and its address.
fn serve(server: Server) -> (Server, SocketAddr) {
    let addr = server.addr;
    (server, addr)
}

/// `openssl s_client` to `addr` with `version` (`-tls1_2` / `-tls1_3`), trusting `ca`: send
/// `line`, and return what came back once it holds `want` (or panic after 20 s).
fn s_client(addr: SocketAddr, ca: &PathBuf, version: &str, line: &str, want: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", version])
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg("localhost")
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let proc = Proc(child);
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = mpsc::channel();
    let want = want.to_owned();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains(&want) {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    drop(stdin);
    drop(proc);
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    got.unwrap_or_else(|_| panic!("no answer from s_client in 20 s; its stderr: {err}"))
}

/// A pipes client over TLS to `openssl s_server -rev`.
async fn pipes_client_to_s_server<R: Runtime>(rt: R, port: u16, ca: PathBuf) {
    let roots = tls::load_roots(&ca).unwrap();
    let tls = TlsClient::new(roots)
        .server_name(ServerName::try_from("localhost").unwrap())
        .build()
        .unwrap();
    // s_server may take a moment to listen: retry the connect, not the handshake.
    let mut last = None;
    for _ in 0..100 {
        match PipeBuilder::new(rt.clone(), Proto::Tcp)
            .dest(("127.0.0.1", port))
            .conf(Conf {
                tls: Some(tls.clone()),
                ..Conf::default()
            })
            .open()
            .await
        {
            Ok(p) => {
                p.send(b"hello pipes\n").await.unwrap();
                let mut got = Vec::new();
                while !got.ends_with(b"\n") {
                    let m = p
                        .recv_timeout(Duration::from_secs(10))
                        .await
                        .unwrap()
                        .expect("s_server's answer");
                    got.extend_from_slice(&m.data);
                }
                assert_eq!(got, b"sepip olleh\n");
                p.close().await;
                return;
            }
            Err(pipe_io::OpenError::ConnectRefused { .. }) => {
                last = Some("refused");
                // s_server is still starting: poll its port at a 50 ms pace, within 5 s.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("TLS to s_server: {e}"),
        }
    }
    panic!("s_server never listened: {last:?}");
}

fn s_server(cert: &PathBuf, key: &PathBuf, version: &str) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-rev", "-quiet", version])
        .arg("-accept")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    (Proc(child), port)
}

#[test]
fn pipes_client_to_openssl_s_server() {
    if !have_openssl() {
        return;
    }
    let (cert, key) = make_cert("s_server");
    for version in ["-tls1_2", "-tls1_3"] {
        let (_server, port) = s_server(&cert, &key, version);
        let ca = cert.clone();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                pipes_client_to_s_server(pipe_tokio::Tokio::current(), port, ca).await
            });
        let (_server, port) = s_server(&cert, &key, version);
        smol::block_on(pipes_client_to_s_server(
            pipe_smol::Smol::default(),
            port,
            cert.clone(),
        ));
    }
}

#[test]
fn openssl_s_client_to_echo_server() {
    if !have_openssl() {
        return;
    }
    let (cert, key) = make_cert("echo");
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for runtime in ["tokio", "smol"] {
        let (_srv, addr) = serve(Server::echo("tcp", runtime, &["--tls", c, k]));
        for version in ["-tls1_2", "-tls1_3"] {
            let got = s_client(addr, &cert, version, "ping over tls\n", "ping over tls");
            assert!(
                got.contains("ping over tls"),
                "{runtime} {version}: {got:?}"
            );
        }
    }
}

#[test]
fn openssl_s_client_through_a_tls_terminating_relay() {
    if !have_openssl() {
        return;
    }
    let (cert, key) = make_cert("relay");
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for runtime in ["tokio", "smol"] {
        let (_echo, echo) = serve(Server::echo("tcp", runtime, &[]));
        let (_relay, relay) = serve(Server::relay("tcp", runtime, echo, &["--tls-listen", c, k]));
        for version in ["-tls1_2", "-tls1_3"] {
            let got = s_client(
                relay,
                &cert,
                version,
                "through the relay\n",
                "through the relay",
            );
            assert!(
                got.contains("through the relay"),
                "{runtime} {version}: {got:?}"
            );
        }
    }
}

/// `relay --tls-to localhost --ca CERT` originates TLS toward a TLS echo-server: a plain
/// client on one side, verified TLS on the other (and both: terminate and re-originate).
#[test]
fn relay_originates_tls_to_the_upstream() {
    if !have_openssl() {
        return;
    }
    let (cert, key) = make_cert("relay-to");
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for runtime in ["tokio", "smol"] {
        let (_echo, echo) = serve(Server::echo("tcp", runtime, &["--tls", c, k]));
        let (_relay, relay) = serve(Server::relay(
            "tcp",
            runtime,
            echo,
            &["--tls-to", "localhost", "--ca", c],
        ));
        // A plain client: the relay adds the TLS.
        let mut s = std::net::TcpStream::connect(relay).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"plain in, tls out").unwrap();
        let mut got = vec![0u8; 17];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"plain in, tls out", "{runtime}");
        // Terminate and re-originate: openssl's TLS in, TLS out.
        let (_both, both) = serve(Server::relay(
            "tcp",
            runtime,
            echo,
            &["--tls-listen", c, k, "--tls-to", "localhost", "--ca", c],
        ));
        let got = s_client(both, &cert, "-tls1_3", "tls both ways\n", "tls both ways");
        assert!(got.contains("tls both ways"), "{runtime}: {got:?}");
    }
}
