//! The driver under a deterministic runtime (`sim`): a virtual clock that jumps to the next
//! timer when the world is quiet, a manual executor, real loopback sockets. Each deadline is
//! checked at the library's own defaults (30 s idle, 10 s first message, 30 s write stall,
//! 2 s close flush, 3 × 3 s reliable tries) to the millisecond of virtual time, in
//! milliseconds of real time. The same deadlines run on real runtimes in the conformance
//! suite (`deadlines.rs`).

mod sim;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipe_io::{Conf, EndReason, Framing, Outcome, PipeBuilder, Proto, SendError};
use sim::{Peer, Sim};

const MS: Duration = Duration::from_millis(1);
/// How far past its deadline a deadline may fire in virtual time: the clock creeps by 1 ms
/// steps when no timer is pending, and an I/O round may straddle a step.
const SLACK: Duration = Duration::from_millis(5);

type Ends = Arc<Mutex<Vec<(Duration, EndReason)>>>;

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A TCP server on the simulation that logs each end with its virtual time.
async fn server(sim: &Sim, conf: Conf, ends: &Ends) -> pipe_io::Pipe<Sim> {
    let (s, log) = (sim.clone(), ends.clone());
    PipeBuilder::new(sim.clone(), Proto::Tcp)
        .bind(lo())
        .conf(conf)
        .on_end(move |r, _| {
            log.lock().unwrap().push((s.elapsed(), r));
            async {}
        })
        .open()
        .await
        .unwrap()
}

#[track_caller]
fn assert_near(at: Duration, want: Duration, what: &str) {
    assert!(
        at >= want && at <= want + SLACK,
        "{what}: at {at:?}, want {want:?} (+{SLACK:?})"
    );
}

#[test]
fn idle_deadline_fires_at_the_server_default() {
    let sim = Sim::new();
    let ends = Ends::default();
    let (s, e) = (sim.clone(), ends.clone());
    let (sent, eof) = sim.block_on(Duration::from_secs(120), async move {
        let srv = server(&s, Conf::server(), &e).await;
        let mut peer = Peer::connect(&s, srv.local_addr().unwrap());
        peer.write_all(b"hi!").await;
        let sent = s.elapsed();
        let got = peer.read_to_eof().await;
        assert!(got.is_empty(), "the server echoes nothing");
        let eof = s.elapsed();
        drop(srv);
        (sent, eof)
    });
    let want = sent + pipe_io::pipe_core::conf::SERVER_IDLE_TIMEOUT;
    assert_near(eof, want, "client sees the close");
    let ends = ends.lock().unwrap();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0].1, EndReason::IdleTimeout);
    assert_near(ends[0].0, want, "end callback");
}

#[test]
fn first_message_deadline_fires_at_the_server_default() {
    let sim = Sim::new();
    let ends = Ends::default();
    let (s, e) = (sim.clone(), ends.clone());
    let (start, eof) = sim.block_on(Duration::from_secs(60), async move {
        let conf = Conf {
            framing: Framing::LengthPrefixed { max: 1024 },
            ..Conf::server()
        };
        let srv = server(&s, conf, &e).await;
        let start = s.elapsed();
        let mut peer = Peer::connect(&s, srv.local_addr().unwrap());
        // Three bytes of a four-byte length: no message yet.
        peer.write_all(&[0, 0, 0]).await;
        peer.read_to_eof().await;
        let eof = s.elapsed();
        drop(srv);
        (start, eof)
    });
    let want = start + pipe_io::pipe_core::conf::SERVER_FIRST_MESSAGE_TIMEOUT;
    assert_near(eof, want, "client sees the close");
    let ends = ends.lock().unwrap();
    assert_eq!(ends[0].1, EndReason::FirstMessageTimeout, "{ends:?}");
}

