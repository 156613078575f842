//! Reliable-UDP frames, decoded and through a reliable pipe: see `pipe_fuzz::rudp_decode`.
//! The harness is shared with `pipe-core/tests/fuzz_corpus.rs`, which replays `fuzz/seeds/rudp_decode/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipe_fuzz::rudp_decode(data));
