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
