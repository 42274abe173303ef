//! A host model of the tensor-core attention backward (kernels/attention_bwd_bf16.cu), bit for
//! bit: every f32 operation the kernels do, in their order, and every mma through the emulator's
//! own model (src/emu/mma_model.cpp) with the kernels' k16 steps. Per (image, head), rows [tokens][d].
//!
//! - S_ij and dP_ij: mma steps over the features kk = 0, 16, .. < d from C = 0 (mma_abt); the
//!   dK/dV kernel's S^T and dP^T = V dO^T have the same terms per step, so the same bits;
//! - P_ij = exp2f(fl(S_ij c) - fl(lse_i log2e)), c = fl(scale log2e), scale = 1 / sqrtf(d);
//! - D_i: lane t of the quad sums fmaf(dO_ix, out_ix, .) over x = t, t + 4, ..; then quad_sum's
//!   (s0 + s1) + (s2 + s3);
//! - dS_ij = P_ij (dP_ij - D_i), rounded to bf16 (like P for dV) as an mma A operand;
//! - dQ_i = fl(scale acc), acc the mma steps over keys 16 at a time from 0; dK_j alike over the
//!   queries with Q, dV_j = fl(1 acc) with bf16(P) and dO. Steps past the last token add zero
//!   products, which leave the accumulator exact, so the tile sizes do not matter.

use super::attention_bf16_bwd_checks::{BWD_SHAPES, run_bwd};
use super::attention_bf16_checks::{random_case, run, shape};
use ddpm::gpu::Gpu;
use ddpm::gpu::mma_model::{MmaArch, mma_dot_bf16};
use ddpm::shapes::AttentionShape;
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// The kernels' intermediates for one (image, head), [query][key] or [query].
pub struct Intermediates {
    pub s: Vec<Vec<f32>>,
    pub p: Vec<Vec<f32>>,
    pub dp: Vec<Vec<f32>>,
    pub delta: Vec<f32>,
    pub ds: Vec<Vec<f32>>,
}

pub fn scale_f32(d: usize) -> f32 {
    1.0 / (d as f32).sqrt()
}

/// c + a . b over the first 16 elements from `at` (zero past the slices' ends), as one mma step.
fn step(a: &[bf16], b: &[bf16], c: f32) -> f32 {
    let mut x = [0u16; 16];
    let mut y = [0u16; 16];
    for k in 0..16 {
        x[k] = a.get(k).map_or(0, |v| v.to_bits());
        y[k] = b.get(k).map_or(0, |v| v.to_bits());
    }
    mma_dot_bf16(MmaArch::Sm90, &x, &y, c).unwrap()
}

/// a . b in the kernels' k16 steps over the features, from 0.
fn feature_dot(a: &[bf16], b: &[bf16]) -> f32 {
    (0..a.len()).step_by(16).fold(0.0, |c, kk| step(&a[kk..(kk + 16).min(a.len())], &b[kk..(kk + 16).min(b.len())], c))
}

/// S, P, dP, D and dS of one head as the kernels compute them.
pub fn intermediates(
    q: &[Vec<bf16>],
    k: &[Vec<bf16>],
    v: &[Vec<bf16>],
    out: &[Vec<f32>],
    lse: &[f32],
    dout: &[Vec<bf16>],
) -> Intermediates {
    let (n, d) = (q.len(), q[0].len());
    let c = scale_f32(d) * std::f32::consts::LOG2_E;
    let delta: Vec<f32> = (0..n)
        .map(|i| {
            let lane = |t: usize| (t..d).step_by(4).fold(0f32, |s, x| dout[i][x].to_f32().mul_add(out[i][x], s));
            (lane(0) + lane(1)) + (lane(2) + lane(3))
        })
        .collect();
    let s: Vec<Vec<f32>> = (0..n).map(|i| (0..n).map(|j| feature_dot(&q[i], &k[j])).collect()).collect();
    let dp: Vec<Vec<f32>> = (0..n).map(|i| (0..n).map(|j| feature_dot(&dout[i], &v[j])).collect()).collect();
    let p: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let lse2 = lse[i] * std::f32::consts::LOG2_E;
            s[i].iter().map(|&sij| (sij * c - lse2).exp2()).collect()
        })
        .collect();
    let ds = (0..n).map(|i| (0..n).map(|j| p[i][j] * (dp[i][j] - delta[i])).collect()).collect();
    Intermediates { s, p, dp, delta, ds }
}

