//! Every seed of every fuzz target (`fuzz/seeds/<target>/*`), replayed through the target's
//! harness on stable Rust, in every `cargo test`: the harnesses are `fuzz/src/lib.rs`, included
//! here as a module, so the fuzz targets and this test run the same code. A crash the fuzzer
//! finds is minimized (`cargo fuzz tmin`) and added to the seeds, and stays fixed here.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn every_target_has_seeds_and_every_seed_dir_a_target() {
    let mut dirs: Vec<String> = std::fs::read_dir(seeds_dir())
        .expect("fuzz/seeds")
        .map(|d| d.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    dirs.sort();
    let mut targets: Vec<String> = harness::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    targets.sort();
    assert_eq!(dirs, targets);
}

#[test]
fn replay_seeds() {
    for (name, run) in harness::TARGETS {
        let dir = seeds_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|d| d.expect("entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{name}: only {} seeds", files.len());
        for f in files {
            let data = std::fs::read(&f).expect("read seed");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: seed {} fails", f.display());
        }
    }
}

/// Inputs no fuzzer needs to find: the empty input and a few fixed patterns, for every target.
#[test]
fn trivial_inputs() {
    for (_, run) in harness::TARGETS {
        for data in [&[][..], &[0], &[0xff; 64], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] {
            run(data);
        }
    }
}

/// A finding of `engine_ops` (minimized, 63 bytes): one raw TCP send of 68,099 bytes on a pipe
/// with `max_out_bytes: 64` was admitted beside queued bytes and broke `within_caps`. Now a
/// message that does not fit beside what is queued waits, one larger than the whole buffer
/// is taken only into an empty buffer, and `within_caps` allows that one message.
#[test]
fn known_tcp_send_over_within_caps() {
    let dir = seeds_dir().join("../known/engine_ops");
    for f in std::fs::read_dir(dir).expect("fuzz/known/engine_ops") {
        let data = std::fs::read(f.expect("entry").path()).expect("read");
        harness::engine_ops_unclamped(&data);
    }
}
