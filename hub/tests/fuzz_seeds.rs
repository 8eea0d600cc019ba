//! The committed fuzz corpus as a regression suite: every seed under `fuzz/corpus/<target>/` runs
//! through the function its fuzz target calls (`fuzz/src/lib.rs`, included here as a module),
//! so a parser that panics on, or breaks an invariant for, a seed (the issue 10 attacks, or a
//! crash a fuzz run once found) fails `cargo nextest run` without any fuzzing.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_targets;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, run) = fuzz_targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let files = seeds(target);
    assert!(!files.is_empty(), "no seeds for {target}");
    // Every seed runs; the failing ones are listed together (each panic message above).
    let failing: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).unwrap();
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failing.is_empty(), "{target}: failing seeds {failing:#?}");
}

#[test]
fn every_target_has_seeds_and_every_corpus_a_target() {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut targets: Vec<String> = fuzz_targets::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    targets.sort();
    assert_eq!(dirs, targets);
    for t in &targets {
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/fuzz_targets/{t}.rs"));
        assert!(bin.is_file(), "{} missing", bin.display());
    }
}

#[test]
fn soap_envelope_seeds() {
    replay("soap_envelope");
}

#[test]
fn soap_prelude_seeds() {
    replay("soap_prelude");
}

#[test]
fn sms_kannel_dlr_seeds() {
    replay("sms_kannel_dlr");
}

#[test]
fn sms_json_dlr_seeds() {
    replay("sms_json_dlr");
}

#[test]
fn webhook_wink_seeds() {
    replay("webhook_wink");
}

#[test]
fn webhook_elk_seeds() {
    replay("webhook_elk");
}

#[test]
fn webhook_email_seeds() {
    replay("webhook_email");
}

#[test]
fn communication_json_seeds() {
    replay("communication_json");
}

#[test]
fn hub_config_seeds() {
    replay("hub_config");
}
