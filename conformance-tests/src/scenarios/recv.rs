//! Receiving: timeouts, unknown subscriptions, regex and address subscriptions, fan-out,
//! unsubscribe, queue bounds and dedup.

use super::prelude::*;

/// `recv` with a timeout returns `Ok(None)` after about that long when nothing arrives.
pub async fn recv_timeout_is_none<R: Runtime>(rt: R) {
    let silent = raw_udp(Family::V4);
    let pipe = client(rt, Proto::Udp, silent.get_ref().local_addr().unwrap()).await;
    let wanted = Duration::from_millis(300);
    let (res, took) = timed(pipe.recv_timeout(wanted)).await;
    assert_eq!(res, Ok(None));
    assert_at_least(took, wanted, 0.8, "recv_timeout returned early");
    assert!(took < WAIT, "recv_timeout took {took:?}");
    pipe.close().await;
}

/// An unknown subscription is `Err(NotSubscribed)` at once, not after the timeout (P2PD
/// returned `None` after waiting, or raised).
pub async fn unknown_subscription_fails_at_once<R: Runtime>(rt: R) {
    // A UDP server starts with no subscriptions, so even `SubId::ALL` is unknown there.
    let server = PipeBuilder::new(rt.clone(), Proto::Udp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    let (res, took) = timed(server.recv_on(SubId::ALL, Some(Duration::from_secs(30)))).await;
    assert_eq!(res, Err(RecvError::NotSubscribed));
    assert!(took < Duration::from_secs(2), "NotSubscribed took {took:?}");

    // A subscription that existed and was removed is unknown too.
    let sub = server.subscribe(Filter::pattern("x").unwrap()).unwrap();
    server.unsubscribe(sub).unwrap();
    let (res, took) = timed(server.recv_on(sub, Some(Duration::from_secs(30)))).await;
    assert_eq!(res, Err(RecvError::NotSubscribed));
    assert!(took < Duration::from_secs(2));
    assert_eq!(server.unsubscribe(sub), Err(RecvError::NotSubscribed));

    // A TCP listener has no messages at all.
    let listener = PipeBuilder::new(rt, Proto::Tcp)
        .bind(lo0(Family::V4))
        .open()
        .await
        .unwrap();
    assert_eq!(
        listener.recv_timeout(Duration::from_secs(30)).await,
        Err(RecvError::NotSubscribed)
    );
    assert!(matches!(
        listener.subscribe(Filter::all()),
        Err(pipe_io::SubscribeError::WrongKind(_))
    ));
    server.close().await;
    listener.close().await;
}

/// Regex (searched anywhere, anchors honoured) and address subscriptions (exact, or any port
/// with port 0); a message goes to every matching subscription; unsubscribe stops delivery.
pub async fn regex_and_address_subscriptions<R: Runtime>(rt: R, fam: Family) {
    let server = PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(fam))
        .open()
        .await
        .unwrap();
    let dest = server.local_addr().unwrap();
    let (a, b) = (raw_udp(fam), raw_udp(fam));
    let (a_addr, b_addr) = (
        a.get_ref().local_addr().unwrap(),
        b.get_ref().local_addr().unwrap(),
    );

    let s_hello = server
        .subscribe(Filter::pattern("^hello").unwrap())
        .unwrap();
    assert_eq!(
        server
            .subscribe(Filter::pattern("^hello").unwrap())
            .unwrap(),
        s_hello,
        "same filter, same subscription"
    );
    let s_mid = server.subscribe(Filter::pattern("ll").unwrap()).unwrap();
    let s_a = server.subscribe(Filter::from_addr(a_addr)).unwrap();
    let s_host = server
        .subscribe(Filter::from_addr(SocketAddr::new(lo(fam), 0)))
        .unwrap();
    let s_bx = server
        .subscribe(Filter::pattern("x$").unwrap().with_addr(b_addr))
        .unwrap();
    assert_eq!(server.subscribe(Filter::all()).unwrap(), SubId::ALL);
    assert!(Filter::pattern("(").is_err(), "a bad regex is refused");

    for (sock, data) in [
        (&a, "hello a"),
        (&b, "hello bx"),
        (&b, "plain"),
        (&a, "endx"),
    ] {
        sock.send_to(data.as_bytes(), dest).await.unwrap();
    }
    let take = |sub: SubId, n: usize| {
        let server = server.clone();
        async move {
            let mut got = Vec::new();
            for _ in 0..n {
                let m = server
                    .recv_on(sub, Some(WAIT))
                    .await
                    .unwrap()
                    .expect("message on subscription");
                got.push((text(&m), m.from));
            }
            assert_eq!(
                server.recv_on(sub, Some(Duration::from_millis(50))).await,
                Ok(None),
                "subscription {sub:?} has extra messages"
            );
            got
        }
    };
    let mut all = take(SubId::ALL, 4).await;
    all.sort();
    assert_eq!(
        all.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["endx", "hello a", "hello bx", "plain"]
    );
    assert_eq!(
        take(s_hello, 2).await,
        [("hello a".into(), a_addr), ("hello bx".into(), b_addr)]
    );
    assert_eq!(
        take(s_mid, 2).await.len(),
        2,
        "an unanchored pattern matches anywhere"
    );
    assert_eq!(
        take(s_a, 2).await,
        [("hello a".into(), a_addr), ("endx".into(), a_addr)]
    );
    assert_eq!(
        take(s_host, 4).await.len(),
        4,
        "port 0 matches every port of the host"
    );
    assert_eq!(take(s_bx, 1).await, [("hello bx".into(), b_addr)]);

    server.unsubscribe(s_hello).unwrap();
    assert_eq!(
        server.recv_on(s_hello, Some(WAIT)).await,
        Err(RecvError::NotSubscribed)
    );
    a.send_to(b"hello again", dest).await.unwrap();
    assert_eq!(
        text(&server.recv_on(s_a, Some(WAIT)).await.unwrap().unwrap()),
        "hello again"
    );
    assert_eq!(
        text(&server.recv_on(s_mid, Some(WAIT)).await.unwrap().unwrap()),
        "hello again"
    );
    // Subscribing again makes a fresh queue, without the message that came while unsubscribed.
    let s_again = server
        .subscribe(Filter::pattern("^hello").unwrap())
        .unwrap();
    // "hello again" was already taken in (read above on s_a and s_mid): the new queue is
    // checked at once, no quiet window needed.
    assert_eq!(
        server.recv_on(s_again, Some(Duration::ZERO)).await,
        Ok(None)
    );
    server.close().await;
}

