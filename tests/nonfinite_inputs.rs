//! NaN and infinities refused where they enter: a --noise .npy, the weights of a diffusers
//! folder, a training state. One-line errors naming the file (or tensor) and the first bad index.
//! Datasets decode to bytes, so their images cannot hold one (checked last).

use ddpm::checkpoint::model::{WEIGHTS_FILE, save_unet};
use ddpm::checkpoint::tensors::serialize_tensors;
use ddpm::model::weights::{HostParams, ParamTable};
use std::path::Path;
use std::process::Command;

fn ddpm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A small model folder (ddpm::fuzz's config), its weights as PyTorch tensors.
fn model(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let config = ddpm::fuzz::config();
    let table = ParamTable::new(&config);
    let params = HostParams::init(&table, 1);
    save_unet(dir, &config, &table, &params).unwrap();
    params.to_torch(&table)
}

#[test]
fn sample_refuses_nan_noise_naming_the_file_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    model(&m);
    let c = ddpm::fuzz::config();
    let noise = dir.path().join("nan.npy");
    let shape = [1, c.in_channels, c.sample_size, c.sample_size];
    ddpm::npy::write_f32(&noise, &shape, &vec![f32::NAN; shape.iter().product()]).unwrap();
    let out = dir.path().join("out.png");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let args = ["sample", "--model", &s(&m), "--n", "1", "--steps", "2", "--device", "cpu"];
    let (ok, text) = ddpm(&[&args[..], &["--noise", &s(&noise), "--out", &s(&out)]].concat());
    assert!(!ok, "{text}");
    assert!(text.contains("nan.npy") && text.contains("index 0"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(!out.exists(), "nothing written");

    // One bad value further in is named by its index too.
    let mut data = vec![0.5f32; shape.iter().product()];
    data[5] = f32::NEG_INFINITY;
    ddpm::npy::write_f32(&noise, &shape, &data).unwrap();
    let (ok, text) = ddpm(&[&args[..], &["--noise", &s(&noise), "--out", &s(&out)]].concat());
    assert!(!ok && text.contains("nan.npy") && text.contains("index 5"), "{text}");
}

#[test]
fn an_inf_weight_is_refused_naming_the_tensor_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = model(dir.path());
    let (name, _, data) = &mut tensors[3];
    data[7] = f32::INFINITY;
    let name = name.clone();
    std::fs::write(dir.path().join(WEIGHTS_FILE), serialize_tensors(&tensors, None).unwrap()).unwrap();
    let err = format!("{:#}", ddpm::checkpoint::model::load_model(dir.path()).err().unwrap());
    assert!(err.contains(WEIGHTS_FILE) && err.contains(&format!("tensor {name}")) && err.contains("index 7"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let (ok, text) = ddpm(&["sample", "--model", &dir.path().to_string_lossy(), "--n", "1", "--device", "cpu"]);
    assert!(!ok && text.contains(&format!("tensor {name}")) && text.contains("index 7"), "{text}");
}

#[test]
fn a_nan_optimizer_moment_in_a_train_state_is_refused() {
    let mut bytes = ddpm::fuzz::seeds("train_state").unwrap().remove(0);
    let table = ParamTable::new(&ddpm::fuzz::config());
    assert!(ddpm::train::checkpoint::parse(&bytes, "state.safetensors", &table).is_ok());
    // Poison the last f32 of the data (the file ends with the last tensor's data).
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = format!("{:#}", ddpm::train::checkpoint::parse(&bytes, "state.safetensors", &table).err().unwrap());
    assert!(err.contains("state.safetensors") && err.contains("non-finite") && err.contains("index"), "{err}");
}

#[test]
fn decoded_dataset_images_are_finite_for_every_byte() {
    use ddpm::data::{Dataset, InMemory};
    let d = InMemory { size: 16, channels: 1, pixels: (0..=255).collect() };
    let img = d.image(0);
    assert_eq!(ddpm::finite::first_non_finite(&img), None);
    assert!(img.iter().all(|v| (-1.0..=1.0).contains(v)));
}
