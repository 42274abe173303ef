//! Reading the JSON fixtures in tests/fixtures (floats stored as float32 bits).

use ddpm::backend::Layers;
use ddpm::testing::{assert_close, rms};
use serde_json::Value;

/// tests/fixtures/`name`: under the source tree the test was built from, or, when that is not
/// there (a test binary carried to a GPU machine by scripts/gpu-check --bundle, run from the
/// repository's root there), under the current directory.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    if built.exists() { built } else { std::path::Path::new("tests/fixtures").join(name) }
}

pub struct Fixture {
    pub json: Value,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = fixture_path(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Fixture { json: serde_json::from_str(&text).unwrap() }
    }
}

/// An array of float32 bit patterns.
pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array of float bits").iter().map(|b| f32::from_bits(b.as_u64().unwrap() as u32)).collect()
}

pub fn worst_error(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

/// Largest absolute and relative error of `got` against `want`.
pub fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    got.iter().zip(want).fold((0f32, 0f32), |(a, r), (&g, &w)| {
        let e = (g - w).abs();
        (a.max(e), if w != 0.0 { r.max(e / w.abs()) } else { r })
    })
}

/// Fixture tolerance: rtol 1e-5, and an atol of 1e-5 times the tensor's typical (RMS) magnitude,
/// since PyTorch's CPU math is not always correctly rounded. Returns the largest errors.
pub fn check_fixture(report: &mut Vec<(String, f32, f32)>, what: &str, got: &[f32], want: &[f32]) {
    assert_close(what, got, want, 1e-5 * rms(want), 1e-5);
    let (abs, rel) = errors(got, want);
    report.push((what.to_string(), abs, rel));
}

pub fn dims(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

pub fn run<B: Layers>(b: &B, n: usize, op: impl FnOnce(&mut B::Buf)) -> Vec<f32> {
    let mut out = b.upload(&vec![f32::NAN; n]).unwrap();
    op(&mut out);
    b.download(&out).unwrap()
}
