//! Linking pipes: a two-way TCP relay and a UDP link (P2PD's UDP links forwarded nothing and
//! ate the message).

use super::prelude::*;

/// client ↔ relay-in (an accepted connection) linked both ways with relay-out ↔ echo server.
/// The relay side runs on `srv`, the client and echo server on `cli`.
pub async fn tcp_two_way_relay<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let echo = echo_server(cli.clone(), Proto::Tcp, fam).await;
    let relay = PipeBuilder::new(srv.clone(), Proto::Tcp)
        .bind(lo0(fam))
        .open()
        .await
        .unwrap();
    let relay_out = client(srv, Proto::Tcp, echo.local_addr().unwrap()).await;
    let user = client(cli, Proto::Tcp, relay.local_addr().unwrap()).await;
    let relay_in = within(WAIT, "accept", relay.accept()).await.unwrap();
    let link_in = relay_in.link(&relay_out).unwrap();
    relay_out.link(&relay_in).unwrap();

    for i in 0..5 {
        let msg = format!("through the relay {i}");
        user.send(msg.as_bytes()).await.unwrap();
        assert_eq!(recv_bytes(&user, msg.len()).await, msg.as_bytes());
        // relay-out (a client without callbacks) still got its own copy of the echo.
        assert_eq!(recv_bytes(&relay_out, msg.len()).await, msg.as_bytes());
    }
    assert_eq!(
        relay_in.stats().unwrap().forwarded,
        relay_in.stats().unwrap().received
    );
    assert!(relay_in.stats().unwrap().forwarded >= 5);

    // Unlinked: the relay stops forwarding.
    relay_in.unlink(link_in).unwrap();
    assert_eq!(relay_in.unlink(link_in), Err(pipe_io::LinkError::NotLinked));
    // Wait for the message to reach relay-in (its own queue) instead of listening for a quiet
    // window at the user: a forward happens in the same step as that delivery, so once it is
    // delivered the counter is final. Nothing forwarded means nothing reached the echo server,
    // so nothing can come back to the user.
    let (forwarded, user_received) = (
        relay_in.stats().unwrap().forwarded,
        user.stats().unwrap().received,
    );
    relay_in.subscribe(Filter::all()).unwrap();
    user.send(b"not forwarded").await.unwrap();
    assert_eq!(recv_bytes(&relay_in, 13).await, b"not forwarded");
    assert_eq!(relay_in.stats().unwrap().forwarded, forwarded);
    assert_eq!(user.stats().unwrap().received, user_received);

    // Linking to a closed pipe is refused.
    relay_out.close().await;
    assert_eq!(
        relay_in.link(&relay_out).map(|_| ()),
        Err(pipe_io::LinkError::Closed)
    );
    assert_eq!(
        relay_in.link(&relay_in).map(|_| ()),
        Err(pipe_io::LinkError::SelfLink)
    );
    user.close().await;
    relay.close().await;
    echo.close().await;
}

/// A UDP server linked to a UDP client (both on `srv`: links join pipes of one runtime):
/// what the server receives from a `cli` pipe is sent on through the linked client to its
/// destination, and the server still delivers it locally.
pub async fn udp_link<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let sink = raw_udp(fam);
    let hub = PipeBuilder::new(srv.clone(), Proto::Udp)
        .bind(lo0(fam))
        .open()
        .await
        .unwrap();
    hub.subscribe(Filter::all()).unwrap();
    let out = client(
        srv.clone(),
        Proto::Udp,
        sink.get_ref().local_addr().unwrap(),
    )
    .await;
    let link = hub.link(&out).unwrap();

    let sender = client(cli, Proto::Udp, hub.local_addr().unwrap()).await;
    for i in 0..3 {
        let msg = format!("forward me {i}");
        sender.send(msg.as_bytes()).await.unwrap();
        let (data, from) = raw_recv(&sink, WAIT)
            .await
            .expect("the sink got the forward");
        assert_eq!(data, msg.as_bytes());
        assert_eq!(
            from,
            out.local_addr().unwrap(),
            "forwarded through the linked pipe's socket"
        );
        let local = recv_msg(&hub).await;
        assert_eq!(text(&local), msg, "the hub still delivers locally");
        assert_eq!(Some(local.from), sender.local_addr());
    }

    // A link with a sender filter forwards only that sender's messages.
    hub.unlink(link).unwrap();
    let other = raw_udp(fam);
    hub.link_with(&out, None, Some(other.get_ref().local_addr().unwrap()))
        .unwrap();
    // A forward to a pipe of another group counts when the driver reports its result, a
    // moment after the datagram left: wait for the three above to be counted.
    let counted = |n: u64| {
        let hub = &hub;
        async move {
            while hub.stats().unwrap().forwarded < n {
                sleep(Duration::from_millis(5)).await; // a poll of a counter, bounded below
            }
        }
    };
    within(WAIT, "three forwards counted", counted(3)).await;
    let forwarded = hub.stats().unwrap().forwarded;
    sender.send(b"from sender").await.unwrap();
    other
        .send_to(b"from other", hub.local_addr().unwrap())
        .await
        .unwrap();
    let (data, _) = raw_recv(&sink, WAIT).await.expect("forward");
    assert_eq!(data, b"from other");
    // Not a quiet window at the sink: wait until the hub delivered both locally; each forward
    // is decided in the same step as that delivery, so the counter is final: one, not two.
    let mut local = [text(&recv_msg(&hub).await), text(&recv_msg(&hub).await)];
    local.sort();
    assert_eq!(local, ["from other", "from sender"]);
    // Each forward is decided in the step that delivers the message (both are done), and
    // "from other"'s was sent (the sink has it): one, not two.
    within(WAIT, "the forward counted", counted(forwarded + 1)).await;
    assert_eq!(hub.stats().unwrap().forwarded, forwarded + 1);

    // A dead target: local delivery goes on.
    out.close().await;
    other
        .send_to(b"after close", hub.local_addr().unwrap())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("after close") {
        seen.push(text(&recv_msg(&hub).await));
    }
    hub.close().await;
}

