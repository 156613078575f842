//! Random engine operation sequences: see `pipe_fuzz::engine_ops`.
//! The harness is shared with `pipe-core/tests/fuzz_corpus.rs`, which replays `fuzz/seeds/engine_ops/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipe_fuzz::engine_ops(data));