/// IPv6 addresses are values: the exploded and compressed forms of `::1` are one subscription,
/// match the same sender, and unsubscribing through either removes it (P2PD failed here).
pub async fn ipv6_compressed_and_exploded_are_one<R: Runtime>(rt: R) {
    let server = echo_builder(rt.clone(), Proto::Udp, Family::V6)
        .open()
        .await
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let a = raw_udp(Family::V6);
    let a_port = a.get_ref().local_addr().unwrap().port();

    let exploded: SocketAddr = format!("[0:0:0:0:0:0:0:1]:{a_port}").parse().unwrap();
    let compressed: SocketAddr = format!("[::1]:{a_port}").parse().unwrap();
    let s1 = server.subscribe(Filter::from_addr(exploded)).unwrap();
    let s2 = server.subscribe(Filter::from_addr(compressed)).unwrap();
    assert_eq!(s1, s2);
    a.send_to(b"from a", server.local_addr().unwrap())
        .await
        .unwrap();
    let m = server
        .recv_on(s1, Some(WAIT))
        .await
        .unwrap()
        .expect("matched by the exploded form");
    assert_eq!(m.from, compressed);
    assert_eq!(m.from.ip().to_string(), "::1");
    server.unsubscribe(s2).unwrap();
    assert_eq!(
        server.recv_on(s1, Some(WAIT)).await,
        Err(RecvError::NotSubscribed)
    );

    // A client given the exploded text reaches the server and reports the canonical address.
    let c = PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(Family::V6))
        .dest(format!("[0:0:0:0:0:0:0:1]:{port}"))
        .open()
        .await
        .unwrap();
    assert_eq!(c.dest(), Some(format!("[::1]:{port}").parse().unwrap()));
    round_trip(&c, b"exploded").await;
    c.close().await;
    server.close().await;
}

/// A pipe with a message callback that logs payloads, subscribed to everything, so a scenario
/// can wait until `n` messages arrived and only then read the queue.
async fn logged_udp_server<R: Runtime>(rt: R, conf: Conf) -> (Pipe<R>, Log<String>) {
    let log = Log::new();
    let l = log.clone();
    let p = PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(Family::V4))
        .conf(conf)
        .on_message(move |m, _| {
            let l = l.clone();
            async move { l.push(text(&m)) }
        })
        .open()
        .await
        .unwrap();
    p.subscribe(Filter::all()).unwrap();
    (p, log)
}

