//! `ddpm sample` against diffusers' pipelines on the tiny random UNet of the fixtures: DDIM from a
//! given --noise, DDPM with --rng torch --seed 0; Philox sampling identical on the CPU backend and
//! the emulated kernels; bad input refused.

mod common;
use common::fixtures::{Fixture, f32s, worst_error};
use ddpm::checkpoint::model::save_unet;
use ddpm::checkpoint::read_tensors;
use ddpm::model::UNetConfig;
use ddpm::model::weights::{HostParams, ParamTable};
use std::path::Path;
use std::process::Command;

fn model_dir(dir: &Path) -> (UNetConfig, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config = UNetConfig::from_json(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    let t = read_tensors(&path).unwrap();
    let table = ParamTable::new(&config);
    let params = t.iter().filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone()))).collect();
    let out = dir.join("model");
    save_unet(&out, &config, &table, &HostParams::from_torch(&table, params).unwrap()).unwrap();
    (config, out.to_string_lossy().into_owned())
}

fn ddpm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn raw(path: &Path) -> Vec<f32> {
    ddpm::npy::read_f32(path).unwrap().1
}

/// The sample fixture and a temporary directory holding the tiny model and the fixture's noise
/// (noise.npy).
struct Setup {
    f: Fixture,
    dir: tempfile::TempDir,
    c: UNetConfig,
    model: String,
    n: usize,
}

fn setup() -> Setup {
    let f = Fixture::load("sample.json");
    let dir = tempfile::tempdir().unwrap();
    let (c, model) = model_dir(dir.path());
    let n = f.json["n"].as_u64().unwrap() as usize;
    ddpm::npy::write_f32(
        &dir.path().join("noise.npy"),
        &[n, c.in_channels, c.sample_size, c.sample_size],
        &f32s(&f.json["noise"]),
    )
    .unwrap();
    Setup { f, dir, c, model, n }
}

impl Setup {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `ddpm sample` of the model on the CPU, 10 steps, 2 images, with `extra` arguments: raw
    /// samples to `stem`.npy (returned), images to `stem`.png.
    fn sample(&self, scheduler: &str, stem: &str, extra: &[&str]) -> Vec<f32> {
        let (raw_path, png) = (self.path(&format!("{stem}.npy")), self.path(&format!("{stem}.png")));
        let mut args = vec!["sample", "--model", &self.model, "--scheduler", scheduler, "--steps", "10", "--n", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--save-raw", &raw_path, "--out", &png, "--device", "cpu"]);
        let (ok, text) = ddpm(&args);
        assert!(ok, "{text}");
        raw(Path::new(&raw_path))
    }
}

#[test]
fn ddim_from_given_noise_matches_diffusers_and_bf16_stays_near_f32() {
    let s = setup();
    let noise = s.path("noise.npy");
    let got = s.sample("ddim", "ddim", &["--noise", &noise]);
    let want = f32s(&s.f.json["ddim_raw"]);
    // diffusers on CPU PyTorch takes MKL's (not correctly rounded) sqrt of abar each step: 1e-4.
    ddpm::testing::assert_close("DDIM raw samples vs DDIMPipeline", &got, &want, 1e-4, 1e-4);
    common::say(&format!(
        "DDIM (10 steps, given noise) vs diffusers: largest abs error {:e}",
        worst_error(&got, &want)
    ));

    // --precision bf16 from the same noise: bf16-sized differences from f32, not f32-sized ones.
    // Each of the 10 forwards is within tests/bf16.rs's 2% of its f32 output and the differences
    // carry through the steps: measured 4.4% on this random (untrained) model, bound 10%.
    let bf16 = s.sample("ddim", "ddim_bf16", &["--noise", &noise, "--precision", "bf16"]);
    let rel = (bf16.iter().zip(&got).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
        / got.iter().map(|&b| (b as f64).powi(2)).sum::<f64>())
    .sqrt();
    common::say(&format!("DDIM (10 steps) with --precision bf16 vs f32: relative L2 difference {rel:.2e}"));
    assert!(rel < 0.1 && rel > 1e-5, "bf16 vs f32 samples: relative L2 {rel}");
}

#[test]
fn ddpm_with_torch_rng_matches_diffusers() {
    let s = setup();
    let (n, c) = (s.n, &s.c);
    let got = s.sample("ddpm", "ddpm", &["--rng", "torch", "--seed", "0"]);
    // The pipeline returns clamp(x / 2 + 0.5, 0, 1) as NHWC.
    let got_images: Vec<f32> = ddpm::layout::nchw_to_nhwc(&got, n, c.out_channels, c.sample_size, c.sample_size)
        .iter()
        .map(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
        .collect();
    let want = f32s(&s.f.json["ddpm_images_nhwc"]);
    ddpm::testing::assert_close("DDPM --rng torch --seed 0 vs DDPMPipeline", &got_images, &want, 1e-4, 1e-4);
    common::say(&format!(
        "DDPM (10 steps, torch seed 0) vs diffusers: largest abs error {:e}",
        worst_error(&got_images, &want)
    ));
    assert!(s.dir.path().join("ddpm.png").is_file());
}

#[test]
fn a_stochastic_solver_with_torch_rng_matches_diffusers() {
    // tests/fixtures/solvers_unet.json's dpm++2m-sde case at epsilon, 10 steps, no Karras: the
    // CLI end to end (the model folder's DDPM config through from_config, torch's draws for x_T
    // and every step), where tests/solvers_unet.rs runs every case through the library.
    let s = setup();
    let f = Fixture::load("solvers_unet.json");
    let case = f.json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"] == "dpm++2m-sde" && c["prediction"] == "epsilon" && c["steps"] == 10 && c["karras"] == false
        })
        .unwrap();
    let seed = case["seed"].to_string();
    let got = s.sample("dpm++2m-sde", "sde", &["--rng", "torch", "--seed", &seed]);
    let want = f32s(&case["raw"]);
    ddpm::testing::assert_close("dpm++2m-sde --rng torch vs diffusers", &got, &want, 1e-4, 1e-5);
    common::say(&format!(
        "dpm++2m-sde (10 steps, torch seed {seed}) via the CLI: largest abs error {:e}",
        worst_error(&got, &want)
    ));
}

