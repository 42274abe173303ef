//! The tensor-core attention backward's checks (kernels/attention_bwd_bf16.cu), on any device: run
//! on the emulator by tests/attention_bf16.rs (both fiber orders) and on a GPU by tests/gpu.rs.
//!
//! The backward gets the kernel forward's out' and lse' (f32), and bf16 q, k, v, dout. Its bound
//! against the f64 reference gradient (the same bf16 values, the exact out and lse; the reference
//! is taken as exact), per element, is a running error analysis of every operation the kernels do
//! (the bit-for-bit model in attention_bf16_bwd_model.rs lists them), second-order terms kept:
//! u = 2^-24 (f32), ub = 2^-8 (bf16: 8 significant bits, so round to nearest is off by half a unit
//! of the 8th bit, 2^-8 of the value: not 2^-9, the first version's slip and its missing term),
//! eta = 2^-126 (an f32 or bf16 result below the normal range, flushed or not, is off by less),
//! g(n) = (1 + u)^n - 1, and an mma chain of n k16 steps off by at most G(n) M + 2 n eta with
//! G(n) = (1 + step)^n - 1, step = 17u + 2^-23 (one sm_90 step: 17 terms cut at 2^-25 of the
//! largest, then rounded toward zero; tests/linear_bf16.rs), M the sum of |products| of the
//! operands the mma gets; ns = ceil(d/16) feature steps, nt = ceil(tokens/16) token steps (steps
//! past the last token add zero products and are exact). With c = log2e / sqrt(d), z = c S - lse2:
//! - S_ij by eS = G(ns) sum|q k| + 2 ns eta; y' = fl(S' c'), c' = fl(fl(1/fl(sqrt d)) log2e') is
//!   off by ry = (1 + u)^4 / (1 - u) - 1 of itself: ey = c eS (1 + ry) + ry |y| + eta;
//! - lse2' = fl(lse' log2e'): else2 = log2e (|lse' - lse| + g(2) |lse'|) + eta;
//!   z' = fl(y' - lse2'): ez = ey + else2 + u (|z| + ey + else2) + eta;
//! - P' = exp2f(z') (2 ulp): eP = P (2^ez (1 + 2^-22) - 1) + eta;
//! - dP by edP = G(ns) sum|dO V| + 2 ns eta; D' = the quad's fmaf chains and 2 adds from out':
//!   eD = sum|dO| |out' - out| + g(d/4 + 2) sum|dO out'| + (d/4 + 2) eta;
//! - dP - D by ediff = edP + eD + u (|dP - D| + edP + eD) + eta; dS' = fl(P' diff'):
//!   r = eP (|dP - D| + ediff) + P ediff, edS = r + u (|dS| + r) + eta; rounded to bf16 for the
//!   mma: eSb = edS + ub (|dS| + edS) + eta; P for dV alike: ePb = eP + ub (P + eP) + eta;
//! - dV_jx: acc = sum_i ePb_ij |dO_ix| + G(nt) sum_i (P_ij + ePb_ij) |dO_ix| + 2 nt eta, stored
//!   as fl(1 acc) (exact): the bound is acc + eta;
//! - dQ_ix: acc = sum_j eSb_ij |K_jx| + G(nt) sum_j (|dS_ij| + eSb_ij) |K_jx| + 2 nt eta, stored
//!   as fl(scale' acc'), scale' off by (1 + u) / (1 - u) - 1, so with rq = (1 + u)^2 / (1 - u) - 1:
//!   s (1 + rq) acc + rq |dQ_ix| + eta; dK_jx alike with Q_ix.
//!
//! No factor of safety: the test asserts this bound and prints the worst error as a % of it.

use super::attention_bf16_checks::{Case, random_case, run, shape};
use ddpm::cpu::attention::{attention_bwd, attention_fwd};
use ddpm::cuda::attention_bf16::attention_bwd_bf16;
use ddpm::gpu::{Buffer, Gpu};
use ddpm::shapes::AttentionShape;
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// (batch, tokens, heads, head_dim, amplitude): odd token counts, batch and heads 2, every
/// instantiation (d 40 padded to 64; 256 with dK and dV in separate kernels), one peaked softmax.
pub const BWD_SHAPES: [(usize, usize, usize, usize, f32); 6] = [
    (1, 1, 1, 64, 2.0),
    (2, 37, 2, 32, 2.0),
    (1, 100, 1, 256, 2.0),
    (2, 65, 1, 128, 2.0),
    (1, 70, 1, 40, 2.0),
    (1, 70, 1, 16, 8.0),
];

