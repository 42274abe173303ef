//! `ddpm grads` end to end: a diffusers folder written from the tiny-UNet fixture, the fixture's
//! x0/t/eps as .npy files; the gradients it writes match diffusers' to 1e-4 relative, and bad
//! input gives a one-line error and a non-zero exit.

use ddpm::checkpoint::model::save_unet;
use ddpm::checkpoint::read_tensors;
use ddpm::model::UNetConfig;
use ddpm::model::weights::{HostParams, ParamTable};
use std::path::Path;
use std::process::Command;

/// Tensors by name: (shape, values).
type Tensors = std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>;

fn fixture() -> (UNetConfig, Tensors) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    (UNetConfig::from_json(&meta.metadata().as_ref().unwrap()["config"]).unwrap(), read_tensors(&path).unwrap())
}

fn ddpm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A temporary folder holding the fixture's model (as a diffusers folder) and its x0/t/eps.
fn setup() -> (tempfile::TempDir, ParamTable, Tensors) {
    let (config, t) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let table = ParamTable::new(&config);
    let params = t.iter().filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone()))).collect();
    save_unet(&dir.path().join("model"), &config, &table, &HostParams::from_torch(&table, params).unwrap()).unwrap();
    for name in ["x0", "t", "eps"] {
        ddpm::npy::write_f32(&dir.path().join(format!("{name}.npy")), &t[name].0, &t[name].1).unwrap();
    }
    (dir, table, t)
}

#[test]
fn grads_match_diffusers_through_the_command_line() {
    let (dir, table, t) = setup();
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    let (ok, out, err) = ddpm(&[
        "grads",
        "--model",
        &p("model"),
        "--x0",
        &p("x0.npy"),
        "--t",
        &p("t.npy"),
        "--noise",
        &p("eps.npy"),
        "--out",
        &p("g.safetensors"),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{out}{err}");
    let got = read_tensors(&dir.path().join("g.safetensors")).unwrap();
    let (loss, want_loss) = (got["loss"].1[0], t["loss"].1[0]);
    assert!((loss - want_loss).abs() <= 1e-5 * want_loss, "loss {loss} vs {want_loss}");
    // Relative to each tensor's largest gradient, floored at 1e-4 of the largest anywhere: the key
    // projection's bias has a gradient of exactly zero in exact arithmetic (softmax ignores a
    // per-row constant), so both sides hold only rounding noise there.
    let global = t
        .iter()
        .filter(|(k, _)| k.starts_with("grad."))
        .flat_map(|(_, v)| v.1.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    for spec in &table.specs {
        let (g, w) = (&got[&spec.name], &t[&format!("grad.{}", spec.name)]);
        assert_eq!(g.0, w.0, "{}", spec.name);
        let scale = w.1.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-4 * global);
        let err = g.1.iter().zip(&w.1).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err <= 1e-4 * scale, "{}: error {err} vs scale {scale}", spec.name);
    }
    // Bad input: a noise file of the wrong shape, a missing model.
    ddpm::npy::write_f32(&dir.path().join("bad.npy"), &[1, 3, 8, 8], &vec![0.0; 192]).unwrap();
    let (ok, _, err) = ddpm(&[
        "grads",
        "--model",
        &p("model"),
        "--x0",
        &p("x0.npy"),
        "--t",
        &p("t.npy"),
        "--noise",
        &p("bad.npy"),
        "--out",
        &p("g2.safetensors"),
        "--device",
        "cpu",
    ]);
    assert!(!ok && err.contains("bad.npy") && !err.contains("panicked"), "{err}");
    let (ok, _, err) = ddpm(&[
        "grads",
        "--model",
        &p("nowhere"),
        "--x0",
        &p("x0.npy"),
        "--t",
        &p("t.npy"),
        "--noise",
        &p("eps.npy"),
        "--out",
        &p("g3.safetensors"),
    ]);
    assert!(!ok && err.contains("nowhere") && !err.contains("panicked"), "{err}");
}

#[test]
fn grads_in_bf16_through_the_command_line() {
    // --precision bf16 takes effect (the gradients move) and stays within bf16's contract: over
    // all gradients 3% relative L2 of diffusers' f32 ones, the loss within 2% (tests/bf16.rs and
    // tests/cuda_bf16.rs hold the per-op and per-tensor bounds).
    let (dir, table, t) = setup();
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    let args = ["grads", "--model", &p("model"), "--x0", &p("x0.npy"), "--t", &p("t.npy"), "--noise", &p("eps.npy")];
    for (out, precision) in [("g32.safetensors", "f32"), ("g16.safetensors", "bf16")] {
        let (ok, stdout, err) =
            ddpm(&[&args[..], &["--out", &p(out), "--device", "cpu", "--precision", precision]].concat());
        assert!(ok, "{stdout}{err}");
    }
    let got = read_tensors(&dir.path().join("g32.safetensors")).unwrap();
    let bf16 = read_tensors(&dir.path().join("g16.safetensors")).unwrap();
    let want_loss = t["loss"].1[0];
    assert!(
        (bf16["loss"].1[0] - want_loss).abs() <= 2e-2 * want_loss,
        "bf16 loss {} vs {want_loss}",
        bf16["loss"].1[0]
    );
    let (mut diff, mut norm, mut moved) = (0f64, 0f64, false);
    for spec in &table.specs {
        let (g, f, w) = (&bf16[&spec.name].1, &got[&spec.name].1, &t[&format!("grad.{}", spec.name)].1);
        moved |= g.iter().zip(f).any(|(a, b)| a != b);
        diff += g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
        norm += w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>();
    }
    assert!(moved, "--precision bf16 gave the f32 gradients bit for bit");
    assert!((diff / norm).sqrt() <= 3e-2, "bf16 gradients: {:.3e} relative L2", (diff / norm).sqrt());
}
