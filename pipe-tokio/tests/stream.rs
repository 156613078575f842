//! Half-close and stream mode on tokio, against plain tokio sockets on loopback.

use std::time::Duration;

use pipe_tokio::{EndReason, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Generous: the box is shared and loaded.
const WAIT: Duration = Duration::from_secs(20);

/// Read until EOF, bounded.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("EOF within the deadline")
        .expect("read");
    out
}

/// A pipe client sends a request and shuts its write side; a plain server reads to EOF, then
/// answers 100 KiB and closes: the pipe still receives the whole answer after its FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_shutdown_then_full_answer() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let answer: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = answer.clone();
    let srv = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let req = read_to_end(&mut s).await;
        s.write_all(&answer).await.unwrap();
        req
    });
    let pipe = pipe_tokio::pipe_open(Proto::Tcp, addr).await.unwrap();
    pipe.send(b"GET / please\n").await.unwrap();
    timeout(WAIT, pipe.shutdown())
        .await
        .expect("shutdown within the deadline")
        .expect("FIN sent");
    assert_eq!(
        pipe.send(b"late").await,
        Err(pipe_tokio::SendError::Closed),
        "a shut write side takes no more sends"
    );
    let req = timeout(WAIT, srv).await.unwrap().unwrap();
    assert_eq!(
        req, b"GET / please\n",
        "the server saw the request, then EOF"
    );
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match pipe.recv_timeout(WAIT).await {
            Ok(Some(m)) => got.extend_from_slice(&m.data),
            other => panic!("answer cut short at {} bytes: {other:?}", got.len()),
        }
    }
    assert_eq!(got, expected);
    // Both sides closed: the pipe ends, PeerClosed.
    timeout(WAIT, pipe.closed()).await.expect("pipe closes");
}

/// The other way round: a callback server (echo) whose client sends a request and shuts its
/// write side at once still answers in full (a peer's FIN no longer ends a pipe that has a
/// callback job left to answer with), then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_fin_does_not_end_a_pipe_with_an_answer_left() {
    let ends = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let e2 = ends.clone();
    let server = pipe_tokio::builder(Proto::Tcp)
        .on_message(|msg, pipe| async move {
            // The answer is made after the FIN arrived (the request and the FIN come
            // together): wait a little inside the callback to make that likely.
            tokio::task::yield_now().await;
            let mut out = msg.data.to_vec();
            out.extend_from_slice(b" -> answered");
            pipe.send(&out)
                .await
                .expect("a half-closed pipe still sends");
        })
        .on_end(move |reason, _| {
            let e2 = e2.clone();
            async move { e2.lock().unwrap().push(reason) }
        })
        .open()
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    for _ in 0..20 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"request").await.unwrap();
        c.shutdown().await.unwrap();
        let got = read_to_end(&mut c).await;
        assert_eq!(got, b"request -> answered");
    }
    server.close().await;
    let ends = ends.lock().unwrap().clone();
    assert!(
        ends.iter().filter(|r| **r == EndReason::PeerClosed).count() >= 20,
        "each connection ended PeerClosed once its answer was out: {ends:?}"
    );
}

/// A plain tokio echo server: each connection's bytes back until EOF, then close.
async fn tokio_echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// 2 MiB of a pattern that shows a lost, repeated or reordered chunk.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A pipe stream accepted from a pipe server, spliced to a plain tokio echo server with
/// `tokio::io::copy_bidirectional`: a plain client's 2 MiB come back byte-exact, and the
/// client's FIN travels through the splice and back (copy_bidirectional shuts each side's
/// write half at the other's EOF), so both copies finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_through_copy_bidirectional() {
    let upstream = tokio_echo().await;
    let server = pipe_tokio::pipe_open(Proto::Tcp, ()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let splice = tokio::spawn(async move {
        let conn = server.accept().await.unwrap();
        let mut down = conn
            .into_stream()
            .expect("an accepted TCP pipe is a stream");
        let mut up = TcpStream::connect(upstream).await.unwrap();
        let moved = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        (moved.expect("both directions end cleanly"), server)
    });
    let data = pattern(2 << 20);
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = c.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = async {
        timeout(WAIT, r.read_to_end(&mut got))
            .await
            .expect("the echo ends within the deadline")
            .unwrap();
    };
    tokio::join!(send, recv);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the echo is byte-exact");
    let ((up, down), _server) = timeout(WAIT, splice).await.unwrap().unwrap();
    assert_eq!((up, down), (data.len() as u64, data.len() as u64));
}

