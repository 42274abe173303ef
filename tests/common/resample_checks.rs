//! Checks of the resample and embedding ops written once: the CUDA backend (emulated or real)
//! against the CPU backend, and any backend against PyTorch / diffusers
//! (tests/fixtures/make_resample_fixtures.py). Run on the emulator in tests/resample.rs and on a
//! GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::nchw_to_nhwc;
use ddpm::shapes::ImageShape;
use ddpm::testing::{assert_close, random_vec, rms, rng_for};
use rand::rngs::StdRng;

type Buf = <CudaBackend as Backend>::Buf;

/// Every op but channel_sum does the same correctly rounded f32 operations in the same order on
/// both backends (copies, one add, one true division; the embedding's exp/sin/cos evaluated in
/// double and rounded once), so they must agree bit for bit.
const EXACT: f32 = 0.0;

/// Channels 1, 3, 33 and 64 (not multiples of 32; more than one 32-channel tile), H != W, batch 1
/// and 3, and one image batch spanning hundreds of 256-thread blocks.
const IMAGES: &[ImageShape] = &[
    ImageShape { batch: 1, h: 1, w: 1, c: 1 },
    ImageShape { batch: 3, h: 5, w: 7, c: 1 },
    ImageShape { batch: 1, h: 4, w: 9, c: 3 },
    ImageShape { batch: 3, h: 6, w: 3, c: 33 },
    ImageShape { batch: 2, h: 32, w: 32, c: 64 },
];

/// (rows, c1, c2) for concatenation, including an empty side.
const CONCATS: &[(usize, usize, usize)] = &[(1, 1, 1), (7, 3, 33), (45, 64, 33), (2048, 64, 64), (5, 0, 3), (4, 2, 0)];

fn poisoned(b: &CudaBackend, n: usize) -> Buf {
    b.upload(&vec![f32::NAN; n]).unwrap()
}

fn cpu_out(n: usize, run: impl FnOnce(&mut Vec<f32>)) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    run(&mut out);
    out
}

fn dev_out(b: &CudaBackend, n: usize, run: impl FnOnce(&mut Buf)) -> Vec<f32> {
    let mut out = poisoned(b, n);
    run(&mut out);
    b.download(&out).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every resample and embedding op on `gpu` (emulated or real) against the CPU backend.
pub fn parity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("resample_parity");
    residual_adds(&b, &mut rng);
    channel_bias_and_sum(&b, &mut rng);
    upsample(&b, &mut rng);
    concat_split(&b, &mut rng);
    embedding(&b, &mut rng);
}

fn residual_adds(b: &CudaBackend, rng: &mut StdRng) {
    for s in IMAGES {
        let n = s.len();
        let (a, c) = (random_vec(rng, n, -2.0, 2.0), random_vec(rng, n, -2.0, 2.0));
        let (da, dc) = (b.upload(&a).unwrap(), b.upload(&c).unwrap());
        for divisor in [1.0, 1.41, std::f32::consts::SQRT_2] {
            let want = cpu_out(n, |y| CpuBackend.add_scaled(&a, &c, divisor, y).unwrap());
            let got = dev_out(b, n, |y| b.add_scaled(&da, &dc, divisor, y).unwrap());
            assert_close(&format!("add_scaled {s:?} / {divisor}"), &got, &want, EXACT, EXACT);
            let want = cpu_out(n, |y| CpuBackend.div_scalar(&a, divisor, y).unwrap());
            let got = dev_out(b, n, |y| b.div_scalar(&da, divisor, y).unwrap());
            assert_close(&format!("div_scalar {s:?} / {divisor}"), &got, &want, EXACT, EXACT);
        }
    }
}

