//! Issue 12's semantics and Happy Eyeballs (`scenarios::semantics`,
//! `scenarios::happy_eyeballs`) on each runtime (`tokio_rt`, `smol_rt`, `async_std_rt`), the
//! tokio ↔ smol pairs, and multi-threaded executors for the callback-before-recv order.

use std::sync::Arc;

macro_rules! suite {
    ($h:ty) => {
        use conformance_tests::scenarios::*;
        use conformance_tests::{run, Harness};
        use pipe_io::{Family::V4, Family::V6, Proto};

        type H = $h;
        type R = <H as Harness>::R;

        fn go<F: std::future::Future<Output = ()>>(f: impl FnOnce(R) -> F) {
            run::<H, _, _>(f)
        }

        #[test]
        fn unspecified_dest_reports_real_peer_v4() {
            go(|rt| semantics::unspecified_dest_reports_real_peer(rt.clone(), rt, V4))
        }
        #[test]
        fn unspecified_dest_reports_real_peer_v6() {
            go(|rt| semantics::unspecified_dest_reports_real_peer(rt.clone(), rt, V6))
        }
        #[test]
        fn subscription_handler_udp() {
            go(|rt| semantics::subscription_handler(rt.clone(), rt, Proto::Udp))
        }
        #[test]
        fn subscription_handler_tcp() {
            go(|rt| semantics::subscription_handler(rt.clone(), rt, Proto::Tcp))
        }
        #[test]
        fn subscription_handler_on_connection() {
            go(|rt| semantics::subscription_handler_on_connection(rt.clone(), rt))
        }
        #[test]
        fn callback_before_recv() {
            go(|rt| semantics::callback_before_recv(rt, 300))
        }
        #[test]
        fn external_address_validated() {
            go(semantics::external_address_validated)
        }

        #[test]
        fn happy_eyeballs_dead_v6_live_v4() {
            go(happy_eyeballs::dead_v6_live_v4)
        }
        #[test]
        fn happy_eyeballs_live_v6_first_dead_v4() {
            go(happy_eyeballs::live_v6_first_dead_v4)
        }
        #[test]
        fn happy_eyeballs_bind_pins_the_family() {
            go(happy_eyeballs::bind_pins_the_family)
        }
        #[test]
        fn happy_eyeballs_all_refused_lists_every_attempt() {
            go(happy_eyeballs::all_refused_lists_every_attempt)
        }
        #[test]
        fn happy_eyeballs_all_hanging_bounded_by_con_timeout() {
            go(happy_eyeballs::all_hanging_bounded_by_con_timeout)
        }
    };
}

mod tokio_rt {
    suite!(conformance_tests::TokioRt);
}

mod smol_rt {
    suite!(conformance_tests::SmolRt);
}

mod async_std_rt {
    suite!(conformance_tests::AsyncStdRt);
}

macro_rules! mixed {
    ($run:path, $pick:expr) => {
        use conformance_tests::scenarios::*;
        use pipe_io::{Family::V4, Family::V6, Proto};

        #[test]
        fn unspecified_dest_reports_real_peer_v4() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                semantics::unspecified_dest_reports_real_peer(srv, cli, V4)
            })
        }
        #[test]
        fn unspecified_dest_reports_real_peer_v6() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                semantics::unspecified_dest_reports_real_peer(srv, cli, V6)
            })
        }
        #[test]
        fn subscription_handler_udp() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                semantics::subscription_handler(srv, cli, Proto::Udp)
            })
        }
        #[test]
        fn subscription_handler_tcp() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                semantics::subscription_handler(srv, cli, Proto::Tcp)
            })
        }
        #[test]
        fn subscription_handler_on_connection() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                semantics::subscription_handler_on_connection(srv, cli)
            })
        }
    };
}

/// tokio drives the test; the server is tokio's, the clients smol's.
mod mixed_tokio_srv_smol_cli {
    mixed!(conformance_tests::run_tokio_main, |t, s| (t, s));
}

/// smol drives the test, tokio runs on a second thread; the server is smol's, the clients
/// tokio's.
mod mixed_smol_srv_tokio_cli {
    mixed!(conformance_tests::run_smol_main, |t, s| (s, t));
}

/// Rounds of the callback-before-recv scenario on a multi-threaded executor, and messages
/// per round: enough to catch the race it guards against (the reader woken on one thread
/// while the callback job starts on another).
const ROUNDS: usize = 10;
const PER_ROUND: u64 = 300;

/// smol with four threads running one `smol::Executor`: the pipe's tasks, its callback
/// workers and the test body all run on it.
#[test]
fn callback_before_recv_smol_multi_thread() {
    let ex = Arc::new(smol::Executor::<'static>::new());
    let (stop, stopped) = smol::channel::unbounded::<()>();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let ex = ex.clone();
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(ex.run(stopped.recv())))
                .expect("spawn an executor thread")
        })
        .collect();
    let spawner = ex.clone();
    let rt = pipe_smol::Smol::with_spawner(move |f| spawner.spawn(f).detach());
    let body = ex.spawn(async move {
        for _ in 0..ROUNDS {
            conformance_tests::scenarios::semantics::callback_before_recv(rt.clone(), PER_ROUND)
                .await;
        }
    });
    smol::block_on(conformance_tests::within(
        conformance_tests::WATCHDOG,
        "callback before recv, smol, 4 threads",
        body,
    ));
    drop(stop);
    for t in threads {
        let _ = t.join().expect("executor thread");
    }
}

/// tokio's multi-threaded runtime (four workers).
#[test]
fn callback_before_recv_tokio_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let body = tokio::spawn(async {
            for _ in 0..ROUNDS {
                conformance_tests::scenarios::semantics::callback_before_recv(
                    pipe_tokio::Tokio::current(),
                    PER_ROUND,
                )
                .await;
            }
        });
        conformance_tests::within(
            conformance_tests::WATCHDOG,
            "callback before recv, tokio, 4 workers",
            body,
        )
        .await
        .expect("the body panicked");
    });
}
