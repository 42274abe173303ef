//! Checks of the timestep embedding written once: the CUDA backend (emulated or real) against
//! the CPU backend, and any backend against diffusers (tests/fixtures/resample.json, from
//! tests/fixtures/make_resample_fixtures.py). Run on the emulator in tests/embedding.rs and on a
//! GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s, run};
use super::parity::{EXACT, cpu_out, dev_out};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::testing::{assert_close, random_vec, rms, rng_for};

/// Bit for bit: both sides round the same f32 products and quotient and round exp/sin/cos once
/// from double. CUDA's double exp/sin/cos are within 2 double ulps, which changes the float
/// rounding only within ~2^-51 of a rounding midpoint: never, for these fixed inputs.
pub fn parity(gpu: &Gpu) {
    let b = &CudaBackend::new(gpu.clone());
    let rng = &mut rng_for("embedding_parity");
    for batch in [1usize, 3, 130] {
        // Integer timesteps (what samplers pass) and fractional ones, up to the schedule's end.
        let mut t: Vec<f32> = random_vec(rng, batch, 0.0, 1000.0).iter().map(|v| v.floor()).collect();
        t[0] = 999.0;
        if batch > 2 {
            t[1] = 0.0;
            t[2] = random_vec(rng, 1, 0.0, 1000.0)[0];
        }
        let dt = b.upload(&t).unwrap();
        for dim in [1usize, 5, 33, 128, 129] {
            for flip in [false, true] {
                for shift in [0.0, 1.0] {
                    let n = batch * dim;
                    let want = cpu_out(n, |y| CpuBackend.timestep_embedding(&t, dim, flip, shift, y).unwrap());
                    let got = dev_out(b, n, |y| b.timestep_embedding(&dt, dim, flip, shift, y).unwrap());
                    let what = format!("timestep_embedding batch={batch} dim={dim} flip={flip} shift={shift}");
                    assert_close(&what, &got, &want, EXACT, EXACT);
                }
            }
        }
    }
}

/// Largest errors of the timestep embedding against diffusers on CPU PyTorch.
pub struct EmbeddingReport {
    pub max_abs: f32,
    /// The largest error in units of 2^-23 max(|argument|, 1): float32 ulps of the argument.
    pub max_arg_ulps: f64,
}

/// diffusers' get_timestep_embedding for t = [0, 1, 17, 500, 999], dims 128 and 33, both flips,
/// freq_shift 0 and 1: bit for bit against the fixture's correctly rounded variant, and within
/// a few ulps of the argument against PyTorch's CPU float32 math.
pub fn embedding_matches_diffusers<B: Layers>(b: &B) -> EmbeddingReport {
    let f = Fixture::load("resample.json");
    let e = &f.json["timestep_embedding"];
    let t: Vec<f32> = e["timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let dt = b.upload(&t).unwrap();
    let mut report = EmbeddingReport { max_abs: 0.0, max_arg_ulps: 0.0 };
    for case in e["cases"].as_array().unwrap() {
        let dim = case["dim"].as_u64().unwrap() as usize;
        let flip = case["flip_sin_to_cos"].as_bool().unwrap();
        let shift = case["freq_shift"].as_f64().unwrap() as f32;
        let what = format!("timestep_embedding dim={dim} flip={flip} shift={shift}");
        let got = run(b, t.len() * dim, |y| b.timestep_embedding(&dt, dim, flip, shift, y).unwrap());

        let cpu_torch = f32s(&case["y"]);
        let mut ieee = cpu_torch.clone();
        for pair in case["y_ieee_diff"].as_array().unwrap() {
            ieee[pair[0].as_u64().unwrap() as usize] = f32::from_bits(pair[1].as_u64().unwrap() as u32);
        }
        assert_close(&format!("{what} (correctly rounded exp/sin/cos)"), &got, &ieee, EXACT, EXACT);

        // PyTorch's CPU float32 exp, sin and cos (SLEEF/MKL) are within about an ulp, not
        // correctly rounded. One ulp of f_k moves the argument t f_k by up to 2^-23 |t f_k|, its
        // float32 rounding by as much again, and sin/cos pass that on to the result unchanged (they
        // are 1-Lipschitz): allow 4 * 2^-23 |argument| on top of the usual fixture tolerance.
        let (half, atol) = (dim / 2, 1e-5 * rms(&cpu_torch));
        for (i, (&g, &w)) in got.iter().zip(&cpu_torch).enumerate() {
            let (row, j) = (i / dim, i % dim);
            let arg = if j < 2 * half {
                let k = (j % half) as f64;
                t[row] as f64 * (-(10000f64.ln()) * k / (half as f64 - shift as f64)).exp()
            } else {
                0.0
            };
            let ulp_arg = f32::EPSILON as f64 * arg.abs();
            let err = (g - w).abs();
            let allowed = atol + 1e-5 * w.abs() + 4.0 * ulp_arg as f32;
            assert!(
                err <= allowed,
                "{what}: element {i} (t={}, column {j}): got {g} want {w}, error {err:e} > {allowed:e}",
                t[row]
            );
            report.max_abs = report.max_abs.max(err);
            report.max_arg_ulps = report.max_arg_ulps.max(err as f64 / (f32::EPSILON as f64 * arg.abs().max(1.0)));
        }
    }
    report
}
