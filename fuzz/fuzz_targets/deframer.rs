//! TCP framing in arbitrary read splits, through the engine: see `pipe_fuzz::deframer`.
//! The harness is shared with `pipe-core/tests/fuzz_corpus.rs`, which replays `fuzz/seeds/deframer/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipe_fuzz::deframer(data));