/// `tokio_util::codec::Framed` with a lines codec over a pipe stream (the README's example),
/// against a plain tokio line echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_lines_over_a_pipe_stream() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::{Framed, LinesCodec};

    let addr = tokio_echo().await;
    // --- as in README.md, "Stream mode" (with unwrap for ?) ---
    let pipe = pipe_tokio::pipe_open(pipe_tokio::Proto::Tcp, addr)
        .await
        .unwrap();
    let mut lines = Framed::new(pipe.into_stream().unwrap(), LinesCodec::new());
    lines.send("hello").await.unwrap();
    let echo = lines.next().await; // Some(Ok("hello")) from a line echo
    assert_eq!(echo.unwrap().unwrap(), "hello");
    // --- end ---
    for i in 0..200 {
        lines.send(format!("line {i}")).await.unwrap();
    }
    for i in 0..200 {
        let got = timeout(WAIT, lines.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got, format!("line {i}"));
    }
    // The stats are the pipe's: every byte counted.
    let stats = lines.get_ref().pipe().stats().unwrap();
    assert_eq!(stats.bytes_in, stats.bytes_out);
    assert!(stats.bytes_out >= 200 * 7);
}

/// Half-close on a stream: write a request, `shutdown()` (the FIN), then read a full answer
/// that the server sends only after seeing the EOF; the pipe ends once the server closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_shutdown_then_full_answer() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let answer = pattern(300 * 1024);
    let expected = answer.clone();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let req = read_to_end(&mut s).await;
        s.write_all(&req).await.unwrap();
        s.write_all(&answer).await.unwrap();
    });
    let pipe = pipe_tokio::pipe_open(Proto::Tcp, addr).await.unwrap();
    let mut s = pipe.into_stream().unwrap();
    s.write_all(b"request").await.unwrap();
    timeout(WAIT, s.shutdown()).await.unwrap().unwrap();
    assert!(s.write_all(b"x").await.is_err(), "no write after shutdown");
    let mut got = Vec::new();
    timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..7], b"request");
    assert!(got[7..] == expected[..], "the full answer after our FIN");
    timeout(WAIT, s.pipe().closed())
        .await
        .expect("both sides closed: the pipe ends");
}

/// The peer half-closes a stream: reads end (EOF) but the stream still writes, and the
/// peer gets all of it before our shutdown's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_fin_leaves_a_stream_writable() {
    let server = pipe_tokio::pipe_open(Proto::Tcp, ()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"question").await.unwrap();
    c.shutdown().await.unwrap();
    let conn = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let mut s = conn.into_stream().unwrap();
    let mut req = Vec::new();
    timeout(WAIT, s.read_to_end(&mut req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        req, b"question",
        "bytes that came before into_stream are read first"
    );
    // The FIN is in; the answer is written after it.
    let answer = pattern(1 << 20);
    s.write_all(&answer).await.unwrap();
    s.shutdown().await.unwrap();
    let got = read_to_end(&mut c).await;
    assert!(got == answer, "the whole answer after the peer's FIN");
}

/// `recv_timeout(Duration::MAX)` waits forever (no Instant overflow panic) and returns the
/// message when it comes; `messages()` is a `Stream` that ends when the pipe does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_forever_and_messages_stream() {
    use futures_util::StreamExt;

    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        // Later than the pipe's own recv_timeout (2 s would end a plain `recv()`): sent only
        // when the test says so, after recv_timeout(MAX) has been waiting.
        let _ = go_rx.await;
        s.write_all(b"late").await.unwrap();
        // Then more, and the close.
        for chunk in [&b"a"[..], b"b", b"c"] {
            s.write_all(chunk).await.unwrap();
        }
    });
    let pipe = pipe_tokio::pipe_open(Proto::Tcp, addr).await.unwrap();
    // Nothing comes yet: the wait with no deadline is still waiting (it did not panic on
    // `now + Duration::MAX`, and did not give up at the pipe's recv_timeout either way).
    let idle = timeout(Duration::from_millis(50), pipe.recv_timeout(Duration::MAX)).await;
    assert!(idle.is_err(), "still waiting: {idle:?}");
    go_tx.send(()).unwrap();
    let first = timeout(WAIT, pipe.recv_timeout(Duration::MAX))
        .await
        .expect("a message within the deadline")
        .expect("no error")
        .expect("a message, not a timeout");
    let mut all = first.data.to_vec();
    let rest: Vec<_> = timeout(WAIT, pipe.messages().collect::<Vec<_>>())
        .await
        .expect("the stream ends when the peer closes");
    for m in rest {
        all.extend_from_slice(&m.data);
    }
    assert_eq!(all, b"lateabc");
}