/// Two connections of one listener linked to each other (a pairing relay; the link is
/// local, inside the listener's engine) carry 32 MiB byte-exact while the receiving client
/// at first reads nothing: once its connection holds `max_out_bytes`, the forwarding
/// connection pauses, TCP flow control blocks the sending client, and nothing is dropped.
/// (Such forwards were dropped past the hard cap of engine-made transmits, from the middle
/// of the byte stream, and the sender was never slowed.) Raw blocking clients on threads of
/// their own; the receiver starts reading once the sender's write has blocked for 2 s, or
/// once it has written everything (the old behaviour, which then fails the byte count).
pub async fn local_pair_backpressure<S: Runtime>(srv: S) {
    use std::io::{ErrorKind, Read, Write};
    const TOTAL: usize = 32 << 20;
    const CHUNK: usize = 64 << 10;
    let byte = |i: usize| (i % 253) as u8;
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let mut sender = std::net::TcpStream::connect(addr).unwrap();
    let a = within(WAIT, "accept the sender", server.accept())
        .await
        .unwrap();
    // A small receive buffer, so that the kernel's buffers hold far less than TOTAL.
    let receiver =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    receiver.set_recv_buffer_size(64 << 10).unwrap();
    receiver.connect(&addr.into()).unwrap();
    let mut receiver: std::net::TcpStream = receiver.into();
    let b = within(WAIT, "accept the receiver", server.accept())
        .await
        .unwrap();
    a.link(&b).unwrap();

    let (tx, rx) = smol::channel::unbounded::<&'static str>();
    let writer = std::thread::spawn(move || {
        sender
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let chunk: Vec<u8> = (0..CHUNK).map(byte).collect();
        let (mut sent, mut told) = (0, false);
        let mut stuck_since = std::time::Instant::now();
        while sent < TOTAL {
            match sender.write(&chunk[sent % CHUNK..]) {
                Ok(n) => {
                    sent += n;
                    stuck_since = std::time::Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if !told {
                        told = true;
                        let _ = tx.send_blocking("blocked");
                    }
                    assert!(
                        stuck_since.elapsed() < Duration::from_secs(60),
                        "the sender made no progress for 60 s at {sent}"
                    );
                }
                Err(e) => panic!("sender: {e} at {sent}"),
            }
        }
        let _ = tx.send_blocking("done");
        sender
    });
    let first = within(
        Duration::from_secs(60),
        "the sender blocks or ends",
        rx.recv(),
    )
    .await
    .unwrap();
    let (read_tx, read_rx) = smol::channel::bounded(1);
    std::thread::spawn(move || {
        receiver
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        let res = loop {
            if got == TOTAL {
                break Ok(got);
            }
            let n = match receiver.read(&mut buf) {
                Ok(0) => break Err(format!("EOF after {got} of {TOTAL} bytes")),
                Ok(n) => n,
                Err(e) => break Err(format!("{e} after {got} of {TOTAL} bytes")),
            };
            if let Some(i) = (0..n).find(|&i| buf[i] != byte((got + i) % CHUNK)) {
                break Err(format!("byte {} differs", got + i));
            }
            got += n;
        };
        let _ = read_tx.send_blocking(res);
    });
    let got = within(Duration::from_secs(120), "the transfer", read_rx.recv())
        .await
        .unwrap();
    assert_eq!(got, Ok(TOTAL));
    let (done_tx, done_rx) = smol::channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send_blocking(writer.join().is_ok());
    });
    assert!(
        within(WAIT, "the sender's end", done_rx.recv())
            .await
            .unwrap(),
        "the sender failed"
    );
    let (sa, sb) = (a.stats().unwrap(), b.stats().unwrap());
    assert_eq!(sb.out_dropped, 0);
    assert_eq!(sa.forward_failed, 0);
    if first == "blocked" {
        assert!(sa.paused > 0, "the sender's connection paused: {sa:?}");
    }
    server.close().await;
}
