//! TCP framing: `LengthPrefixed` and `Delimited` turn the byte stream into exact messages
//! however the bytes are cut; an over-limit frame ends the connection with `FrameTooLarge`.

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::prelude::*;

/// A server with `framing` that logs message payloads and end reasons of its connections.
async fn framed_server<R: Runtime>(
    rt: R,
    framing: Framing,
) -> (Pipe<R>, Log<String>, Log<(PipeId, EndReason)>) {
    let (msgs, ends) = (Log::new(), Log::new());
    let (m, e) = (msgs.clone(), ends.clone());
    let server = PipeBuilder::new(rt, Proto::Tcp)
        .bind(lo0(Family::V4))
        .conf(Conf {
            framing,
            ..Conf::default()
        })
        .on_message(move |msg, _| {
            let m = m.clone();
            async move { m.push(text(&msg)) }
        })
        .on_end(move |r, p| {
            let e = e.clone();
            async move { e.push((p.id(), r)) }
        })
        .open()
        .await
        .unwrap();
    (server, msgs, ends)
}

fn lp(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

/// The raw peer sees EOF or a reset within [`WAIT`].
async fn expect_closed(raw: &mut smol::Async<std::net::TcpStream>) {
    let mut buf = [0u8; 64];
    match within(WAIT, "the connection closes", raw.read(&mut buf)).await {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
}

/// `LengthPrefixed`: frames merged in one write and a frame split across writes come out
/// exact; what the pipe sends is `len: u32 BE | payload`; a declared length over `max` ends the
/// connection with `FrameTooLarge` (before anything of it is buffered).
pub async fn length_prefixed_exact_messages<R: Runtime>(rt: R) {
    let (server, msgs, ends) = framed_server(rt, Framing::LengthPrefixed { max: 64 }).await;
    let mut raw = raw_tcp(server.local_addr().unwrap()).await;
    let mut merged = lp(b"a");
    merged.extend(lp(b"bb"));
    merged.extend(lp(b"ccc"));
    raw.write_all(&merged).await.unwrap();
    let split = lp(b"split across writes");
    raw.write_all(&split[..3]).await.unwrap();
    raw.flush().await.unwrap();
    sleep(Duration::from_millis(20)).await;
    raw.write_all(&split[3..]).await.unwrap();
    assert_eq!(
        msgs.wait_len(4).await,
        ["a", "bb", "ccc", "split across writes"]
    );

    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    conn.send(b"abc").await.unwrap();
    let mut out = [0u8; 7];
    within(WAIT, "framed reply", raw.read_exact(&mut out))
        .await
        .unwrap();
    assert_eq!(out, *b"\x00\x00\x00\x03abc");
    assert_eq!(
        conn.send(&[0u8; 65]).await,
        Err(SendError::TooLarge { len: 65, max: 64 })
    );
    conn.send(&[]).await.expect("an empty frame is a frame");

    raw.write_all(&65u32.to_be_bytes()).await.unwrap();
    assert_eq!(
        ends.wait_exactly(1).await,
        [(conn.id(), EndReason::FrameTooLarge { len: 65, max: 64 })]
    );
    let mut empty = [0u8; 4];
    within(WAIT, "empty frame", raw.read_exact(&mut empty))
        .await
        .unwrap();
    assert_eq!(empty, [0u8; 4]);
    expect_closed(&mut raw).await;
    assert_eq!(msgs.snapshot().len(), 4);
    server.close().await;
    let end = ends.wait_exactly(2).await;
    assert_eq!(
        end[1],
        (server.id(), EndReason::Local),
        "one end for the connection"
    );
}

/// `Delimited`: messages end with the delimiter (not part of the message), however cut; a
/// message containing the delimiter or over `max` is refused on send; more than `max` bytes
/// without a delimiter ends the connection with `FrameTooLarge`.
pub async fn delimited_exact_messages<R: Runtime>(rt: R) {
    let framing = Framing::Delimited {
        delim: Bytes::from_static(b"\r\n"),
        max: 16,
    };
    let (server, msgs, ends) = framed_server(rt, framing).await;
    let mut raw = raw_tcp(server.local_addr().unwrap()).await;
    raw.write_all(b"a\r\nbb\r\nccc\r").await.unwrap();
    raw.flush().await.unwrap();
    sleep(Duration::from_millis(20)).await;
    raw.write_all(b"\nsplit\r\n").await.unwrap();
    assert_eq!(msgs.wait_len(4).await, ["a", "bb", "ccc", "split"]);

    let conn = within(WAIT, "accept", server.accept()).await.unwrap();
    conn.send(b"hi").await.unwrap();
    let mut out = [0u8; 4];
    within(WAIT, "delimited reply", raw.read_exact(&mut out))
        .await
        .unwrap();
    assert_eq!(&out, b"hi\r\n");
    assert_eq!(
        conn.send(b"two\r\nlines").await,
        Err(SendError::ContainsDelimiter)
    );
    assert!(matches!(
        conn.send(&[b'x'; 17]).await,
        Err(SendError::TooLarge { len: 17, max: 16 })
    ));

    raw.write_all(b"0123456789abcdefXYZ").await.unwrap();
    let end = ends.wait_exactly(1).await;
    assert_eq!(end[0].0, conn.id());
    assert!(
        matches!(end[0].1, EndReason::FrameTooLarge { max: 16, .. }),
        "{end:?}"
    );
    expect_closed(&mut raw).await;
    assert_eq!(msgs.snapshot().len(), 4);
    server.close().await;
    let end = ends.wait_exactly(2).await;
    assert_eq!(
        end[1],
        (server.id(), EndReason::Local),
        "one end for the connection"
    );
}

/// Pipe to pipe with framing on both ends: a burst of 50 messages arrives as 50 exact
/// messages, in order (raw chunks would merge them).
pub async fn framed_burst_between_pipes<S: Runtime, C: Runtime>(srv: S, cli: C, framing: Framing) {
    let conf = Conf {
        framing,
        ..Conf::default()
    };
    let server = echo_builder(srv, Proto::Tcp, Family::V4)
        .conf(conf.clone())
        .open()
        .await
        .unwrap();
    let c = PipeBuilder::new(cli, Proto::Tcp)
        .to(server.local_addr().unwrap())
        .conf(conf)
        .open()
        .await
        .unwrap();
    for i in 0..50 {
        c.send(format!("msg {i}").as_bytes()).await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(text(&recv_msg(&c).await), format!("msg {i}"));
    }
    // Exactly 50, without a quiet window: the server saw 50 messages, so it echoed 50, and all
    // 50 are here; the deframer emits in order, so a spurious extra message cut from those bytes
    // would already be counted.
    let conns = server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].stats().unwrap().received, 50);
    assert_eq!(c.stats().unwrap().received, 50);
    c.close().await;
    server.close().await;
}