fn channel_bias_and_sum(b: &CudaBackend, rng: &mut StdRng) {
    for s in IMAGES {
        let (n, hw) = (s.len(), s.h * s.w);
        let (x, v) = (random_vec(rng, n, -2.0, 2.0), random_vec(rng, s.batch * s.c, -2.0, 2.0));
        let want = cpu_out(n, |y| CpuBackend.add_channel_bias(s, &x, &v, y).unwrap());
        let (dx, dv) = (b.upload(&x).unwrap(), b.upload(&v).unwrap());
        let got = dev_out(b, n, |y| b.add_channel_bias(s, &dx, &dv, y).unwrap());
        assert_close(&format!("add_channel_bias {s:?}"), &got, &want, EXACT, EXACT);

        // The reference sums in f64 and rounds once; any f32 summation order of hw terms is within
        // (hw - 1) 2^-24 sum|dy| of the exact sum (Higham, Accuracy and Stability, eq. 4.4), so the
        // two differ by at most hw 2^-24 sum|dy|.
        let dy = random_vec(rng, n, -1.0, 1.0);
        let abs: Vec<f32> = dy.iter().map(|d| d.abs()).collect();
        let abs_sums = cpu_out(s.batch * s.c, |o| CpuBackend.channel_sum(s, &abs, o).unwrap());
        let atol = hw as f32 * f32::EPSILON / 2.0 * abs_sums.iter().fold(0f32, |m, &a| m.max(a));
        let want = cpu_out(s.batch * s.c, |o| CpuBackend.channel_sum(s, &dy, o).unwrap());
        let ddy = b.upload(&dy).unwrap();
        let first = dev_out(b, s.batch * s.c, |o| b.channel_sum(s, &ddy, o).unwrap());
        assert_close(&format!("channel_sum {s:?}"), &first, &want, atol, 0.0);
        let again = dev_out(b, s.batch * s.c, |o| b.channel_sum(s, &ddy, o).unwrap());
        assert_eq!(bits(&first), bits(&again), "channel_sum {s:?}: bits differ between two runs");

        // Multiples of 2^-10 in [-1, 1] sum exactly in f32 in any order (every partial sum is a
        // multiple of 2^-10 below 2^14): which elements are summed is then checked bit for bit.
        let dyadic: Vec<f32> = dy.iter().map(|d| (d * 1024.0).round() / 1024.0).collect();
        let want = cpu_out(s.batch * s.c, |o| CpuBackend.channel_sum(s, &dyadic, o).unwrap());
        let ddy = b.upload(&dyadic).unwrap();
        let got = dev_out(b, s.batch * s.c, |o| b.channel_sum(s, &ddy, o).unwrap());
        assert_close(&format!("channel_sum of dyadic values {s:?}"), &got, &want, EXACT, EXACT);
    }
}

