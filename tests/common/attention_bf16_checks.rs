//! The tensor-core attention's checks (kernels/attention_bf16.cu), on any device: run on the
//! emulator by tests/attention_bf16.rs (both fiber orders) and on a GPU by tests/gpu.rs.
//!
//! The forward's bound against the f64 reference (the same bf16 inputs), per output element, with
//! w_j the exact softmax weights of the row and u = 2^-24:
//!   |out - ref| <= (2^-8 + 2E + tiles 2^-21 + (tokens/16 + 1) step + (tokens/4 + 8) u) sum_j w_j |v_j|
//! - 2^-8: P is rounded to bf16 (round to nearest even, 8 significant bits) before P V; the row
//!   sum adds the unrounded f32 p, so each weight moves by at most 2^-8 of itself (half a unit
//!   of the 8th significant bit; the first version said 2^-9);
//! - E: the relative error of each f32 p = exp2(y - m): the scores' mma error (per k16 step at most
//!   step = 17u + 2^-23 of sum |q k|, the model's worst case, see tests/linear_bf16.rs), the f32
//!   scale and log2e (4u of |y|), the subtraction (u |y - m|), exp2f (2 ulp); m is off by at most
//!   the largest score error, hence 2 of it; the weights are ratios, hence 2E;
//! - tiles 2^-21: each online-softmax rescale exp2f(m_old - m) (2 ulp) and its products;
//! - the P V mma steps (step each, of sum p |v|) and the f32 row sum and division.
//!
//! lse: |lse - ref| <= E + tiles 2^-21 + (tokens/4 + 8) u + 2^-22 (1 + |lse| + |m ln 2|).

use ddpm::cpu::attention::attention_fwd;
use ddpm::cuda::attention_bf16::attention_fwd_bf16;
use ddpm::gpu::{Buffer, Gpu};
use ddpm::shapes::AttentionShape;
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// (batch, tokens, heads, head_dim, input amplitude): odd token counts (1, 37, 100 and one past a
/// tile), batch and heads 1 and 2, every instantiation (d 16 and 40 padded to 32 and 64, the
/// largest, 256, with its 32-row key tiles), and one peaked softmax (scores of tens).
pub const SHAPES: [(usize, usize, usize, usize, f32); 7] = [
    (1, 1, 1, 64, 2.0),
    (2, 37, 2, 32, 2.0),
    (1, 100, 1, 256, 2.0),
    (1, 256, 1, 64, 2.0),
    (2, 65, 1, 128, 2.0),
    (1, 130, 2, 40, 2.0),
    (1, 70, 1, 16, 8.0),
];

pub struct Case {
    pub s: AttentionShape,
    pub q: Vec<bf16>,
    pub k: Vec<bf16>,
    pub v: Vec<bf16>,
}

pub fn shape(&(batch, tokens, heads, head_dim, _): &(usize, usize, usize, usize, f32)) -> AttentionShape {
    AttentionShape { batch, tokens, heads, head_dim }
}

/// q and k uniform in (-amp, amp), v in (-1, 1), rounded to bf16.
pub fn random_case(rng: &mut StdRng, s: AttentionShape, amp: f32) -> Case {
    let mut draw = |a: f32| -> Vec<bf16> { (0..s.len()).map(|_| bf16::from_f32(rng.random_range(-a..a))).collect() };
    Case { s, q: draw(amp), k: draw(amp), v: draw(1.0) }
}

/// The kernel's out and lse, both NaN-poisoned first.
pub fn run(gpu: &Gpu, c: &Case) -> (Vec<f32>, Vec<f32>) {
    let (q, k, v) = (gpu.upload(&c.q).unwrap(), gpu.upload(&c.k).unwrap(), gpu.upload(&c.v).unwrap());
    let mut out: Buffer<f32> = gpu.upload(&vec![f32::NAN; c.s.len()]).unwrap();
    let mut lse: Buffer<f32> = gpu.upload(&vec![f32::NAN; c.s.lse_len()]).unwrap();
    attention_fwd_bf16(&c.s, &q, &k, &v, &mut out, &mut lse).unwrap();
    (gpu.download(&out).unwrap(), gpu.download(&lse).unwrap())
}