#[test]
fn philox_samples_are_the_same_on_cpu_and_emulated_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = model_dir(dir.path());
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    for device in ["cpu", "emulator"] {
        let (ok, text) = ddpm(&[
            "sample",
            "--model",
            &model,
            "--scheduler",
            "ddpm",
            "--steps",
            "8",
            "--n",
            "3",
            "--seed",
            "7",
            "--save-raw",
            &p(&format!("{device}.npy")),
            "--out",
            &p(&format!("{device}.png")),
            "--out-dir",
            &p(device),
            "--device",
            device,
        ]);
        assert!(ok, "{text}");
    }
    let (cpu, emu) = (raw(&dir.path().join("cpu.npy")), raw(&dir.path().join("emulator.npy")));
    // Same Philox noise bits on both; the kernels sum in other orders (f32 rounding, 8 steps).
    ddpm::testing::assert_close("philox samples, emulator vs CPU", &emu, &cpu, 1e-4, 1e-4);
    assert!(dir.path().join("cpu/0002.png").is_file());
}

#[test]
fn bad_sampling_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = model_dir(dir.path());
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    ddpm::npy::write_f32(&dir.path().join("wrong.npy"), &[1, 3, 4, 4], &[0.0; 48]).unwrap();
    let wrong = p("wrong.npy");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sample", "--model", "/no/model"], "/no/model"),
        (vec!["sample", "--model", &model, "--scheduler", "lms"], "--scheduler"),
        (vec!["sample", "--model", &model, "--scheduler", "ddim", "--karras"], "--karras"),
        (vec!["sample", "--model", &model, "--scheduler", "euler", "--eta", "0.5"], "eta"),
        (vec!["sample", "--model", &model, "--scheduler", "pndm", "--karras"], "karras"),
        (vec!["sample", "--model", &model, "--scheduler", "dpm++2m", "--steps", "0"], "steps"),
        (vec!["sample", "--model", &model, "--rng", "numpy"], "--rng"),
        (vec!["sample", "--model", &model, "--n", "0"], "--n"),
        (vec!["sample", "--model", &model, "--steps", "5000"], "between 1 and"),
        (vec!["sample", "--model", &model, "--noise", &wrong, "--n", "2"], "wrong.npy"),
        (vec!["sample", "--model", &model, "--timestep-spacing", "uniform"], "--timestep-spacing"),
        (vec!["sample", "--model", &model, "--device", "tpu"], "invalid value 'tpu' for '--device"),
        (vec!["sample", "--model", &model, "--precision", "fp8"], "--precision"),
    ];
    for (args, what) in cases {
        let (ok, text) = ddpm(&args);
        assert!(!ok && text.contains(what), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    // A bad fast-path switch (SIMD cap, Winograd tile, AMX opt-in, spinning) stops any command with one line.
    for (key, value) in
        [("DDPM_SIMD", "avx9"), ("DDPM_SIMD", ""), ("DDPM_WINOGRAD", "3"), ("DDPM_AMX", "yes"), ("DDPM_SPIN", "on")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(["devices"]).env(key, value).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && text.contains(key) && text.lines().count() == 1, "{key}={value:?}: {text}");
    }
}