/// acc_r = sum over m of w[r][m] b[m] (w rounded to bf16), in mma steps of 16 m from 0; f32 per
/// feature column of b.
fn weighted_rows(w: &dyn Fn(usize, usize) -> f32, b: &[Vec<bf16>], r: usize, factor: f32) -> Vec<f32> {
    let (n, d) = (b.len(), b[0].len());
    (0..d)
        .map(|x| {
            let acc = (0..n).step_by(16).fold(0f32, |acc, m0| {
                let ms = m0..(m0 + 16).min(n);
                let a: Vec<bf16> = ms.clone().map(|m| bf16::from_f32(w(r, m))).collect();
                let col: Vec<bf16> = ms.map(|m| b[m][x]).collect();
                step(&a, &col, acc)
            });
            factor * acc
        })
        .collect()
}

/// The kernels' dq, dk, dv of one head, [tokens][d] each.
pub fn gradients(m: &Intermediates, q: &[Vec<bf16>], k: &[Vec<bf16>], dout: &[Vec<bf16>]) -> [Vec<Vec<f32>>; 3] {
    let (n, d) = (q.len(), q[0].len());
    let scale = scale_f32(d);
    let dq = (0..n).map(|i| weighted_rows(&|i, j| m.ds[i][j], k, i, scale)).collect();
    let dk = (0..n).map(|j| weighted_rows(&|j, i| m.ds[i][j], q, j, scale)).collect();
    let dv = (0..n).map(|j| weighted_rows(&|j, i| m.p[i][j], dout, j, 1.0)).collect();
    [dq, dk, dv]
}

/// One (image, head)'s rows of a [batch, tokens, heads * d] tensor, as [tokens][d].
pub fn rows_of<T: Copy>(s: &AttentionShape, x: &[T], b: usize, h: usize) -> Vec<Vec<T>> {
    let at = |t: usize| ((b * s.tokens + t) * s.heads + h) * s.head_dim;
    (0..s.tokens).map(|t| x[at(t)..at(t) + s.head_dim].to_vec()).collect()
}

/// (b) Random inputs on `BWD_SHAPES`: dq, dk, dv bit for bit those of the host model.
pub fn bwd_matches_model(gpu: &Gpu, order: &str) {
    let mut rng = StdRng::seed_from_u64(43);
    for sh in &BWD_SHAPES {
        let c = random_case(&mut rng, shape(sh), sh.4);
        let s = c.s;
        let dout: Vec<bf16> = (0..s.len()).map(|_| bf16::from_f32(rng.random_range(-1.0..1.0))).collect();
        let fwd = run(gpu, &c);
        let got = run_bwd(gpu, &c, &dout, &fwd);
        for (b, h) in (0..s.batch).flat_map(|b| (0..s.heads).map(move |h| (b, h))) {
            let (q, k, v, r) =
                (rows_of(&s, &c.q, b, h), rows_of(&s, &c.k, b, h), rows_of(&s, &c.v, b, h), rows_of(&s, &dout, b, h));
            let stats = (b * s.heads + h) * s.tokens..(b * s.heads + h + 1) * s.tokens;
            let m = intermediates(&q, &k, &v, &rows_of(&s, &fwd.0, b, h), &fwd.1[stats], &r);
            let want = gradients(&m, &q, &k, &r);
            for (g, name) in ["dq", "dk", "dv"].iter().enumerate() {
                let got_rows = rows_of(&s, &got[g], b, h);
                for (t, x) in (0..s.tokens).flat_map(|t| (0..s.head_dim).map(move |x| (t, x))) {
                    let (a, w) = (got_rows[t][x], want[g][t][x]);
                    assert!(
                        a.to_bits() == w.to_bits(),
                        "{order} {s:?} {name}[{b}][{t}][{h}][{x}] = {a}, the model's {w}"
                    );
                }
            }
        }
    }
}

/// Classes of the exact check: a query of class 5 matches no key.
fn classes(b: usize, h: usize, t: usize) -> (usize, usize) {
    ((3 * t + 1 + b + h) % 6, (7 * t + 3 + 2 * b + h) % 5)
}