fn f64s(x: &[bf16]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// Element (b, t, h, x) of a [batch, tokens, heads * d] tensor.
fn at(s: &AttentionShape, b: usize, t: usize, h: usize, x: usize) -> usize {
    ((b * s.tokens + t) * s.heads + h) * s.head_dim + x
}

/// The bound's row factors for query (b, h, i): (relative factor of out, lse bound less its
/// |lse| term, the row's exact weights).
fn row_bound(s: &AttentionShape, q: &[f64], k: &[f64], b: usize, h: usize, i: usize) -> (f64, f64, Vec<f64>) {
    let (d, n) = (s.head_dim, s.tokens);
    let u = 2f64.powi(-24);
    let step = 17.0 * u + 2f64.powi(-23);
    let c = std::f64::consts::LOG2_E / (d as f64).sqrt();
    let (mut y, mut mag) = (vec![0.0; n], 0f64);
    for (j, yj) in y.iter_mut().enumerate() {
        let terms = (0..d).map(|x| q[at(s, b, i, h, x)] * k[at(s, b, j, h, x)]);
        let (dot, abs) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
        *yj = c * dot;
        mag = mag.max(abs);
    }
    let m = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let y_abs = y.iter().fold(0f64, |a, v| a.max(v.abs()));
    let spread = y.iter().fold(0f64, |a, v| a.max(m - v));
    let dy = c * (d.div_ceil(16) + 1) as f64 * step * mag + 4.0 * u * y_abs;
    let e = std::f64::consts::LN_2 * (2.0 * dy + u * spread) + 2f64.powi(-22);
    let tiles = n.div_ceil(if d > 128 { 32 } else { 64 }) as f64;
    let common = tiles * 2f64.powi(-21) + (n / 4 + 8) as f64 * u;
    let rel = 2f64.powi(-8) + 2.0 * e + common + (n.div_ceil(16) + 1) as f64 * step;
    let weights: Vec<f64> = y.iter().map(|v| (v - m).exp2()).collect();
    let total: f64 = weights.iter().sum();
    let lse_fixed = e + common + 2f64.powi(-22) * (1.0 + (m * std::f64::consts::LN_2).abs());
    (rel, lse_fixed, weights.iter().map(|w| w / total).collect())
}

/// (a) Random inputs on `SHAPES`, every element of out and lse within the derived bound of the
/// f64 reference from the same bf16 values. Returns the worst error as a fraction of its bound.
pub fn within_bound_of_f64(gpu: &Gpu, order: &str) -> f64 {
    let mut rng = StdRng::seed_from_u64(31);
    let mut worst = 0f64;
    for sh in &SHAPES {
        let c = random_case(&mut rng, shape(sh), sh.4);
        let s = c.s;
        let (got, got_lse) = run(gpu, &c);
        let before = worst;
        worst = 0.0;
        let (q, k, v) = (f64s(&c.q), f64s(&c.k), f64s(&c.v));
        let (mut want, mut want_lse) = (vec![0.0; s.len()], vec![0.0; s.lse_len()]);
        attention_fwd(&s, &q, &k, &v, &mut want, &mut want_lse);
        for (b, h, i) in
            (0..s.batch).flat_map(|b| (0..s.heads).flat_map(move |h| (0..s.tokens).map(move |i| (b, h, i))))
        {
            let (rel, lse_fixed, w) = row_bound(&s, &q, &k, b, h, i);
            for x in 0..s.head_dim {
                let idx = at(&s, b, i, h, x);
                let mass: f64 = w.iter().enumerate().map(|(j, wj)| wj * v[at(&s, b, j, h, x)].abs()).sum();
                let bound = rel * mass * (1.0 + 2f64.powi(-8)) + 2f64.powi(-100);
                let err = (got[idx] as f64 - want[idx]).abs();
                assert!(
                    err <= bound,
                    "{order} {s:?} out[{b}][{i}][{h}][{x}] = {}: error {err:e} over {bound:e}",
                    got[idx]
                );
                worst = worst.max(err / bound);
            }
            let li = (b * s.heads + h) * s.tokens + i;
            let bound = lse_fixed + 2f64.powi(-22) * want_lse[li].abs();
            let err = (got_lse[li] as f64 - want_lse[li]).abs();
            assert!(err <= bound, "{order} {s:?} lse[{b}][{h}][{i}] = {}: error {err:e} over {bound:e}", got_lse[li]);
        }
        println!(
            "attention_fwd_bf16 {order} {s:?} amplitude {}: worst out error {:.1}% of the bound",
            sh.4,
            100.0 * worst
        );
        worst = worst.max(before);
    }
    worst
}

/// Query and key classes of the exact check: query class 5 matches no key (a uniform row).
fn query_class(b: usize, h: usize, i: usize) -> usize {
    (3 * i + 1 + b + h) % 6
}
fn key_class(b: usize, h: usize, j: usize) -> usize {
    (7 * j + 3 + 2 * b + h) % 5
}

/// (c) Exact: q = 64 e_class(i), k = 64 e_class(j), v small integers. A matching score is
/// 4096 scale (>= 369 in log2 units at d <= 256), any other 0, so p is exactly 1 on the row's
/// matching keys (all keys when none match) and exp2(-369) = 0 elsewhere; every sum is of small
/// integers, exact in any order, and out = sum v / count is one f32 division. Any slip of a row,
/// key, feature or fragment register changes the set or the values: zero tolerance.
pub fn exact_one_hot(gpu: &Gpu, order: &str) {
    for sh in &SHAPES {
        let s = shape(sh);
        let mut q = vec![bf16::ZERO; s.len()];
        let mut k = vec![bf16::ZERO; s.len()];
        let v: Vec<bf16> =
            (0..s.len()).map(|i| bf16::from_f32((((i * 2_654_435_761) >> 7) % 7) as f32 - 3.0)).collect();
        for (b, h, t) in
            (0..s.batch).flat_map(|b| (0..s.heads).flat_map(move |h| (0..s.tokens).map(move |t| (b, h, t))))
        {
            if query_class(b, h, t) < 5 {
                q[at(&s, b, t, h, query_class(b, h, t))] = bf16::from_f32(64.0);
            }
            k[at(&s, b, t, h, key_class(b, h, t))] = bf16::from_f32(64.0);
        }
        let c = Case { s, q, k, v };
        let (got, got_lse) = run(gpu, &c);
        for (b, h, i) in
            (0..s.batch).flat_map(|b| (0..s.heads).flat_map(move |h| (0..s.tokens).map(move |i| (b, h, i))))
        {
            let mut keys: Vec<usize> = (0..s.tokens).filter(|&j| key_class(b, h, j) == query_class(b, h, i)).collect();
            let top = if keys.is_empty() { 0.0 } else { 4096.0 / (s.head_dim as f64).sqrt() };
            if keys.is_empty() {
                keys = (0..s.tokens).collect();
            }
            for x in 0..s.head_dim {
                let sum: f32 = keys.iter().map(|&j| c.v[at(&s, b, j, h, x)].to_f32()).sum();
                let want = sum / keys.len() as f32;
                let idx = at(&s, b, i, h, x);
                assert_eq!(
                    got[idx].to_bits(),
                    want.to_bits(),
                    "{order} {s:?} out[{b}][{i}][{h}][{x}]: {} vs {want}",
                    got[idx]
                );
            }
            let want_lse = top + (keys.len() as f64).ln();
            let li = (b * s.heads + h) * s.tokens + i;
            let err = (got_lse[li] as f64 - want_lse).abs();
            assert!(
                err <= 2f64.powi(-20) * (1.0 + want_lse.abs()),
                "{order} {s:?} lse[{li}] = {}, want {want_lse}",
                got_lse[li]
            );
        }
    }
}

/// (b) Determinism: the same inputs twice give the same bits. Returns them (out then lse), so a
/// caller can compare runs under other settings (the emulator's fiber orders) too.
pub fn deterministic(gpu: &Gpu, order: &str) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(32);
    let mut all = Vec::new();
    for sh in [SHAPES[1], SHAPES[2]] {
        let c = random_case(&mut rng, shape(&sh), sh.4);
        let (a, b) = (run(gpu, &c), run(gpu, &c));
        let bits = |(o, l): &(Vec<f32>, Vec<f32>)| -> Vec<u32> { o.iter().chain(l).map(|x| x.to_bits()).collect() };
        assert!(bits(&a) == bits(&b), "{order} {:?}: two runs differ", c.s);
        all.extend(bits(&a));
    }
    all
}