#[test]
fn write_stall_deadline_fires_at_the_server_default() {
    let sim = Sim::new();
    let ends = Ends::default();
    let (s, e) = (sim.clone(), ends.clone());
    let (res, started, ended_at) = sim.block_on(Duration::from_secs(120), async move {
        let srv = server(&s, Conf::server(), &e).await;
        let peer = Peer::connect_small(&s, srv.local_addr().unwrap());
        let conn = srv.accept().await.unwrap();
        // The peer talks once (no first-message or idle end), then never reads.
        let mut p = peer;
        p.write_all(b"x").await;
        let started = s.elapsed();
        let chunk = vec![0u8; 64 << 10];
        let res = loop {
            if let Err(e) = conn.send(&chunk).await {
                break e;
            }
        };
        let at = s.elapsed();
        drop(p);
        drop(srv);
        (res, started, at)
    });
    assert_eq!(res, SendError::Closed);
    let ends = ends.lock().unwrap();
    match ends[0].1 {
        EndReason::WriteStalled { unsent } => assert!(unsent > 0),
        ref other => panic!("ended with {other:?}"),
    }
    // The buffers fill at once (virtual time moves only when quiet).
    let want = started + pipe_io::pipe_core::conf::SERVER_WRITE_STALL_TIMEOUT;
    assert_near(ends[0].0, want, "stalled end");
    assert_near(ended_at, want, "the blocked sender learns at the end");
}

#[test]
fn close_flush_deadline_fires_after_the_listener_handed_its_timer_over() {
    let sim = Sim::new();
    let ends = Ends::default();
    let (s, e) = (sim.clone(), ends.clone());
    let (closed_at, closing_at) = sim.block_on(Duration::from_secs(60), async move {
        // No idle or stall deadline: only the close flush can end the wait.
        let srv = server(&s, Conf::default(), &e).await;
        let mut peer = Peer::connect_small(&s, srv.local_addr().unwrap());
        let conn = srv.accept().await.unwrap();
        peer.write_all(b"x").await;
        // Fill the peer's buffers and the connection's outbound queue.
        let chunk = vec![1u8; 64 << 10];
        let mut full = false;
        for _ in 0..1000 {
            let send = conn.send(&chunk);
            let stalled = futures_lite::future::or(
                async {
                    send.await.unwrap();
                    false
                },
                async {
                    sim::yield_rounds(64).await;
                    true
                },
            )
            .await;
            if stalled {
                full = true;
                break;
            }
        }
        assert!(full, "the peer's buffers never filled");
        // The listener closes its connections, then itself: its task, which ran the group's
        // timer, ends; the connection's task must take the timer over for the close deadline.
        let closing_at = s.elapsed();
        srv.close().await;
        conn.closed().await;
        let at = s.elapsed();
        drop(peer);
        (at, closing_at)
    });
    let want = closing_at + Conf::default().close_timeout;
    assert_near(
        closed_at,
        want,
        "the connection's socket closes at the close deadline",
    );
    let ends = ends.lock().unwrap();
    assert!(
        ends.iter().any(|(_, r)| *r == EndReason::ServerClosed),
        "{ends:?}"
    );
}

#[test]
fn reliable_send_is_unconfirmed_after_its_tries() {
    let sim = Sim::new();
    let s = sim.clone();
    let (outcome, took) = sim.block_on(Duration::from_secs(60), async move {
        let silent = UdpSocket::bind(lo()).unwrap();
        let p = PipeBuilder::new(s.clone(), Proto::Udp)
            .dest(silent.local_addr().unwrap())
            .conf(Conf {
                reliable_udp: true,
                ..Conf::default()
            })
            .open()
            .await
            .unwrap();
        let start = s.elapsed();
        let o = p.send_reliable(b"anyone?", None).await.unwrap();
        let took = s.elapsed() - start;
        // Three tries were sent: the first and two retransmissions.
        let mut buf = [0u8; 64];
        silent.set_nonblocking(true).unwrap();
        let mut n = 0;
        while silent.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        assert_eq!(n, 3, "1 + send_retry transmissions");
        (o, took)
    });
    assert_eq!(outcome, Outcome::Unconfirmed);
    let c = Conf::default();
    // 1 + send_retry tries, `retry_interval` apart, then one more interval for a late ACK.
    let want = c.retry_interval * c.reliable_tries();
    assert_near(took, want, "unconfirmed");
    assert!(took >= 9000 * MS);
}

/// A TCP server on the simulation with no callbacks: only `accept()` serves it.
async fn plain_server(sim: &Sim) -> pipe_io::Pipe<Sim> {
    PipeBuilder::new(sim.clone(), Proto::Tcp)
        .bind(lo())
        .open()
        .await
        .unwrap()
}

/// The peer's request, then its FIN (a half-close, as `socat` does at its input's end).
async fn question_then_fin(peer: &mut Peer) {
    peer.write_all(b"question").await;
    peer.0.shutdown(std::net::Shutdown::Write).unwrap();
}

