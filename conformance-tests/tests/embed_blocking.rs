//! The crate doc's "embed in any executor" loop, runnable: pipe-core driven by blocking
//! `std::net` sockets and no async runtime at all, against a std UDP echo thread on loopback.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pipe_core::{Conf, Engine, Event, SubId};

#[test]
fn pipe_core_over_blocking_std_sockets() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = echo.local_addr().unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (n, from) = echo.recv_from(&mut buf).expect("a datagram within 10 s");
        echo.send_to(&buf[..n], from).unwrap();
    });

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut engine = Engine::new(42);
    let pipe = engine
        .open_udp(
            Instant::now(),
            socket.local_addr().unwrap(),
            Some(server),
            Conf::default(),
            false,
        )
        .unwrap();
    engine.send(Instant::now(), pipe, b"hello", None).unwrap();
    let mut buf = [0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = 'outer: loop {
        assert!(Instant::now() < deadline, "no echo within 10 s");
        while let Some(t) = engine.poll_transmit() {
            socket.send_to(&t.payload, t.dst).unwrap();
        }
        while let Some(event) = engine.poll_event() {
            if let Event::Readable { pipe } = event {
                if let Ok(Some(msg)) = engine.recv(pipe, SubId::ALL) {
                    break 'outer msg;
                }
            }
        }
        let now = Instant::now();
        let wait = engine
            .poll_timeout()
            .map_or(Duration::from_millis(200), |t| {
                t.saturating_duration_since(now)
            });
        socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => engine.handle_datagram(Instant::now(), pipe, from, &buf[..n]),
            Err(_) => engine.handle_timeout(Instant::now()),
        }
    };
    assert_eq!(&got.data[..], b"hello");
    assert_eq!(got.from, server);
    echo_thread.join().unwrap();
}