/// The kernels' gradients (dq, dk, dv, NaN-poisoned first) from the kernel forward's out and lse.
pub fn run_bwd(gpu: &Gpu, c: &Case, dout: &[bf16], fwd: &(Vec<f32>, Vec<f32>)) -> [Vec<f32>; 3] {
    let up = |x: &[bf16]| gpu.upload(x).unwrap();
    let (q, k, v, dout) = (up(&c.q), up(&c.k), up(&c.v), up(dout));
    let (out, lse) = (gpu.upload(&fwd.0).unwrap(), gpu.upload(&fwd.1).unwrap());
    let poisoned = || -> Buffer<f32> { gpu.upload(&vec![f32::NAN; c.s.len()]).unwrap() };
    let (mut dq, mut dk, mut dv) = (poisoned(), poisoned(), poisoned());
    attention_bwd_bf16(&c.s, &q, &k, &v, &out, &lse, &dout, &mut dq, &mut dk, &mut dv).unwrap();
    [&dq, &dk, &dv].map(|b| gpu.download(b).unwrap())
}

fn f64s(x: &[bf16]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// One (image, head)'s rows of a [batch, tokens, heads * d] tensor, as [tokens][d].
fn head_rows(s: &AttentionShape, x: &[f64], b: usize, h: usize) -> Vec<Vec<f64>> {
    let at = |t: usize| ((b * s.tokens + t) * s.heads + h) * s.head_dim;
    (0..s.tokens).map(|t| x[at(t)..at(t) + s.head_dim].to_vec()).collect()
}

fn dot_abs(a: &[f64], b: &[f64]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (x, y)| (s + x * y, m + (x * y).abs()))
}

const U: f64 = 1.0 / 16_777_216.0; // 2^-24
const UB: f64 = 1.0 / 256.0; // 2^-8
const ETA: f64 = 1.175_494_350_822_287_5e-38; // 2^-126

/// (1 + u)^n - 1: n f32 roundings.
fn g(n: usize) -> f64 {
    (1.0 + U).powi(n as i32) - 1.0
}

/// (1 + step)^n - 1: n mma k16 steps.
fn big_g(n: usize) -> f64 {
    (1.0 + 17.0 * U + 2.0 * U).powi(n as i32) - 1.0
}

/// The pre-store bounds of dq, dk, dv's accumulators for one (image, head), [tokens][d] each
/// (the header's acc). `lse_got`: the kernel forward's lse'.
#[allow(clippy::too_many_arguments)]
fn head_bounds(
    s: &AttentionShape,
    [q, k, v, o, o_got, dout]: [&Vec<Vec<f64>>; 6],
    lse: &[f64],
    lse_got: &[f64],
) -> [Vec<Vec<f64>>; 3] {
    let (n, d) = (s.tokens, s.head_dim);
    let (ns, nt) = (d.div_ceil(16), n.div_ceil(16));
    let c = std::f64::consts::LOG2_E / (d as f64).sqrt();
    let ry = (1.0 + U).powi(4) / (1.0 - U) - 1.0;
    let chain = |steps: usize, m: f64| big_g(steps) * m + 2.0 * steps as f64 * ETA;
    let mut bounds = [vec![vec![0f64; d]; n], vec![vec![0f64; d]; n], vec![vec![0f64; d]; n]];
    let mut mags = bounds.clone();
    for i in 0..n {
        let lse2 = lse[i] * std::f64::consts::LOG2_E;
        let else2 = std::f64::consts::LOG2_E * ((lse_got[i] - lse[i]).abs() + g(2) * lse_got[i].abs()) + ETA;
        let (mut big_d, mut ed) = (0.0, 0.0);
        for x in 0..d {
            big_d += dout[i][x] * o[i][x];
            ed += dout[i][x].abs() * (o_got[i][x] - o[i][x]).abs()
                + g(d.div_ceil(4) + 2) * (dout[i][x] * o_got[i][x]).abs();
        }
        ed += (d.div_ceil(4) + 2) as f64 * ETA;
        for j in 0..n {
            let (dot, mag) = dot_abs(&q[i], &k[j]);
            let y = c * dot;
            let ey = c * chain(ns, mag) * (1.0 + ry) + ry * y.abs() + ETA;
            let ez = ey + else2 + U * ((y - lse2).abs() + ey + else2) + ETA;
            let p = (y - lse2).exp2();
            let ep = p * (ez.exp2() * (1.0 + 2f64.powi(-22)) - 1.0) + ETA;
            let (dp, dp_mag) = dot_abs(&dout[i], &v[j]);
            let edp = chain(ns, dp_mag);
            let diff = dp - big_d;
            let ediff = edp + ed + U * (diff.abs() + edp + ed) + ETA;
            let ds = p * diff;
            let r = ep * (diff.abs() + ediff) + p * ediff;
            let eds = r + U * (ds.abs() + r) + ETA;
            let esb = eds + UB * (ds.abs() + eds) + ETA;
            let epb = ep + UB * (p + ep) + ETA;
            for x in 0..d {
                bounds[0][i][x] += esb * k[j][x].abs();
                mags[0][i][x] += (ds.abs() + esb) * k[j][x].abs();
                bounds[1][j][x] += esb * q[i][x].abs();
                mags[1][j][x] += (ds.abs() + esb) * q[i][x].abs();
                bounds[2][j][x] += epb * dout[i][x].abs();
                mags[2][j][x] += (p + epb) * dout[i][x].abs();
            }
        }
    }
    for (b, m) in bounds.iter_mut().zip(&mags) {
        for (br, mr) in b.iter_mut().zip(m) {
            for (bx, mx) in br.iter_mut().zip(mr) {
                *bx += chain(nt, *mx);
            }
        }
    }
    bounds
}