/// Write all of `answer` to the stream (each write must be taken: the peer's FIN does not
/// end the stream's writing), then shut it down.
async fn answer_then_shut_down(st: &mut pipe_io::PipeStream<Sim>, answer: &[u8]) {
    let mut rest = answer;
    while !rest.is_empty() {
        let n = std::future::poll_fn(|cx| st.poll_write(cx, rest))
            .await
            .expect("writable after the FIN");
        rest = &rest[n..];
    }
    std::future::poll_fn(|cx| st.poll_shutdown(cx))
        .await
        .unwrap();
}

/// `accept()` then `into_stream()`: a request and its FIN read in between (the peer sends
/// them once the connection is handed out, and the driver runs before the user's next call)
/// do not cost the stream its write side. Under a real runtime that ordering is a matter of
/// scheduling; here it is forced. The peer gets the whole answer, then the FIN.
#[test]
fn a_fin_read_between_accept_and_into_stream_leaves_the_stream_writable() {
    let sim = Sim::new();
    let s = sim.clone();
    let (req, got) = sim.block_on(Duration::from_secs(60), async move {
        let srv = plain_server(&s).await;
        let mut peer = Peer::connect(&s, srv.local_addr().unwrap());
        let conn = srv.accept().await.unwrap();
        question_then_fin(&mut peer).await;
        // Every task runs each round: the connection's reads the request and the FIN.
        sim::yield_rounds(64).await;
        let mut st = conn.into_stream().expect("still a stream");
        let mut req = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = std::future::poll_fn(|cx| st.poll_read(cx, &mut buf))
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        answer_then_shut_down(&mut st, b"an answer after the peer's FIN").await;
        let got = peer.read_to_eof().await;
        drop(st);
        drop(srv);
        (req, got)
    });
    assert_eq!(req, b"question");
    assert_eq!(got, b"an answer after the peer's FIN");
}

/// `accept()`, then `recv()` and `send()` in message mode: a client that half-closes after
/// its request (as `socat` does at its input's end) gets the answer even when the driver read
/// the FIN after the take; the user's drop then closes the connection.
#[test]
fn a_fin_read_after_accept_leaves_a_message_pipe_answerable() {
    let sim = Sim::new();
    let s = sim.clone();
    let (req, after, got) = sim.block_on(Duration::from_secs(60), async move {
        let srv = plain_server(&s).await;
        let mut peer = Peer::connect(&s, srv.local_addr().unwrap());
        let conn = srv.accept().await.unwrap();
        conn.subscribe(pipe_io::Filter::all()).unwrap();
        question_then_fin(&mut peer).await;
        sim::yield_rounds(64).await;
        let req = conn.recv().await.unwrap().expect("the request").data;
        conn.send(b"answer").await.expect("writable after the FIN");
        let after = conn.recv().await;
        drop(conn);
        let got = peer.read_to_eof().await;
        drop(srv);
        (req, after, got)
    });
    assert_eq!(&req[..], b"question");
    assert_eq!(
        after,
        Err(pipe_io::RecvError::Closed),
        "nothing more to read"
    );
    assert_eq!(got, b"answer");
}

/// A listener with no callbacks is served by `accept()` from the start: a client whose
/// request and FIN the driver read before the first `accept()` call still gets its answer.
#[test]
fn a_fin_read_before_the_first_accept_leaves_the_connection_answerable() {
    let sim = Sim::new();
    let s = sim.clone();
    let got = sim.block_on(Duration::from_secs(60), async move {
        let srv = plain_server(&s).await;
        let mut peer = Peer::connect(&s, srv.local_addr().unwrap());
        question_then_fin(&mut peer).await;
        // Every task runs each round: the listener accepts, the connection's task reads the
        // request and the FIN, all before `accept()` is first called.
        sim::yield_rounds(64).await;
        let conn = srv.accept().await.unwrap();
        let mut st = conn.into_stream().expect("still a stream");
        let mut buf = [0u8; 64];
        let n = std::future::poll_fn(|cx| st.poll_read(cx, &mut buf))
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"question");
        answer_then_shut_down(&mut st, b"answered").await;
        let got = peer.read_to_eof().await;
        drop(st);
        drop(srv);
        got
    });
    assert_eq!(got, b"answered");
}