/// (c) Exact: q_i = 64 e_class(i) on features 0..6, k_j = -64 on the class features other than
/// its own (key classes 0..5, so feature 5 is -64 in every key and a query of class 5 matches
/// none), so S is 0 where the classes match and -4096 elsewhere; with lse = 0 supplied, P is
/// exactly exp2f(0) = 1 or exp2f(<= -369) = 0 (any number of matching keys). Past feature 6, q
/// has small integers on even features and k on odd ones (no effect on S; they fill dK and dQ),
/// dO, V and the supplied out are in {-1, 0, 1}. Then dP, D and dS are small integers (|dS| <=
/// 256, exact in bf16, asserted), every mma sum an integer below 2^24, and dq = fl(scale' acc):
/// all three gradients bit for bit, zero tolerance, so a slip in any fragment path shows.
pub fn bwd_exact_one_hot(gpu: &Gpu, order: &str) {
    let mut rng = StdRng::seed_from_u64(44);
    for sh in &BWD_SHAPES {
        let s = shape(sh);
        let mut small = |r: i32| -> f32 { rng.random_range(-r..=r) as f32 };
        let (mut q, mut k) = (vec![0f32; s.len()], vec![0f32; s.len()]);
        let v: Vec<f32> = (0..s.len()).map(|_| small(1)).collect();
        let dout: Vec<f32> = (0..s.len()).map(|_| small(1)).collect();
        let out: Vec<f32> = (0..s.len()).map(|_| small(1)).collect();
        for (b, h, t) in
            (0..s.batch).flat_map(|b| (0..s.heads).flat_map(move |h| (0..s.tokens).map(move |t| (b, h, t))))
        {
            let at = ((b * s.tokens + t) * s.heads + h) * s.head_dim;
            let (qc, kc) = classes(b, h, t);
            q[at + qc] = 64.0;
            (0..6).filter(|&x| x != kc).for_each(|x| k[at + x] = -64.0);
            for x in 6..s.head_dim {
                *(if x % 2 == 0 { &mut q[at + x] } else { &mut k[at + x] }) = small(3);
            }
        }
        let bf = |x: &[f32]| -> Vec<bf16> { x.iter().map(|&v| bf16::from_f32(v)).collect() };
        let c = super::attention_bf16_checks::Case { s, q: bf(&q), k: bf(&k), v: bf(&v) };
        let got = run_bwd(gpu, &c, &bf(&dout), &(out.clone(), vec![0.0; s.lse_len()]));
        let scale = scale_f32(s.head_dim);
        for (b, h) in (0..s.batch).flat_map(|b| (0..s.heads).map(move |h| (b, h))) {
            let [q, k, v, dout, out] = [&q, &k, &v, &dout, &out].map(|x| rows_of(&s, x, b, h));
            let dot = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
            let n = s.tokens;
            let p = |i: usize, j: usize| -> f32 { (classes(b, h, i).0 == classes(b, h, j).1) as u8 as f32 };
            let ds: Vec<Vec<f32>> = (0..n)
                .map(|i| (0..n).map(|j| p(i, j) * (dot(&dout[i], &v[j]) - dot(&dout[i], &out[i]))).collect())
                .collect();
            assert!(
                ds.iter().flatten().all(|x| x.abs() <= 256.0),
                "{s:?}: the exact check's dS leaves bf16's integers"
            );
            let grad = |w: &dyn Fn(usize, usize) -> f32, x: &Vec<Vec<f32>>, r: usize, f: usize| -> f32 {
                let acc: f32 = (0..n).map(|m| w(r, m) * x[m][f]).sum::<f32>() + 0.0; // an mma sum of 0 is +0
                assert!(acc.abs() < 16_777_216.0);
                acc
            };
            for (t, x) in (0..n).flat_map(|t| (0..s.head_dim).map(move |x| (t, x))) {
                let want = [
                    scale * grad(&|i, j| ds[i][j], &k, t, x),
                    scale * grad(&|j, i| ds[i][j], &q, t, x),
                    grad(&|j, i| p(i, j), &dout, t, x),
                ];
                for (g, name) in ["dq", "dk", "dv"].iter().enumerate() {
                    let have = rows_of(&s, &got[g], b, h)[t][x];
                    assert!(
                        have.to_bits() == want[g].to_bits(),
                        "{order} {s:?} {name}[{b}][{t}][{h}][{x}] = {have}, want {}",
                        want[g]
                    );
                }
            }
        }
    }
}
