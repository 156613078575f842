//! pipe-tokio's clock is tokio's: under `start_paused` time, the engine's deadlines move
//! with `tokio::time::advance`, not with the wall clock.
//!
//! With `std::time::Instant::now()` as the driver's clock (before issue 11), the idle
//! deadline below never passed: tokio's timer fired at the virtual deadline, the engine read
//! the real clock (a few milliseconds later than the start), found the deadline still ahead
//! and re-armed it, and the pipe stayed open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipe_io::{Conf, EndReason, Proto};

/// Let the pipe's tasks run; bounded, so a pipe that never closes fails the test.
async fn settle_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

#[tokio::test(start_paused = true)]
async fn the_idle_deadline_fires_on_tokios_paused_clock() {
    let conf = Conf {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Conf::default()
    };
    // A UDP pipe with a destination that never answers (nothing is sent).
    let p = pipe_tokio::builder(Proto::Udp)
        .dest("127.0.0.1:9")
        .conf(conf)
        .open()
        .await
        .unwrap();
    let reason = Arc::new(Mutex::new(None));
    let r = reason.clone();
    p.add_end_cb(move |why, _| {
        *r.lock().unwrap() = Some(why);
        async {}
    });
    let wall = std::time::Instant::now();
    let start = tokio::time::Instant::now();

    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(
        !settle_until(|| p.is_closed()).await,
        "closed before its deadline"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        settle_until(|| p.is_closed()).await,
        "the idle deadline did not fire after 61 s of tokio time"
    );
    assert!(settle_until(|| reason.lock().unwrap().is_some()).await);
    assert_eq!(*reason.lock().unwrap(), Some(EndReason::IdleTimeout));
    assert!(start.elapsed() >= Duration::from_secs(61));
    assert!(
        wall.elapsed() < Duration::from_secs(30),
        "paused time, not the wall clock"
    );
}

/// A UDP pipe with a destination that never answers (nothing is sent to it).
async fn silent_udp() -> pipe_tokio::Pipe {
    pipe_tokio::builder(Proto::Udp)
        .dest("127.0.0.1:9")
        .open()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn recv_timeout_waits_tokio_time() {
    let p = silent_udp().await;
    let start = tokio::time::Instant::now();
    let wall = std::time::Instant::now();
    // Nothing arrives: tokio advances its paused clock to the deadline.
    assert_eq!(p.recv_timeout(Duration::from_secs(3600)).await, Ok(None));
    assert!(start.elapsed() >= Duration::from_secs(3600));
    assert!(wall.elapsed() < Duration::from_secs(30));
}

/// `recv` waits on the engine's timer (`Engine::recv_wait`), not on a runtime timer of its
/// own: two readers of one pipe with different timeouts each give up at exactly their own
/// deadline of tokio time, the later one after the earlier deadline woke it early.
#[tokio::test(start_paused = true)]
async fn recv_deadlines_fire_on_tokios_paused_clock_each_at_its_own() {
    let p = silent_udp().await;
    let start = tokio::time::Instant::now();
    let short = async {
        let r = p.recv_timeout(Duration::from_secs(3)).await;
        (r, start.elapsed())
    };
    let long = async {
        let r = p.recv_timeout(Duration::from_secs(7)).await;
        (r, start.elapsed())
    };
    // Bounded: a reader nothing wakes would otherwise hang (paused time with no timer left).
    let bound = Duration::from_secs(60);
    let ((r1, t1), (r2, t2)) = tokio::time::timeout(bound, async { tokio::join!(short, long) })
        .await
        .expect("a recv nothing woke");
    assert_eq!(r1, Ok(None));
    assert_eq!(r2, Ok(None));
    // tokio's timer has millisecond resolution.
    let near = |t: Duration, want: u64| {
        t >= Duration::from_secs(want) && t <= Duration::from_secs(want) + Duration::from_millis(2)
    };
    assert!(near(t1, 3), "the 3 s recv returned after {t1:?}");
    assert!(near(t2, 7), "the 7 s recv returned after {t2:?}");
    // A recv with no deadline of its own left still times out (the timer is re-armed).
    let t = tokio::time::Instant::now();
    let r = tokio::time::timeout(bound, p.recv_timeout(Duration::from_millis(1500)))
        .await
        .expect("a recv nothing woke");
    assert_eq!(r, Ok(None));
    assert!(
        near(t.elapsed() + Duration::from_millis(500), 2),
        "{:?}",
        t.elapsed()
    );
}
