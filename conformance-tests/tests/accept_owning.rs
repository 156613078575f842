//! `accept()` like `TcpListener` (`scenarios::accept_owning`): a plain accept loop gets every
//! first message of 1,000 clients sending at once (tokio and smol, IPv4; 200 on IPv6), only
//! accepted handles own their connection, and `accept()` on a pipe that is not a listener
//! fails at once. On each runtime and on the tokio ↔ smol pairs.

macro_rules! suite {
    ($h:ty) => {
        use conformance_tests::scenarios::accept_owning;
        use conformance_tests::{run, Harness};
        use pipe_io::Family::{V4, V6};

        type H = $h;
        type R = <H as Harness>::R;

        fn go<F: std::future::Future<Output = ()>>(f: impl FnOnce(R) -> F) {
            run::<H, _, _>(f)
        }

        #[test]
        fn accept_loop_gets_every_first_message_1000_v4() {
            go(|rt| accept_owning::accept_loop_gets_every_first_message(rt.clone(), rt, V4, 1000))
        }
        #[test]
        fn accept_loop_gets_every_first_message_v6() {
            go(|rt| accept_owning::accept_loop_gets_every_first_message(rt.clone(), rt, V6, 200))
        }
        #[test]
        fn only_accepted_handles_own() {
            go(|rt| accept_owning::only_accepted_handles_own(rt.clone(), rt))
        }
        #[test]
        fn accept_on_a_non_listener_fails_at_once() {
            go(|rt| accept_owning::accept_on_a_non_listener_fails_at_once(rt.clone(), rt))
        }
        #[test]
        fn cancelled_accept_and_recv_lose_nothing() {
            go(|rt| accept_owning::cancelled_accept_and_recv_lose_nothing(rt.clone(), rt))
        }
    };
}

mod tokio_rt {
    suite!(conformance_tests::TokioRt);
}

mod smol_rt {
    suite!(conformance_tests::SmolRt);
}

macro_rules! mixed {
    ($run:path, $pick:expr) => {
        use conformance_tests::scenarios::accept_owning;

        #[test]
        fn only_accepted_handles_own() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                accept_owning::only_accepted_handles_own(srv, cli)
            })
        }
        #[test]
        fn accept_on_a_non_listener_fails_at_once() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                accept_owning::accept_on_a_non_listener_fails_at_once(srv, cli)
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
