//! Checks of nearest 2x upsampling and its backward written once: the CUDA backend (emulated or
//! real) against the CPU backend, and any backend against PyTorch (tests/fixtures/resample.json,
//! from tests/fixtures/make_resample_fixtures.py). Run on the emulator in tests/resample.rs and on
//! a GPU in tests/gpu.rs.

use super::fixtures::{Fixture, check_fixture as check, dims, f32s, run};
use super::parity::{EXACT, IMAGES, bits, cpu_out, dev_out};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::nchw_to_nhwc;
use ddpm::shapes::ImageShape;
use ddpm::testing::{assert_close, random_vec, rng_for};

/// Upsampling forward and backward on `gpu` (emulated or real) against the CPU backend.
pub fn parity(gpu: &Gpu) {
    let b = &CudaBackend::new(gpu.clone());
    let rng = &mut rng_for("resample_parity");
    for s in IMAGES {
        let n = s.len();
        let x = random_vec(rng, n, -2.0, 2.0);
        let want = cpu_out(4 * n, |y| CpuBackend.upsample_nearest2x_fwd(s, &x, y).unwrap());
        let dx = b.upload(&x).unwrap();
        let got = dev_out(b, 4 * n, |y| b.upsample_nearest2x_fwd(s, &dx, y).unwrap());
        assert_close(&format!("upsample_nearest2x_fwd {s:?}"), &got, &want, EXACT, EXACT);

        let dy = random_vec(rng, 4 * n, -1.0, 1.0);
        let want = cpu_out(n, |g| CpuBackend.upsample_nearest2x_bwd(s, &dy, g).unwrap());
        let ddy = b.upload(&dy).unwrap();
        let first = dev_out(b, n, |g| b.upsample_nearest2x_bwd(s, &ddy, g).unwrap());
        assert_close(&format!("upsample_nearest2x_bwd {s:?}"), &first, &want, EXACT, EXACT);
        let again = dev_out(b, n, |g| b.upsample_nearest2x_bwd(s, &ddy, g).unwrap());
        assert_eq!(bits(&first), bits(&again), "upsample_nearest2x_bwd {s:?}: bits differ between two runs");
    }
}

/// Upsampling against PyTorch: interpolate(scale_factor=2, mode="nearest") and the gradient of
/// sum(r * y). Returns (tensor, largest abs error, largest rel error) per compared tensor.
pub fn upsample_matches_torch<B: Layers>(b: &B) -> Vec<(String, f32, f32)> {
    let f = Fixture::load("resample.json");
    let mut report = Vec::new();
    let up = |v: &[f32]| b.upload(v).unwrap();

    let u = &f.json["upsample"];
    let [n, c, h, w] = dims(&u["shape"])[..] else { panic!("upsample shape") };
    let s = ImageShape { batch: n, h, w, c };
    let x = nchw_to_nhwc(&f32s(&u["x"]), n, c, h, w);
    let r = nchw_to_nhwc(&f32s(&u["r"]), n, c, 2 * h, 2 * w);
    let y = run(b, 4 * s.len(), |y| b.upsample_nearest2x_fwd(&s, &up(&x), y).unwrap());
    check(&mut report, "upsample y", &y, &nchw_to_nhwc(&f32s(&u["y"]), n, c, 2 * h, 2 * w));
    let dx = run(b, s.len(), |g| b.upsample_nearest2x_bwd(&s, &up(&r), g).unwrap());
    check(&mut report, "upsample dx", &dx, &nchw_to_nhwc(&f32s(&u["dx"]), n, c, h, w));

    report
}
