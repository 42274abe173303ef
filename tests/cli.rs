//! The `ddpm` binary: subcommands run, and a machine without a GPU gets a clear message.

use std::process::Command;

fn ddpm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn kernels_prints_the_resource_table() {
    let (ok, out, err) = ddpm(&["kernels"]);
    assert!(ok, "{err}");
    assert!(out.contains("silu_fwd_f32") && out.contains("sm_80") && out.contains("sm_90a"), "{out}");
}

#[test]
fn devices_reports_the_emulator_and_explains_a_missing_gpu() {
    let (ok, out, err) = ddpm(&["devices"]);
    assert!(ok, "{err}");
    assert!(out.contains("emulator"), "{out}");
    assert!(!err.contains("panicked") && !out.contains("panicked"), "{out}{err}");
    let cuda_line = out.lines().find(|l| l.starts_with("cuda")).expect("a cuda line");
    assert!(cuda_line.contains("cuda:0") || cuda_line.contains("no CUDA device"), "{cuda_line}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let (ok, _, err) = ddpm(&["frobnicate"]);
    assert!(!ok);
    assert!(err.contains("Usage") || err.contains("usage"), "{err}");
}
