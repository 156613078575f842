//! Half-close through the `relay` program, on both runtimes: a client sends a request and
//! shuts down its write side; the upstream answers only after that EOF; the client gets the
//! whole answer, then the end of the stream (issue 11: the relay used to return nothing).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use support::Server;

/// Generous: the box is shared and loaded.
const WAIT: Duration = Duration::from_secs(20);

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// An upstream that, per connection, reads the request to EOF, answers it (the request's
/// length as a line, then `answer`), and closes. It reports each request it saw.
fn upstream(
    answer: Vec<u8>,
    conns: usize,
) -> (std::net::SocketAddr, thread::JoinHandle<Vec<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..conns {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut req = Vec::new();
            s.read_to_end(&mut req)
                .expect("the request, then EOF, within the deadline");
            s.write_all(format!("{}\n", req.len()).as_bytes()).unwrap();
            s.write_all(&answer).unwrap();
            seen.push(req);
        }
        seen
    });
    (addr, t)
}

fn relay_half_close(runtime: &str) {
    let answer = pattern(1 << 20);
    let request = pattern(100 * 1024);
    let rounds = 3;
    let (up, seen) = upstream(answer.clone(), rounds);
    let relay = Server::relay("tcp", runtime, up, &[]);
    for _ in 0..rounds {
        let mut c = TcpStream::connect(relay.addr).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(&request).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got)
            .expect("the answer, then EOF, within the deadline");
        let head = format!("{}\n", request.len());
        assert!(
            got.starts_with(head.as_bytes()),
            "{runtime}: the upstream saw the whole request before our EOF: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(20)])
        );
        assert_eq!(
            got.len(),
            head.len() + answer.len(),
            "{runtime}: the whole answer"
        );
        assert!(got[head.len()..] == answer[..], "{runtime}: byte-exact");
    }
    let seen = seen.join().unwrap();
    assert!(seen.iter().all(|r| *r == request));
}

#[test]
fn relay_half_close_tokio() {
    relay_half_close("tokio");
}

#[test]
fn relay_half_close_smol() {
    relay_half_close("smol");
}
