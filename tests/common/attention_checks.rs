//! Checks of the attention ops written once over a device: against PyTorch's
//! scaled_dot_product_attention (tests/fixtures/attention.json), and CUDA backend vs CPU backend.
//! Run on the CPU backend and the emulator in tests/attention.rs, on a real GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s};
use super::say;
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::shapes::AttentionShape;
use ddpm::testing::{assert_close, random_vec, rms, rng_for};
use serde_json::Value;

/// Kernel vs CPU reference, both f32, summing in different orders (blocked dots with fused
/// multiply-adds, online-softmax rescaling, gradient sums in another association). At these
/// inputs each is within ~2e-6 of an f64 evaluation (the kernel usually closer) on values up to
/// ~10 in magnitude: 2e-5 absolute plus 1e-4 relative leaves room for a GPU's own contractions
/// and still catches any wrong or missing term.
const PARITY_ATOL: f32 = 2e-5;
const PARITY_RTOL: f32 = 1e-4;

/// (batch, tokens, heads, head_dim): every tile size the launcher picks (64 rows up to head_dim
/// 64, 32 at 100, 16 at 256, 8 at 512), token counts below, at and just past a tile, head_dim 1
/// and odd ones.
pub const PARITY_SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (2, 7, 3, 8),
    (1, 65, 3, 33),
    (2, 130, 1, 64),
    (2, 64, 1, 1),
    (1, 7, 3, 100),
    (1, 64, 1, 256),
    (1, 19, 1, 512),
];

/// [batch, heads, tokens, d] (PyTorch's layout for scaled_dot_product_attention) to the engine's
/// [batch, tokens, heads * d]. ddpm::layout has no head split: it only swaps the two outer axes.
pub fn bhtd_to_btc(x: &[f32], s: &AttentionShape) -> Vec<f32> {
    let (t, h, d) = (s.tokens, s.heads, s.head_dim);
    let mut out = vec![0.0; x.len()];
    for (row, chunk) in x.chunks(d).enumerate() {
        let (b, hi, ti) = (row / (h * t), (row / t) % h, row % t);
        let at = ((b * t + ti) * h + hi) * d;
        out[at..at + d].copy_from_slice(chunk);
    }
    out
}

/// The largest absolute and relative errors, for the report.
fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    got.iter().zip(want).fold((0f32, 0f32), |(a, r), (&g, &w)| {
        let e = (g - w).abs();
        (a.max(e), if w != 0.0 { r.max(e / w.abs()) } else { r })
    })
}

fn shape_of(case: &Value) -> AttentionShape {
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    AttentionShape { batch: n("batch"), tokens: n("tokens"), heads: n("heads"), head_dim: n("head_dim") }
}

/// Forward and backward on `b` against every fixture case; every element within
/// 1e-5 * rms(reference) + rtol * |reference|. Returns the largest (abs, rel) error per tensor
/// (out, lse, dq, dk, dv) over the cases.
pub fn fixtures_match<B: Layers>(b: &B, rtol: f32) -> [(f32, f32); 5] {
    let f = Fixture::load("attention.json");
    let mut worst = [(0f32, 0f32); 5];
    for case in f.json["cases"].as_array().unwrap() {
        let s = shape_of(case);
        let get = |k: &str| bhtd_to_btc(&f32s(&case[k]), &s);
        let up = |name: &str| b.upload(&get(name)).unwrap();
        let (q, k, v, r) = (up("q"), up("k"), up("v"), up("r"));
        let nan = |n: usize| b.upload(&vec![f32::NAN; n]).unwrap();
        let (mut out, mut lse) = (nan(s.len()), nan(s.lse_len()));
        b.attention_fwd(&s, &q, &k, &v, &mut out, &mut lse).unwrap();
        let (mut dq, mut dk, mut dv) = (nan(s.len()), nan(s.len()), nan(s.len()));
        b.attention_bwd(&s, &q, &k, &v, &out, &lse, &r, &mut dq, &mut dk, &mut dv).unwrap();
        let results = [(&out, "out"), (&lse, "lse"), (&dq, "dq"), (&dk, "dk"), (&dv, "dv")];
        for (i, (buf, name)) in results.into_iter().enumerate() {
            // lse is [batch, heads, tokens] in both layouts.
            let want = if name == "lse" { f32s(&case["lse"]) } else { get(name) };
            let got = b.download(buf).unwrap();
            // 1e-5 of the tensor's typical magnitude: room for a few ulps of rounding in
            // elements that are small through cancellation (PyTorch sums in another order).
            let atol = 1e-5 * rms(&want);
            assert_close(&format!("{} {name} {s:?}", b.name()), &got, &want, atol, rtol);
            let (a, r) = errors(&got, &want);
            worst[i] = (worst[i].0.max(a), worst[i].1.max(r));
        }
    }
    worst
}