/// `max_qsize` from the pipe's own conf bounds its queue, dropping the oldest (P2PD read only
/// the global conf); 0 means unbounded.
pub async fn max_qsize_drops_oldest<R: Runtime>(rt: R) {
    let (p, log) = logged_udp_server(
        rt.clone(),
        Conf {
            max_qsize: 2,
            ..Conf::default()
        },
    )
    .await;
    let sender = raw_udp(Family::V4);
    for i in 0..5 {
        sender
            .send_to(format!("q{i}").as_bytes(), p.local_addr().unwrap())
            .await
            .unwrap();
    }
    log.wait_len(5).await;
    // The callback logged the last message, but the engine queues it for `recv` only once
    // the callback's job reported back (`engine/subs.rs`): wait for that, not for the log.
    queue_dropped(&p, 3).await;
    assert_eq!(text(&recv_msg(&p).await), "q3");
    assert_eq!(text(&recv_msg(&p).await), "q4");
    assert_eq!(p.recv_timeout(Duration::from_millis(50)).await, Ok(None));
    assert_eq!(p.stats().unwrap().queue_dropped, 3);
    p.close().await;

    let (p, log) = logged_udp_server(
        rt,
        Conf {
            max_qsize: 0,
            ..Conf::default()
        },
    )
    .await;
    for i in 0..50 {
        sender
            .send_to(format!("u{i}").as_bytes(), p.local_addr().unwrap())
            .await
            .unwrap();
    }
    log.wait_len(50).await;
    for i in 0..50 {
        assert_eq!(text(&recv_msg(&p).await), format!("u{i}"));
    }
    assert_eq!(p.stats().unwrap().queue_dropped, 0);
    p.close().await;
}

/// An accepted TCP connection takes `max_qsize` from its server's conf.
pub async fn max_qsize_on_accepted_connection<S: Runtime, C: Runtime>(srv: S, cli: C) {
    let framing = Framing::LengthPrefixed { max: 1024 };
    let log = Log::new();
    let l = log.clone();
    let server = PipeBuilder::new(srv, Proto::Tcp)
        .bind(lo0(Family::V4))
        .conf(Conf {
            max_qsize: 2,
            framing: framing.clone(),
            ..Conf::default()
        })
        .on_message(move |m, _| {
            let l = l.clone();
            async move { l.push(text(&m)) }
        })
        .open()
        .await
        .unwrap();
    let c = PipeBuilder::new(cli, Proto::Tcp)
        .to(server.local_addr().unwrap())
        .conf(Conf {
            framing,
            ..Conf::default()
        })
        .open()
        .await
        .unwrap();
    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    conn.subscribe(Filter::all()).unwrap();
    for i in 0..5 {
        c.send(format!("t{i}").as_bytes()).await.unwrap();
    }
    log.wait_len(5).await;
    queue_dropped(&conn, 3).await;
    assert_eq!(text(&recv_msg(&conn).await), "t3");
    assert_eq!(text(&recv_msg(&conn).await), "t4");
    assert_eq!(conn.recv_timeout(Duration::from_millis(50)).await, Ok(None));
    c.close().await;
    server.close().await;
}

/// Send `msgs` from raw sockets (`(sender index, payload)`), then `"end"` from sender 0, and
/// return what a server with `conf` delivered, up to and including `"end"`.
async fn dedup_run<R: Runtime>(
    rt: R,
    conf: Conf,
    msgs: &[(usize, &str)],
) -> (Vec<String>, pipe_io::Stats) {
    let server = PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(Family::V4))
        .conf(conf)
        .open()
        .await
        .unwrap();
    server.subscribe(Filter::all()).unwrap();
    let dest = server.local_addr().unwrap();
    let senders = [raw_udp(Family::V4), raw_udp(Family::V4)];
    let mut got = Vec::new();
    let mut last: Option<usize> = None;
    for (i, &(who, data)) in msgs.iter().enumerate() {
        if let Some(prev) = last.filter(|&l| l != who) {
            // Switching sockets: make sure the previous one's datagrams were all read first.
            let sync = format!("sync{i}");
            senders[prev].send_to(sync.as_bytes(), dest).await.unwrap();
            read_until(&server, &sync, &mut got).await;
        }
        senders[who].send_to(data.as_bytes(), dest).await.unwrap();
        last = Some(who);
    }
    senders[last.unwrap_or(0)]
        .send_to(b"end", dest)
        .await
        .unwrap();
    read_until(&server, "end", &mut got).await;
    got.push("end".into());
    let stats = server.stats().unwrap();
    server.close().await;
    (got, stats)
}

/// Read up to and including `marker`, keeping everything else in `got`.
async fn read_until<R: Runtime>(server: &Pipe<R>, marker: &str, got: &mut Vec<String>) {
    loop {
        let t = text(&recv_msg(server).await);
        if t == marker {
            return;
        }
        got.push(t);
    }
}

