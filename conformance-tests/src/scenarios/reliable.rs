//! Reliable UDP (`Conf::reliable_udp`, `send_reliable`), in P2PD's wire format:
//! `seq: u64 BE | flag: u8 | payload`, ACK = `seq | 0x01`.

use super::prelude::*;

fn reliable(conf: Conf) -> Conf {
    Conf {
        reliable_udp: true,
        ..conf
    }
}

/// Between two pipes: a reliable send is acked and delivered once; plain sends on the same
/// pipes arrive unmangled; the receiver can answer reliably too.
pub async fn reliable_acked<S: Runtime, C: Runtime>(srv: S, cli: C, fam: Family) {
    let a = PipeBuilder::new(srv, Proto::Udp)
        .bind(lo0(fam))
        .conf(reliable(Conf::default()))
        .open()
        .await
        .unwrap();
    a.subscribe(Filter::all()).unwrap();
    let b = PipeBuilder::new(cli, Proto::Udp)
        .to(a.local_addr().unwrap())
        .conf(reliable(Conf::default()))
        .open()
        .await
        .unwrap();

    let outcome = within(WAIT, "reliable send", b.send_reliable(b"hello", None)).await;
    assert_eq!(outcome, Ok(Outcome::Acked));
    let m = recv_msg(&a).await;
    assert_eq!(
        (&m.data[..], m.from),
        (&b"hello"[..], b.local_addr().unwrap())
    );
    assert_eq!(b.stats().unwrap().acked, 1);
    assert_eq!(b.stats().unwrap().retransmits, 0);

    b.send(b"plain").await.unwrap();
    assert_eq!(&recv_msg(&a).await.data[..], b"plain");

    let back = within(
        WAIT,
        "reliable reply",
        a.send_reliable(b"reply", Some(m.from)),
    )
    .await;
    assert_eq!(back, Ok(Outcome::Acked));
    assert_eq!(&recv_msg(&b).await.data[..], b"reply");
    // Delivered once, without a quiet window: both sends were acked at their first try, so no
    // retransmitted copy exists that could still arrive, and each side counted only what it
    // read (ACKs are not messages).
    assert_eq!(a.stats().unwrap().retransmits, 0);
    assert_eq!(b.stats().unwrap().retransmits, 0);
    assert_eq!(a.stats().unwrap().received, 2, "hello and plain");
    assert_eq!(b.stats().unwrap().received, 1, "reply");
    a.close().await;
    b.close().await;
}

/// Against a silent peer: `1 + send_retry` transmissions of the same frame, about
/// `retry_interval` apart, then `Unconfirmed` (P2PD: always 3 tries, 3 s, `send_retry` dead).
pub async fn reliable_retries_silent_peer<R: Runtime>(rt: R, send_retry: u32) {
    let interval = Duration::from_millis(100);
    let peer = raw_udp(Family::V4);
    let conf = reliable(Conf {
        send_retry,
        retry_interval: interval,
        ..Conf::default()
    });
    let p = PipeBuilder::new(rt, Proto::Udp)
        .to(peer.get_ref().local_addr().unwrap())
        .conf(conf)
        .open()
        .await
        .unwrap();
    let tries = 1 + send_retry as usize;

    let start = Instant::now();
    let sending = async {
        let res = within(
            WAIT,
            "unconfirmed outcome",
            p.send_reliable(b"anyone?", None),
        )
        .await;
        (res, start.elapsed())
    };
    let counting = async {
        let mut got = Vec::new();
        for k in 0..tries {
            let (data, from) = raw_recv(&peer, WAIT)
                .await
                .unwrap_or_else(|| panic!("try {k} of {tries} never came"));
            got.push((data, from, start.elapsed()));
        }
        got
    };
    let ((res, took), got) = futures_lite::future::zip(sending, counting).await;
    assert_eq!(res, Ok(Outcome::Unconfirmed));
    // How many were sent is counted at the source (no quiet window after the last try): the
    // outcome is in, so the pipe will send no more.
    assert_eq!(
        p.stats().unwrap().retransmits,
        send_retry as u64,
        "transmissions for send_retry = {send_retry}"
    );
    let seq = &got[0].0[..8];
    for (data, from, _) in &got {
        assert_eq!(*from, p.local_addr().unwrap());
        assert_eq!(
            &data[..8],
            seq,
            "every try carries the same sequence number"
        );
        assert_eq!(data[8], 0, "flag 0: data that wants an ACK");
        assert_eq!(&data[9..], b"anyone?");
    }
    // Spacing, timed from the send call rather than between arrivals: try k cannot leave
    // before k intervals after `send_reliable` (timers never fire early), and a late read only
    // makes an arrival later. Gaps between arrivals were flaky: a late first read shrinks the
    // next gap by as much.
    for (k, (_, _, at)) in got.iter().enumerate() {
        assert_at_least(*at, interval * k as u32, 0.8, &format!("try {k}"));
    }
    // The outcome comes one interval after the last try (room for a late ACK).
    assert_at_least(took, interval * tries as u32, 0.8, "time to Unconfirmed");
    assert_eq!(p.stats().unwrap().retransmits, send_retry as u64);
    assert_eq!(p.stats().unwrap().unconfirmed, 1);
    p.close().await;
}

/// The receiver acks every copy of a frame but delivers it once.
pub async fn reliable_duplicates_suppressed<R: Runtime>(rt: R, fam: Family) {
    let p = PipeBuilder::new(rt, Proto::Udp)
        .bind(lo0(fam))
        .conf(reliable(Conf::default()))
        .open()
        .await
        .unwrap();
    p.subscribe(Filter::all()).unwrap();
    let peer = raw_udp(fam);
    let mut frame = 0x1122_3344_5566_7788u64.to_be_bytes().to_vec();
    frame.push(0);
    frame.extend_from_slice(b"once");
    for _ in 0..3 {
        peer.send_to(&frame, p.local_addr().unwrap()).await.unwrap();
        let (ack, from) = raw_recv(&peer, WAIT).await.expect("an ACK for every copy");
        assert_eq!(from, p.local_addr().unwrap());
        assert_eq!(ack[..8], frame[..8]);
        assert_eq!(ack[8..], [1u8], "ACK = seq | 0x01, nothing else");
    }
    let m = recv_msg(&p).await;
    assert_eq!(&m.data[..], b"once");
    // The three ACKs show the pipe took in all three copies: counters, not a quiet window.
    assert_eq!(p.stats().unwrap().reliable_repeats, 2);
    assert_eq!(p.stats().unwrap().received, 1);
    assert_eq!(p.stats().unwrap().queued, 1);

    // A plain send from a reliable pipe is framed with flag 2, so no peer mangles it.
    p.send_to(b"plain", peer.get_ref().local_addr().unwrap())
        .await
        .unwrap();
    let (data, _) = raw_recv(&peer, WAIT).await.expect("plain frame");
    assert_eq!(data[8], 2);
    assert_eq!(&data[9..], b"plain");
    p.close().await;
}