/// The bound of a stored gradient element from its accumulator's bound (dq, dk: g 0, 1; dv: 2).
fn stored_bound(g: usize, d: usize, acc: f64, want: f64) -> f64 {
    if g == 2 {
        return acc + ETA;
    }
    let rq = (1.0 + U).powi(2) / (1.0 - U) - 1.0;
    (1.0 + rq) * acc / (d as f64).sqrt() + rq * want.abs() + ETA
}

/// (a) Random inputs on `BWD_SHAPES`: dq, dk, dv within the bound of the f64 reference gradient.
/// Returns the worst error as a fraction of its bound.
pub fn bwd_within_bound_of_f64(gpu: &Gpu, order: &str) -> f64 {
    let mut rng = StdRng::seed_from_u64(41);
    let mut worst = 0f64;
    for sh in &BWD_SHAPES {
        let c = random_case(&mut rng, shape(sh), sh.4);
        let s = c.s;
        let dout: Vec<bf16> = (0..s.len()).map(|_| bf16::from_f32(rng.random_range(-1.0..1.0))).collect();
        let fwd = run(gpu, &c);
        let got = run_bwd(gpu, &c, &dout, &fwd);
        let (q, k, v, r) = (f64s(&c.q), f64s(&c.k), f64s(&c.v), f64s(&dout));
        let (mut o, mut lse) = (vec![0.0; s.len()], vec![0.0; s.lse_len()]);
        attention_fwd(&s, &q, &k, &v, &mut o, &mut lse);
        let mut want = [vec![0.0; s.len()], vec![0.0; s.len()], vec![0.0; s.len()]];
        let [dq, dk, dv] = &mut want;
        attention_bwd(&s, &q, &k, &v, &o, &lse, &r, dq, dk, dv);
        let o_got: Vec<f64> = fwd.0.iter().map(|&x| x as f64).collect();
        let mut shape_worst = 0f64;
        for (b, h) in (0..s.batch).flat_map(|b| (0..s.heads).map(move |h| (b, h))) {
            let rows = |x: &[f64]| head_rows(&s, x, b, h);
            let stats = (b * s.heads + h) * s.tokens..(b * s.heads + h + 1) * s.tokens;
            let lse_got: Vec<f64> = stats.clone().map(|i| fwd.1[i] as f64).collect();
            let ins = [&rows(&q), &rows(&k), &rows(&v), &rows(&o), &rows(&o_got), &rows(&r)];
            let bounds = head_bounds(&s, ins, &lse[stats], &lse_got);
            for (g, name) in ["dq", "dk", "dv"].iter().enumerate() {
                let (got_rows, want_rows) =
                    (rows(&got[g].iter().map(|&x| x as f64).collect::<Vec<_>>()), rows(&want[g]));
                for (t, x) in (0..s.tokens).flat_map(|t| (0..s.head_dim).map(move |x| (t, x))) {
                    let bound = stored_bound(g, s.head_dim, bounds[g][t][x], want_rows[t][x]);
                    let err = (got_rows[t][x] - want_rows[t][x]).abs();
                    assert!(
                        err <= bound,
                        "{order} {s:?} {name}[{b}][{t}][{h}][{x}] = {}: error {err:e} over {bound:e}",
                        got_rows[t][x]
                    );
                    shape_worst = shape_worst.max(err / bound);
                }
            }
        }
        println!(
            "attention_bwd_bf16 {order} {s:?} amplitude {}: worst error {:.1}% of the bound",
            sh.4,
            100.0 * shape_worst
        );
        worst = worst.max(shape_worst);
    }
    worst
}

/// (b) Determinism: the same inputs twice give the same gradient bits; returns them.
pub fn bwd_deterministic(gpu: &Gpu, order: &str) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut all = Vec::new();
    for sh in [BWD_SHAPES[1], BWD_SHAPES[2]] {
        let c = random_case(&mut rng, shape(&sh), sh.4);
        let dout: Vec<bf16> = (0..c.s.len()).map(|_| bf16::from_f32(rng.random_range(-1.0..1.0))).collect();
        let fwd = run(gpu, &c);
        let bits = |g: [Vec<f32>; 3]| -> Vec<u32> { g.iter().flatten().map(|x| x.to_bits()).collect() };
        let (a, b) = (bits(run_bwd(gpu, &c, &dout, &fwd)), bits(run_bwd(gpu, &c, &dout, &fwd)));
        assert!(a == b, "{order} {:?}: two backward runs differ", c.s);
        all.extend(a);
    }
    all
}
