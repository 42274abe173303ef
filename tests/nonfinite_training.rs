//! A run that diverges (a learning rate far too large: the weights overflow and the loss becomes
//! NaN or infinite) stops with one line naming the step and keeps the last good checkpoint: nothing
//! is written from the poisoned state. With --skip-nonfinite the bad steps are skipped instead,
//! and a run that cannot recover still stops. Weights that overflow while the loss stays finite are
//! never saved either.

use ddpm::checkpoint::model::load_model;
use ddpm::checkpoint::read_tensors;
use ddpm::model::UNetConfig;
use ddpm::train::checkpoint::{PREV_STATE_FILE, STATE_FILE, saved_step};
use std::path::Path;
use std::process::Command;

fn small() -> UNetConfig {
    UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

/// Trains at learning rate `lr` with a checkpoint every step; returns success and stderr.
fn diverge(dir: &Path, lr: &str, extra: &[&str]) -> (bool, String) {
    let config = dir.join("config.json");
    std::fs::write(&config, small().to_json().to_string()).unwrap();
    let out = dir.join("run");
    let (config, out) = (config.to_string_lossy(), out.to_string_lossy());
    let mut args = vec!["train", "--config", &config, "--device", "cpu", "--batch", "2", "--steps", "30"];
    args.extend(["--lr", lr, "--warmup", "0", "--checkpoint-every", "1", "--samples", "1", "--out", &out]);
    args.extend(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(&args).env("RAYON_NUM_THREADS", "1").output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Every value of every tensor in a safetensors file is finite.
fn all_finite(path: &Path) -> bool {
    read_tensors(path).unwrap().values().all(|(_, v)| v.iter().all(|x| x.is_finite()))
}

/// The step named in "step N: the loss is ...".
fn bad_step(stderr: &str) -> u64 {
    let at = stderr.find("step ").unwrap_or_else(|| panic!("no step named: {stderr}"));
    stderr[at + 5..].split(':').next().unwrap().parse().unwrap_or_else(|_| panic!("no step number: {stderr}"))
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, err) = diverge(tmp.path(), "1e30", &[]);
    assert!(!ok, "a run at --lr 1e30 finished: {err}");
    let line = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("the loss is") && line.contains("training stopped"), "{line}");
    assert!(!err.contains("panicked"), "{err}");
    let step = bad_step(line);
    assert!(step >= 2, "it should diverge after a good first step: {line}");
    let dir = tmp.path().join("run");
    assert!(line.contains(&format!("last good checkpoint (step {})", step - 1)), "{line}");
    // On disk: the state of the step before, finite, and an export of it that loads.
    assert_eq!(saved_step(&dir), Some(step - 1));
    assert!(all_finite(&dir.join(STATE_FILE)), "the checkpoint holds non-finite values");
    assert!(!dir.join(PREV_STATE_FILE).exists() || all_finite(&dir.join(PREV_STATE_FILE)));
    let export = load_model(&dir).unwrap();
    assert!(export.params.values.iter().flatten().all(|v| v.is_finite()), "the export holds non-finite values");
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count() as u64, step - 1, "log lines past the last good step: {log}");
    eprintln!("diverged at step {step}: {line}");
}

#[test]
fn skip_nonfinite_skips_bad_steps_and_still_stops_a_run_that_cannot_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, err) = diverge(tmp.path(), "1e30", &["--skip-nonfinite"]);
    assert!(!ok, "{err}");
    let skipped = err.lines().filter(|l| l.contains("step skipped (--skip-nonfinite)")).count();
    assert_eq!(skipped, ddpm::train::run::MAX_SKIPPED_IN_A_ROW as usize, "{err}");
    let line = err.lines().rev().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.contains("steps in a row skipped"), "{line}");
    // Skipped steps change nothing, and they count: the checkpoints after them hold the last good
    // weights under later step numbers.
    let dir = tmp.path().join("run");
    assert!(all_finite(&dir.join(STATE_FILE)));
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"skipped\":true")).count(), skipped, "{log}");
}

#[test]
fn weights_that_overflow_with_a_finite_loss_are_not_saved() {
    // At a learning rate near f32::MAX the first AdamW step, on a finite loss and finite
    // gradients, overflows weights to infinity: the checkpoint of that step is refused.
    let tmp = tempfile::tempdir().unwrap();
    let (ok, err) = diverge(tmp.path(), "3.4e38", &[]);
    assert!(!ok, "{err}");
    let line = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("step 1: ") && line.contains("NaN or infinite values"), "{line}");
    assert!(line.contains("nothing saved (no checkpoint had been written)"), "{line}");
    assert!(!tmp.path().join("run").join(STATE_FILE).exists());
}