/// Wait (bounded) until the pipe has received at least `n` bytes, without taking them.
async fn received_at_least(pipe: &pipe_tokio::Pipe, n: u64) {
    timeout(WAIT, async {
        while pipe.stats().map_or(0, |s| s.bytes_in) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the bytes arrive within the deadline");
}

/// Bytes that reached the pipe before `into_stream` are read first, and a slow reader with a
/// tiny queue (4 messages) loses nothing of 8 MiB: the engine pauses the socket's reading
/// instead of dropping the oldest message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_lost_before_into_stream_or_to_a_slow_reader() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let data = pattern(8 << 20);
    let sent = data.clone();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        s.write_all(b"greeting\n").await.unwrap();
        // The rest only once the client asks (it first checks the greeting is queued).
        let mut go = [0u8; 1];
        s.read_exact(&mut go).await.unwrap();
        s.write_all(&sent).await.unwrap();
    });
    let conf = pipe_tokio::Conf {
        max_qsize: 4,
        ..pipe_tokio::Conf::default()
    };
    let pipe = pipe_tokio::builder(Proto::Tcp)
        .dest(addr)
        .conf(conf)
        .open()
        .await
        .unwrap();
    received_at_least(&pipe, 9).await;
    let mut s = pipe.into_stream().unwrap();
    let mut greeting = [0u8; 9];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(
        &greeting, b"greeting\n",
        "what came before into_stream is read first"
    );
    s.write_all(b"g").await.unwrap();
    // A reader that has not read yet: the 4-message queue fills and the engine pauses the
    // socket's reading (waited for, not left to how fast the reader below happens to be).
    timeout(WAIT, async {
        while s.pipe().stats().map_or(0, |st| st.paused) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the full queue pauses the reading");
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 1000];
    while got.len() < data.len() {
        let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "EOF after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        // A slow reader: let the sender fill the queue.
        tokio::task::yield_now().await;
    }
    assert!(got == data, "in order, nothing lost");
    let stats = s.pipe().stats().unwrap();
    assert_eq!(stats.queue_dropped, 0, "{stats:?}");
}

/// Only a TCP pipe with raw framing that is not a listener becomes a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_stream_refuses_what_is_not_a_byte_stream() {
    use pipe_tokio::StreamError;

    let udp = pipe_tokio::pipe_open(Proto::Udp, ()).await.unwrap();
    assert_eq!(udp.into_stream().unwrap_err(), StreamError::NotTcp);
    let listener = pipe_tokio::pipe_open(Proto::Tcp, ()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(
        listener.clone().into_stream().unwrap_err(),
        StreamError::Listener
    );
    let framed = pipe_tokio::builder(Proto::Tcp)
        .dest(addr)
        .conf(pipe_tokio::Conf {
            framing: pipe_tokio::Framing::LengthPrefixed { max: 1024 },
            ..pipe_tokio::Conf::default()
        })
        .open()
        .await
        .unwrap();
    assert_eq!(framed.into_stream().unwrap_err(), StreamError::Framing);
}

/// A figure, not a check (run with `--release -- --ignored --nocapture`): 256 MiB one way
/// through a pipe stream (`tokio::io::copy` into it, a plain reader on the other side)
/// against the same through a plain tokio `TcpStream`, on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn measure_stream_throughput() {
    const LEN: usize = 256 << 20;
    async fn sink() -> (std::net::SocketAddr, tokio::task::JoinHandle<u64>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::io::copy(&mut s, &mut tokio::io::sink())
                .await
                .unwrap()
        });
        (addr, h)
    }
    let chunk = vec![7u8; 64 << 10];
    for round in 0..2 {
        let (addr, h) = sink().await;
        let t0 = std::time::Instant::now();
        let mut s = pipe_tokio::pipe_open(Proto::Tcp, addr)
            .await
            .unwrap()
            .into_stream()
            .unwrap();
        for _ in 0..LEN / chunk.len() {
            s.write_all(&chunk).await.unwrap();
        }
        s.shutdown().await.unwrap();
        assert_eq!(h.await.unwrap(), LEN as u64);
        let pipe = t0.elapsed();
        let (addr, h) = sink().await;
        let t0 = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..LEN / chunk.len() {
            s.write_all(&chunk).await.unwrap();
        }
        s.shutdown().await.unwrap();
        assert_eq!(h.await.unwrap(), LEN as u64);
        let raw = t0.elapsed();
        // The other way: a plain source, read through a pipe stream / a plain stream.
        let mut read = [Duration::ZERO; 2];
        for (i, through_pipe) in [true, false].into_iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let c = chunk.clone();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                for _ in 0..LEN / c.len() {
                    s.write_all(&c).await.unwrap();
                }
            });
            let t0 = std::time::Instant::now();
            let n = if through_pipe {
                let mut s = pipe_tokio::pipe_open(Proto::Tcp, addr)
                    .await
                    .unwrap()
                    .into_stream()
                    .unwrap();
                tokio::io::copy(&mut s, &mut tokio::io::sink())
                    .await
                    .unwrap()
            } else {
                let mut s = TcpStream::connect(addr).await.unwrap();
                tokio::io::copy(&mut s, &mut tokio::io::sink())
                    .await
                    .unwrap()
            };
            assert_eq!(n, LEN as u64);
            read[i] = t0.elapsed();
        }
        let mib_s = |d: Duration| (LEN >> 20) as f64 / d.as_secs_f64();
        eprintln!(
            "round {round}: 256 MiB written through a pipe stream {:.0} MiB/s (plain tokio {:.0}); \
             read through a pipe stream {:.0} MiB/s (plain tokio {:.0})",
            mib_s(pipe),
            mib_s(raw),
            mib_s(read[0]),
            mib_s(read[1])
        );
    }
}