/// Prints fixtures_match's result, one line per tensor.
pub fn report_fixture_errors(label: &str, worst: &[(f32, f32); 5]) {
    for (name, (a, r)) in ["out", "lse", "dq", "dk", "dv"].iter().zip(worst) {
        say(&format!("attention {label} vs PyTorch {name}: largest abs error {a:.2e}, rel {r:.2e}"));
    }
}

fn assert_same_bits(what: &str, s: &AttentionShape, first: &[Vec<f32>], second: &[Vec<f32>]) {
    let same = first.iter().zip(second).all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(same, "attention {what} {s:?}: two runs differ in their bits");
}

/// Forward and backward on `gpu` (emulated or real) against the CPU backend for every parity
/// shape: fresh inputs, outputs poisoned with NaN, every element compared; each op run twice
/// must give the same bits (every sum has a fixed order).
pub fn parity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("attention_parity");
    let mut worst = [(0f32, 0f32); 5];
    for &(batch, tokens, heads, head_dim) in PARITY_SHAPES {
        let s = AttentionShape { batch, tokens, heads, head_dim };
        // Entries in [-2, 2] give scores of standard deviation ~1.3: softmax rows from flat to
        // peaked, exercising the running-max rescale.
        let mut input = || random_vec(&mut rng, s.len(), -2.0, 2.0);
        let (q, k, v, dout) = (input(), input(), input(), input());
        let (mut out, mut lse) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.lse_len()]);
        CpuBackend.attention_fwd(&s, &q, &k, &v, &mut out, &mut lse).unwrap();
        let mut grads = [vec![f32::NAN; s.len()], vec![f32::NAN; s.len()], vec![f32::NAN; s.len()]];
        let [dq, dk, dv] = &mut grads;
        CpuBackend.attention_bwd(&s, &q, &k, &v, &out, &lse, &dout, dq, dk, dv).unwrap();

        let up = |x: &[f32]| b.upload(x).unwrap();
        let nan = |n: usize| up(&vec![f32::NAN; n]);
        let (gq, gk, gv, gdout) = (up(&q), up(&k), up(&v), up(&dout));
        let run_fwd = || {
            let (mut gout, mut glse) = (nan(s.len()), nan(s.lse_len()));
            b.attention_fwd(&s, &gq, &gk, &gv, &mut gout, &mut glse).unwrap();
            [b.download(&gout).unwrap(), b.download(&glse).unwrap()]
        };
        let fwd = run_fwd();
        assert_same_bits("out and lse", &s, &fwd, &run_fwd());
        let [gout, glse] = fwd;
        let mut check = |i: usize, name: &str, got: Vec<f32>, want: &[f32]| {
            assert_close(&format!("attention {name} {s:?}"), &got, want, PARITY_ATOL, PARITY_RTOL);
            let (a, r) = errors(&got, want);
            worst[i] = (worst[i].0.max(a), worst[i].1.max(r));
        };
        check(0, "out", gout, &out);
        check(1, "lse", glse, &lse);

        // The backward from the CPU's out and lse, so its comparison measures the backward alone.
        let (cout, clse) = (up(&out), up(&lse));
        let run_bwd = || {
            let mut g = [nan(s.len()), nan(s.len()), nan(s.len())];
            let [gdq, gdk, gdv] = &mut g;
            b.attention_bwd(&s, &gq, &gk, &gv, &cout, &clse, &gdout, gdq, gdk, gdv).unwrap();
            g.map(|x| b.download(&x).unwrap())
        };
        let first = run_bwd();
        for (i, (name, (got, want))) in ["dq", "dk", "dv"].iter().zip(first.iter().zip(&grads)).enumerate() {
            check(2 + i, name, got.clone(), want);
        }
        assert_same_bits("dq, dk and dv", &s, &first, &run_bwd());
    }
    for (name, (a, r)) in ["out", "lse", "dq", "dk", "dv"].iter().zip(&worst) {
        say(&format!("attention {} vs CPU {name}: largest abs error {a:.2e}, rel {r:.2e}", gpu.name()));
    }
}
