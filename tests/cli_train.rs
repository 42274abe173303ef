//! `ddpm train` and `ddpm demo` refuse bad input with a one-line error and a non-zero exit.

use std::process::Command;

fn ddpm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn bad_training_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").to_string_lossy().into_owned();
    let bad_idx = dir.path().join("bad.idx");
    std::fs::write(&bad_idx, b"\\x00\\x00\\x08\\x03garbage").unwrap();
    let bad_idx = format!("idx:{}", bad_idx.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--data", "idx:/no/such/file", "--out", &out], "/no/such/file"),
        (vec!["train", "--data", &bad_idx, "--out", &out], "bad.idx"),
        (vec!["train", "--data", "mnist", "--out", &out], "unknown dataset"),
        (vec!["train", "--preset", "huge", "--out", &out], "invalid value 'huge' for '--preset"),
        (vec!["train", "--batch", "0", "--out", &out], "--batch"),
        (vec!["train", "--lr-schedule", "linear", "--out", &out], "--lr-schedule"),
        (vec!["train", "--device", "tpu", "--out", &out], "invalid value 'tpu' for '--device"),
        (vec!["train", "--resume", "--out", &out], "train_state.safetensors"),
        (vec!["train", "--config", "/no/config.json", "--out", &out], "/no/config.json"),
        (vec!["demo", "--device", "tpu"], "invalid value 'tpu' for '--device"),
    ];
    for (args, what) in cases {
        let (ok, text) = ddpm(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(text.contains(what), "{args:?}: {text}");
        assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "{args:?} panicked: {text}");
    }
}

#[test]
fn a_preset_that_does_not_fit_the_data_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A 1x28x28 IDX file: the cifar10 preset halves the size three times, and 28 / 8 is not whole.
    let mut bytes = Vec::new();
    for w in [0x803u32, 2, 28, 28] {
        bytes.extend(w.to_be_bytes());
    }
    bytes.extend(vec![0u8; 2 * 28 * 28]);
    let path = dir.path().join("imgs.idx");
    std::fs::write(&path, bytes).unwrap();
    let data = format!("idx:{}", path.display());
    let out = dir.path().join("run").to_string_lossy().into_owned();
    let (ok, text) = ddpm(&["train", "--data", &data, "--preset", "cifar10", "--out", &out, "--steps", "1"]);
    assert!(!ok && text.contains("sample_size 28") && text.contains("does not fit"), "{text}");
}
