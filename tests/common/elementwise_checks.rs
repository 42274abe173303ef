//! Checks of the elementwise layer ops (add_scaled, div_scalar, add_channel_bias, channel_sum,
//! concat/split_channels) and of fill and axpy, written once: the CUDA backend (emulated or real)
//! against the CPU backend, and any backend against PyTorch (tests/fixtures/resample.json, from
//! tests/fixtures/make_resample_fixtures.py). Run on the emulator in tests/elementwise.rs and on a
//! GPU in tests/gpu.rs.

use super::fixtures::{Fixture, check_fixture as check, dims, f32s, run};
use super::parity::{EXACT, IMAGES, SIZES, bits, cpu_out, dev_out, poisoned};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::nchw_to_nhwc;
use ddpm::shapes::ImageShape;
use ddpm::testing::{assert_close, random_vec, rng_for};
use rand::rngs::StdRng;

/// (rows, c1, c2) for concatenation, including an empty side.
const CONCATS: &[(usize, usize, usize)] = &[(1, 1, 1), (7, 3, 33), (45, 64, 33), (2048, 64, 64), (5, 0, 3), (4, 2, 0)];

pub fn fill(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("fill");
    for &n in SIZES {
        let value = random_vec(&mut rng, 1, -5.0, 5.0)[0];
        let mut want = vec![f32::NAN; n];
        CpuBackend.fill(&mut want, value).unwrap();
        let mut out = poisoned(&b, n);
        b.fill(&mut out, value).unwrap();
        assert_close(&format!("fill n={n}"), &b.download(&out).unwrap(), &want, 0.0, 0.0);
    }
}

pub fn axpy(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("axpy");
    for &n in SIZES {
        let (x, y0) = (random_vec(&mut rng, n, -2.0, 2.0), random_vec(&mut rng, n, -2.0, 2.0));
        let a = random_vec(&mut rng, 1, -3.0, 3.0)[0];
        let mut want = y0.clone();
        CpuBackend.axpy(a, &x, &mut want).unwrap();
        let dx = b.upload(&x).unwrap();
        let mut dy = b.upload(&y0).unwrap();
        b.axpy(a, &dx, &mut dy).unwrap();
        // Both sides use one fused multiply-add per element: bitwise equal.
        assert_close(&format!("axpy n={n}"), &b.download(&dy).unwrap(), &want, 0.0, 0.0);
    }
}

/// Every elementwise layer op on `gpu` (emulated or real) against the CPU backend (fill and axpy
/// are checks of their own).
pub fn layer_parity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("elementwise_parity");
    residual_adds(&b, &mut rng);
    channel_bias_and_sum(&b, &mut rng);
    concat_split(&b, &mut rng);
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

/// The elementwise ops against PyTorch: cat on channels, a broadcast [n, c, 1, 1] add and
/// (a + b) / 1.41, each with the gradients of sum(r * y). Returns (tensor, largest abs error,
/// largest rel error) per compared tensor.
pub fn ops_match_torch<B: Layers>(b: &B) -> Vec<(String, f32, f32)> {
    let f = Fixture::load("resample.json");
    let mut report = Vec::new();
    let up = |v: &[f32]| b.upload(v).unwrap();

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