fn upsample(b: &CudaBackend, rng: &mut StdRng) {
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

fn concat_split(b: &CudaBackend, rng: &mut StdRng) {
    for &(rows, c1, c2) in CONCATS {
        let (n1, n2, n) = (rows * c1, rows * c2, rows * (c1 + c2));
        let (x1, x2) = (random_vec(rng, n1, -2.0, 2.0), random_vec(rng, n2, -2.0, 2.0));
        let want = cpu_out(n, |y| CpuBackend.concat_channels(rows, c1, c2, &x1, &x2, y).unwrap());
        let (d1, d2) = (b.upload(&x1).unwrap(), b.upload(&x2).unwrap());
        let got = dev_out(b, n, |y| b.concat_channels(rows, c1, c2, &d1, &d2, y).unwrap());
        assert_close(&format!("concat_channels {rows}x({c1}+{c2})"), &got, &want, EXACT, EXACT);

        let dy = random_vec(rng, n, -1.0, 1.0);
        let (mut want1, mut want2) = (vec![f32::NAN; n1], vec![f32::NAN; n2]);
        CpuBackend.split_channels(rows, c1, c2, &dy, &mut want1, &mut want2).unwrap();
        let ddy = b.upload(&dy).unwrap();
        let (mut g1, mut g2) = (poisoned(b, n1), poisoned(b, n2));
        b.split_channels(rows, c1, c2, &ddy, &mut g1, &mut g2).unwrap();
        assert_close(&format!("split_channels a {rows}x({c1}+{c2})"), &b.download(&g1).unwrap(), &want1, EXACT, EXACT);
        assert_close(&format!("split_channels b {rows}x({c1}+{c2})"), &b.download(&g2).unwrap(), &want2, EXACT, EXACT);
    }
}

/// Bit for bit: both sides round the same f32 products and quotient and round exp/sin/cos once
/// from double. CUDA's double exp/sin/cos are within 2 double ulps, which changes the float
/// rounding only within ~2^-51 of a rounding midpoint: never, for these fixed inputs.
fn embedding(b: &CudaBackend, rng: &mut StdRng) {
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

// ---- against PyTorch / diffusers ----

/// Largest absolute and relative error of `got` against `want`.
pub fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    got.iter().zip(want).fold((0f32, 0f32), |(a, r), (&g, &w)| {
        let e = (g - w).abs();
        (a.max(e), if w != 0.0 { r.max(e / w.abs()) } else { r })
    })
}

/// Fixture tolerance: rtol 1e-5, and an atol of 1e-5 times the tensor's typical (RMS) magnitude,
/// since PyTorch's CPU math is not always correctly rounded. Returns the largest errors.
fn check(report: &mut Vec<(String, f32, f32)>, what: &str, got: &[f32], want: &[f32]) {
    assert_close(what, got, want, 1e-5 * rms(want), 1e-5);
    let (abs, rel) = errors(got, want);
    report.push((what.to_string(), abs, rel));
}

fn dims(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

fn run<B: Layers>(b: &B, n: usize, op: impl FnOnce(&mut B::Buf)) -> Vec<f32> {
    let mut out = b.upload(&vec![f32::NAN; n]).unwrap();
    op(&mut out);
    b.download(&out).unwrap()
}

/// The shape ops against PyTorch: interpolate(scale_factor=2, mode="nearest"), cat on channels,
/// a broadcast [n, c, 1, 1] add and (a + b) / 1.41, each with the gradients of sum(r * y).
/// Returns (tensor, largest abs error, largest rel error) per compared tensor.
pub fn shape_ops_match_torch<B: Layers>(b: &B) -> Vec<(String, f32, f32)> {
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

    let k = &f.json["concat"];
    let [n, c1, h, w] = dims(&k["a_shape"])[..] else { panic!("concat a shape") };
    let [_, c2, _, _] = dims(&k["b_shape"])[..] else { panic!("concat b shape") };
    let rows = n * h * w;
    let (a, bb) = (nchw_to_nhwc(&f32s(&k["a"]), n, c1, h, w), nchw_to_nhwc(&f32s(&k["b"]), n, c2, h, w));
    let y = run(b, rows * (c1 + c2), |y| b.concat_channels(rows, c1, c2, &up(&a), &up(&bb), y).unwrap());
    check(&mut report, "concat y", &y, &nchw_to_nhwc(&f32s(&k["y"]), n, c1 + c2, h, w));
    let r = nchw_to_nhwc(&f32s(&k["r"]), n, c1 + c2, h, w);
    let (mut da, mut db) =
        (b.upload(&vec![f32::NAN; rows * c1]).unwrap(), b.upload(&vec![f32::NAN; rows * c2]).unwrap());
    b.split_channels(rows, c1, c2, &up(&r), &mut da, &mut db).unwrap();
    check(&mut report, "concat da", &b.download(&da).unwrap(), &nchw_to_nhwc(&f32s(&k["da"]), n, c1, h, w));
    check(&mut report, "concat db", &b.download(&db).unwrap(), &nchw_to_nhwc(&f32s(&k["db"]), n, c2, h, w));

    let cb = &f.json["channel_bias"];
    let [n, c, h, w] = dims(&cb["shape"])[..] else { panic!("channel_bias shape") };
    let s = ImageShape { batch: n, h, w, c };
    let (x, v) = (nchw_to_nhwc(&f32s(&cb["x"]), n, c, h, w), f32s(&cb["v"]));
    let y = run(b, s.len(), |y| b.add_channel_bias(&s, &up(&x), &up(&v), y).unwrap());
    check(&mut report, "channel_bias y", &y, &nchw_to_nhwc(&f32s(&cb["y"]), n, c, h, w));
    let r = nchw_to_nhwc(&f32s(&cb["r"]), n, c, h, w);
    let dv = run(b, n * c, |g| b.channel_sum(&s, &up(&r), g).unwrap());
    check(&mut report, "channel_bias dv", &dv, &f32s(&cb["dv"]));

    let add = &f.json["add_scaled"];
    let divisor = f32::from_bits(add["divisor_bits"].as_u64().unwrap() as u32);
    let (a, bb, r) = (f32s(&add["a"]), f32s(&add["b"]), f32s(&add["r"]));
    let y = run(b, a.len(), |y| b.add_scaled(&up(&a), &up(&bb), divisor, y).unwrap());
    check(&mut report, "add_scaled y", &y, &f32s(&add["y"]));
    let grad = run(b, r.len(), |g| b.div_scalar(&up(&r), divisor, g).unwrap());
    check(&mut report, "add_scaled da", &grad, &f32s(&add["da"]));
    check(&mut report, "add_scaled db", &grad, &f32s(&add["db"]));
    report
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
