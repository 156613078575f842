//! STUN decode: see `pipe_fuzz::stun_decode` (fuzz/src/lib.rs).
//! The harness is shared with `pipe-core/tests/fuzz_corpus.rs`, which replays `fuzz/seeds/stun_decode/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipe_fuzz::stun_decode(data));
