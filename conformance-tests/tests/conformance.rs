//! The conformance suite: every scenario of `conformance_tests::scenarios`, written once,
//! run on each runtime (`tokio_rt`, `smol_rt`, `async_std_rt`) and on tokio ↔ smol pairs
//! (`mixed_tokio_srv_smol_cli`, `mixed_smol_srv_tokio_cli`). Test names carry the runtime:
//! `cargo test -p conformance-tests --test conformance smol_rt::` runs one runtime.

/// Every scenario on one harness (`$h: Harness`). Two-sided scenarios get the same runtime
/// for both sides.
macro_rules! suite {
    ($h:ty) => {
        #[allow(unused_imports)]
        use conformance_tests::scenarios::*;
        use conformance_tests::{run, Harness};
        use pipe_io::{Family::V4, Family::V6, Framing, Proto};

        type H = $h;
        type R = <H as Harness>::R;

        fn go<F: std::future::Future<Output = ()>>(f: impl FnOnce(R) -> F) {
            run::<H, _, _>(f)
        }

        // echo
        #[test]
        fn tcp_echo_v4() {
            go(|rt| echo::tcp_echo(rt.clone(), rt, V4))
        }
        #[test]
        fn tcp_mixed_sends_arrive_in_order() {
            go(echo::tcp_mixed_sends_arrive_in_order)
        }
        #[test]
        fn tcp_echo_v6() {
            go(|rt| echo::tcp_echo(rt.clone(), rt, V6))
        }
        #[test]
        fn udp_echo_v4() {
            go(|rt| echo::udp_echo(rt.clone(), rt, V4))
        }
        #[test]
        fn udp_echo_v6() {
            go(|rt| echo::udp_echo(rt.clone(), rt, V6))
        }
        #[test]
        fn udp_three_clients_no_crosstalk_v4() {
            go(|rt| echo::udp_three_clients_no_crosstalk(rt.clone(), rt, V4))
        }
        #[test]
        fn udp_three_clients_no_crosstalk_v6() {
            go(|rt| echo::udp_three_clients_no_crosstalk(rt.clone(), rt, V6))
        }
        #[test]
        fn tcp_twenty_clients_v4() {
            go(|rt| echo::tcp_twenty_clients(rt.clone(), rt, V4))
        }
        #[test]
        fn tcp_twenty_clients_v6() {
            go(|rt| echo::tcp_twenty_clients(rt.clone(), rt, V6))
        }

        // deadlines
        #[test]
        fn deadline_idle() {
            go(|rt| deadlines::idle_timeout(rt.clone(), rt))
        }
        #[test]
        fn deadline_first_message() {
            go(deadlines::first_message_timeout)
        }
        #[test]
        fn deadline_write_stall() {
            go(|rt| deadlines::write_stall_timeout(rt.clone(), rt))
        }
        #[test]
        fn deadline_close_flush() {
            go(deadlines::close_flush_deadline)
        }
        #[test]
        fn deadline_short_recv_under_a_long_one() {
            go(deadlines::short_recv_deadline_under_a_long_one)
        }
        #[test]
        fn close_from_accept_hook() {
            go(|rt| deadlines::close_from_accept_hook(rt.clone(), rt))
        }

        // TLS
        #[test]
        fn tls_echo() {
            go(|rt| tls::echo(rt.clone(), rt))
        }
        #[test]
        fn tls_verification() {
            go(|rt| tls::verification(rt.clone(), rt))
        }
        #[test]
        fn tls_mutual() {
            go(|rt| tls::mutual(rt.clone(), rt))
        }
        #[test]
        fn tls_handshake_deadline() {
            go(tls::handshake_deadline)
        }
        #[test]
        fn tls_truncation() {
            go(|rt| tls::truncation(rt.clone(), rt))
        }
        #[test]
        fn tls_bulk_64_mib() {
            go(|rt| tls::bulk(rt.clone(), rt))
        }
        #[test]
        fn tls_larger_than_the_buffer() {
            go(|rt| tls::larger_than_the_buffer(rt.clone(), rt))
        }
        #[test]
        fn tls_wrapped_socket_dedup_and_filters() {
            go(|rt| tls::wrapped_socket_dedup_and_filters(rt.clone(), rt))
        }

        // recv reading its own socket, and giving reading back
        #[test]
        fn handoff_fin_after_recv_returned_is_seen() {
            go(handoff::fin_after_recv_returned_is_seen)
        }
        #[test]
        fn handoff_fin_while_recv_waits() {
            go(handoff::fin_while_recv_waits)
        }
        #[test]
        fn handoff_reset_while_recv_waits() {
            go(handoff::reset_while_recv_waits)
        }
        #[test]
        fn handoff_recv_timeout_gives_reading_back() {
            go(handoff::recv_timeout_gives_reading_back)
        }
        #[test]
        fn handoff_dropped_recv_gives_reading_back() {
            go(handoff::dropped_recv_gives_reading_back)
        }
        #[test]
        fn handoff_two_receivers_and_bursts() {
            go(handoff::two_receivers_and_bursts)
        }
        #[test]
        fn lazy_task_fin_before_any_recv_is_seen() {
            go(handoff::fin_before_any_recv_is_seen)
        }
        #[test]
        fn lazy_task_data_before_any_recv_is_queued() {
            go(handoff::data_before_any_recv_is_queued)
        }
        #[test]
        fn lazy_task_idle_close_is_done_at_once() {
            go(handoff::idle_close_is_done_at_once)
        }
        #[test]
        fn lazy_task_idle_drop_closes() {
            go(handoff::idle_drop_closes)
        }
        #[test]
        fn client_clones_own_it() {
            go(handoff::client_clones_own_it)
        }
        #[test]
        fn recv_returns_at_the_end_while_the_socket_flushes() {
            go(handoff::recv_returns_at_the_end_while_the_socket_flushes)
        }

        // receiving
        #[test]
        fn recv_timeout_is_none() {
            go(recv::recv_timeout_is_none)
        }
        #[test]
        fn recv_unknown_subscription_fails_at_once() {
            go(recv::unknown_subscription_fails_at_once)
        }
        #[test]
        fn subscriptions_regex_and_address_v4() {
            go(|rt| recv::regex_and_address_subscriptions(rt, V4))
        }
        #[test]
        fn subscriptions_regex_and_address_v6() {
            go(|rt| recv::regex_and_address_subscriptions(rt, V6))
        }
        #[test]
        fn subscriptions_ipv6_compressed_and_exploded_are_one() {
            go(recv::ipv6_compressed_and_exploded_are_one)
        }
        #[test]
        fn max_qsize_drops_oldest() {
            go(recv::max_qsize_drops_oldest)
        }
        #[test]
        fn max_qsize_on_accepted_connection() {
            go(|rt| recv::max_qsize_on_accepted_connection(rt.clone(), rt))
        }
        #[test]
        fn dedup_on_off_and_window() {
            go(recv::dedup_on_off_and_window)
        }
        #[test]
        fn dedup_key_ip_vs_ip_port() {
            go(recv::dedup_key_ip_vs_ip_port)
        }
        #[test]
        fn dedup_tcp_frames() {
            go(|rt| recv::dedup_tcp_frames(rt.clone(), rt))
        }
        #[test]
        fn queued_messages_survive_close() {
            go(recv::queued_messages_survive_close)
        }

        // callbacks
        #[test]
        fn callbacks_run_in_order() {
            go(callbacks::callbacks_run_in_order)
        }
        #[test]
        fn panicking_callback_is_isolated_udp() {
            go(|rt| callbacks::panicking_callback_is_isolated(rt.clone(), rt, Proto::Udp))
        }
        #[test]
        fn lone_panicking_callback_is_isolated() {
            go(|rt| callbacks::lone_panicking_callback_is_isolated(rt.clone(), rt))
        }
        #[test]
        fn panicking_callback_is_isolated_tcp() {
            go(|rt| callbacks::panicking_callback_is_isolated(rt.clone(), rt, Proto::Tcp))
        }
        #[test]
        fn up_end_client_local_close() {
            go(|rt| callbacks::up_end_client_local_close(rt.clone(), rt))
        }
        #[test]
        fn up_end_accepted_local_close() {
            go(|rt| callbacks::up_end_accepted_local_close(rt.clone(), rt))
        }
        #[test]
        fn up_end_peer_reset() {
            go(callbacks::up_end_peer_reset)
        }
        #[test]
        fn up_end_server_close() {
            go(|rt| callbacks::up_end_server_close(rt.clone(), rt))
        }
        #[test]
        fn up_end_udp() {
            go(callbacks::up_end_udp)
        }
        #[test]
        fn per_connection_callbacks() {
            go(|rt| callbacks::per_connection_callbacks(rt.clone(), rt))
        }

        // accept
        #[test]
        fn accept_order_v4() {
            go(|rt| accept::accept_order(rt.clone(), rt, V4))
        }
        #[test]
        fn accept_order_v6() {
            go(|rt| accept::accept_order(rt.clone(), rt, V6))
        }
        #[test]
        fn accept_after_departure() {
            go(|rt| accept::accept_after_departure(rt.clone(), rt))
        }

        // relays and reliable UDP
        #[test]
        fn tcp_two_way_relay_v4() {
            go(|rt| relay::tcp_two_way_relay(rt.clone(), rt, V4))
        }
        #[test]
        fn tcp_two_way_relay_v6() {
            go(|rt| relay::tcp_two_way_relay(rt.clone(), rt, V6))
        }
        #[test]
        fn udp_link_v4() {
            go(|rt| relay::udp_link(rt.clone(), rt, V4))
        }
        #[test]
        fn relay_local_pair_backpressure() {
            go(relay::local_pair_backpressure)
        }
        #[test]
        fn udp_link_v6() {
            go(|rt| relay::udp_link(rt.clone(), rt, V6))
        }
        #[test]
        fn reliable_acked_v4() {
            go(|rt| reliable::reliable_acked(rt.clone(), rt, V4))
        }
        #[test]
        fn reliable_acked_v6() {
            go(|rt| reliable::reliable_acked(rt.clone(), rt, V6))
        }
        #[test]
        fn reliable_retries_silent_peer_send_retry_0() {
            go(|rt| reliable::reliable_retries_silent_peer(rt, 0))
        }
        #[test]
        fn reliable_retries_silent_peer_send_retry_2() {
            go(|rt| reliable::reliable_retries_silent_peer(rt, 2))
        }
        #[test]
        fn reliable_duplicates_suppressed_v4() {
            go(|rt| reliable::reliable_duplicates_suppressed(rt, V4))
        }
        #[test]
        fn reliable_duplicates_suppressed_v6() {
            go(|rt| reliable::reliable_duplicates_suppressed(rt, V6))
        }

        // lifecycle
        #[test]
        fn send_after_close() {
            go(|rt| lifecycle::send_after_close(rt.clone(), rt))
        }
        #[test]
        fn port_reuse_after_close() {
            go(|rt| lifecycle::port_reuse_after_close(rt.clone(), rt))
        }
        #[test]
        fn shared_bind_address() {
            go(lifecycle::shared_bind_address)
        }
        #[test]
        fn wrap_existing_socket_v4() {
            go(|rt| lifecycle::wrap_existing_socket(rt.clone(), rt, V4))
        }
        #[test]
        fn wrap_existing_socket_v6() {
            go(|rt| lifecycle::wrap_existing_socket(rt.clone(), rt, V6))
        }
        #[test]
        fn open_socket_v4() {
            go(|rt| lifecycle::open_socket_returns_configured_socket(rt, V4))
        }
        #[test]
        fn open_socket_v6() {
            go(|rt| lifecycle::open_socket_returns_configured_socket(rt, V6))
        }

        // conf keys
        #[test]
        fn conf_dns_timeout() {
            go(conf::dns_timeout_bounds_resolution)
        }
        #[test]
        fn conf_con_timeout() {
            go(conf::con_timeout_bounds_connect)
        }
        #[test]
        fn connect_after_a_retried_syn() {
            go(conf::connect_completes_after_a_retried_syn)
        }
        #[test]
        fn conf_recv_timeout() {
            go(conf::recv_timeout_from_own_conf)
        }
        #[test]
        fn conf_broadcast() {
            go(conf::broadcast_allows_broadcast_sends)
        }
        #[test]
        fn conf_linger() {
            go(|rt| conf::linger_zero_resets(rt.clone(), rt))
        }
        #[test]
        fn conf_reader_limit() {
            go(conf::reader_limit_bounds_chunks)
        }
        #[test]
        fn conf_do_close() {
            go(conf::do_close_false_keeps_socket)
        }

        // framing
        #[test]
        fn framing_length_prefixed() {
            go(framing::length_prefixed_exact_messages)
        }
        #[test]
        fn framing_delimited() {
            go(framing::delimited_exact_messages)
        }
        #[test]
        fn framing_burst_length_prefixed() {
            go(|rt| {
                framing::framed_burst_between_pipes(
                    rt.clone(),
                    rt,
                    Framing::LengthPrefixed { max: 1024 },
                )
            })
        }
        #[test]
        fn framing_burst_delimited() {
            go(|rt| {
                framing::framed_burst_between_pipes(
                    rt.clone(),
                    rt,
                    Framing::Delimited {
                        delim: bytes::Bytes::from_static(b"\n"),
                        max: 1024,
                    },
                )
            })
        }

        // errors
        #[test]
        fn connect_refused_fast_v4() {
            go(|rt| errors::connect_refused_fast(rt, V4))
        }
        #[test]
        fn connect_refused_fast_v6() {
            go(|rt| errors::connect_refused_fast(rt, V6))
        }
        #[test]
        fn dns_failure_distinct_from_connect_failure() {
            go(errors::dns_failure_distinct_from_connect_failure)
        }
        #[test]
        fn family_mismatch() {
            go(errors::family_mismatch)
        }
        #[test]
        fn bad_destinations() {
            go(errors::bad_destinations)
        }
        #[test]
        fn udp_too_large() {
            go(|rt| errors::udp_too_large(rt.clone(), rt))
        }
        #[test]
        fn udp_server_send_without_dest() {
            go(|rt| errors::udp_server_send_without_dest(rt.clone(), rt))
        }
        #[test]
        fn misuse_is_typed() {
            go(errors::misuse_is_typed)
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

/// Two-sided scenarios with the server on one runtime and the client on the other.
/// `$run` drives the test (`run_tokio_main` or `run_smol_main`); `$pick` turns its
/// `(tokio, smol)` runtimes into `(server, client)`.
macro_rules! mixed {
    ($run:path, $pick:expr) => {
        use conformance_tests::scenarios::*;
        use pipe_io::{Family::V4, Family::V6, Framing, Proto};

        #[test]
        fn tcp_echo_v4() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                echo::tcp_echo(srv, cli, V4)
            })
        }
        #[test]
        fn tcp_echo_v6() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                echo::tcp_echo(srv, cli, V6)
            })
        }
        #[test]
        fn udp_echo_v4() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                echo::udp_echo(srv, cli, V4)
            })
        }
        #[test]
        fn udp_three_clients_no_crosstalk() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                echo::udp_three_clients_no_crosstalk(srv, cli, V6)
            })
        }
        #[test]
        fn tcp_twenty_clients() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                echo::tcp_twenty_clients(srv, cli, V4)
            })
        }
        #[test]
        fn tcp_two_way_relay() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                relay::tcp_two_way_relay(srv, cli, V4)
            })
        }
        #[test]
        fn udp_link() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                relay::udp_link(srv, cli, V4)
            })
        }
        #[test]
        fn reliable_acked() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                reliable::reliable_acked(srv, cli, V4)
            })
        }
        #[test]
        fn accept_order() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                accept::accept_order(srv, cli, V4)
            })
        }
        #[test]
        fn up_end_server_close() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                callbacks::up_end_server_close(srv, cli)
            })
        }
        #[test]
        fn panicking_callback_is_isolated() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                callbacks::panicking_callback_is_isolated(srv, cli, Proto::Tcp)
            })
        }
        #[test]
        fn conf_linger() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                conf::linger_zero_resets(srv, cli)
            })
        }
        #[test]
        fn framing_burst_length_prefixed() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                framing::framed_burst_between_pipes(srv, cli, Framing::LengthPrefixed { max: 1024 })
            })
        }
        #[test]
        fn udp_too_large() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                errors::udp_too_large(srv, cli)
            })
        }
        #[test]
        fn per_connection_callbacks() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                callbacks::per_connection_callbacks(srv, cli)
            })
        }
        #[test]
        fn deadline_idle() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                deadlines::idle_timeout(srv, cli)
            })
        }
        #[test]
        fn tls_echo() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                tls::echo(srv, cli)
            })
        }
        #[test]
        fn tls_verification() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                tls::verification(srv, cli)
            })
        }
        #[test]
        fn tls_bulk_64_mib() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                tls::bulk(srv, cli)
            })
        }
        #[test]
        fn tls_mutual() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                tls::mutual(srv, cli)
            })
        }
        #[test]
        fn tls_truncation() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                tls::truncation(srv, cli)
            })
        }
        #[test]
        fn tls_wrapped_socket_dedup_and_filters() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                tls::wrapped_socket_dedup_and_filters(srv, cli)
            })
        }
        #[test]
        fn close_from_accept_hook() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                deadlines::close_from_accept_hook(srv, cli)
            })
        }
        #[test]
        fn wrap_existing_socket() {
            $run(|t, s| {
                let (srv, cli) = $pick(t, s);
                lifecycle::wrap_existing_socket(srv, cli, V4)
            })
        }
    };
}

/// tokio drives the test; the server is tokio's, the clients smol's.
mod mixed_tokio_srv_smol_cli {
    mixed!(conformance_tests::run_tokio_main, |t, s| (t, s));
}

/// smol drives the test, tokio runs on a second thread; the server is smol's, the clients
/// tokio's (so tokio pipes are awaited from outside their runtime's thread).
mod mixed_smol_srv_tokio_cli {
    mixed!(conformance_tests::run_smol_main, |t, s| (s, t));
}