/// Dedup off (the default) delivers every copy; on, it drops repeats within a least-recently-
/// seen window of `max_msg_ids` ids (P2PD cleared its whole set instead).
pub async fn dedup_on_off_and_window<R: Runtime>(rt: R) {
    let seq = [(0, "a"), (0, "b"), (0, "a"), (0, "c"), (0, "a")];
    let (off, stats) = dedup_run(rt.clone(), Conf::default(), &seq).await;
    assert_eq!(off, ["a", "b", "a", "c", "a", "end"]);
    assert_eq!(stats.duplicates, 0);

    let on = Conf {
        enable_msg_ids: true,
        max_msg_ids: 2,
        ..Conf::default()
    };
    let (got, stats) = dedup_run(rt.clone(), on.clone(), &seq).await;
    // Window 2: "a" is refreshed by each repeat, so "c" evicts "b", never "a".
    assert_eq!(got, ["a", "b", "c", "end"]);
    assert_eq!(stats.duplicates, 2);

    let tiny = Conf {
        enable_msg_ids: true,
        max_msg_ids: 1,
        ..Conf::default()
    };
    let (got, _) = dedup_run(rt.clone(), tiny, &[(0, "a"), (0, "b"), (0, "a")]).await;
    assert_eq!(
        got,
        ["a", "b", "a", "end"],
        "a window of one id forgets \"a\" when \"b\" arrives"
    );

    let big = Conf {
        enable_msg_ids: true,
        max_msg_ids: 1000,
        ..Conf::default()
    };
    let (got, _) = dedup_run(rt, big, &[(0, "a"), (0, "b"), (0, "a")]).await;
    assert_eq!(got, ["a", "b", "end"]);
}

/// Dedup keys on the sender's IP by default (P2PD), or on IP and port with `DedupKey::IpPort`.
pub async fn dedup_key_ip_vs_ip_port<R: Runtime>(rt: R) {
    let msgs = [(0, "x"), (1, "x")];
    let ip = Conf {
        enable_msg_ids: true,
        ..Conf::default()
    };
    let (got, _) = dedup_run(rt.clone(), ip, &msgs).await;
    assert_eq!(
        got,
        ["x", "end"],
        "the same payload from another port of the host is a duplicate"
    );
    let ip_port = Conf {
        enable_msg_ids: true,
        dedup_key: pipe_io::DedupKey::IpPort,
        ..Conf::default()
    };
    let (got, _) = dedup_run(rt, ip_port, &msgs).await;
    assert_eq!(got, ["x", "x", "end"]);
}

/// Dedup applies to TCP frames too: three identical frames arrive once with it on, three
/// times with it off.
pub async fn dedup_tcp_frames<S: Runtime, C: Runtime>(srv: S, cli: C) {
    for (enable, want) in [
        (false, vec!["ping", "ping", "ping", "end"]),
        (true, vec!["ping", "end"]),
    ] {
        let conf = Conf {
            enable_msg_ids: enable,
            framing: Framing::LengthPrefixed { max: 64 },
            ..Conf::default()
        };
        let server = PipeBuilder::new(srv.clone(), Proto::Tcp)
            .bind(lo0(Family::V4))
            .conf(conf.clone())
            .open()
            .await
            .unwrap();
        let c = PipeBuilder::new(cli.clone(), Proto::Tcp)
            .to(server.local_addr().unwrap())
            .conf(conf)
            .open()
            .await
            .unwrap();
        let conn = within(WAIT, "accept", server.accept()).await.unwrap();
        conn.subscribe(Filter::all()).unwrap();
        for m in ["ping", "ping", "ping", "end"] {
            c.send(m.as_bytes()).await.unwrap();
        }
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("end") {
            got.push(text(&recv_msg(&conn).await));
        }
        assert_eq!(got, want, "enable_msg_ids = {enable}");
        c.close().await;
        server.close().await;
    }
}

/// Messages queued before a close can still be received after it; then `Err(Closed)`.
pub async fn queued_messages_survive_close<R: Runtime>(rt: R) {
    let (p, log) = logged_udp_server(rt, Conf::default()).await;
    let sender = raw_udp(Family::V4);
    for m in ["one", "two"] {
        sender
            .send_to(m.as_bytes(), p.local_addr().unwrap())
            .await
            .unwrap();
    }
    log.wait_len(2).await;
    p.close().await;
    assert_eq!(text(&recv_msg(&p).await), "one");
    assert_eq!(text(&recv_msg(&p).await), "two");
    assert_eq!(p.recv_timeout(WAIT).await, Err(RecvError::Closed));
}

/// Wait until `p` has dropped `n` messages from its queues (its counter, read every
/// millisecond, for at most [`WAIT`]).
async fn queue_dropped<R: Runtime>(p: &Pipe<R>, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while p.stats().map_or(0, |s| s.queue_dropped) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} messages not dropped from the queue within {WAIT:?}: {:?}",
            p.stats()
        );
        sleep(Duration::from_millis(1)).await;
    }
}
