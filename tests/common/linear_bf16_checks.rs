//! The tensor-core linear forward's and backward's checks (kernels/linear_bf16.cu), on any device:
//! run on the emulator by tests/linear_bf16.rs (both fiber orders) and on a GPU by tests/gpu.rs.

use ddpm::cpu::linear::{linear_bwd_input, linear_bwd_weight};
use ddpm::cuda::linear::{
    linear_bwd_input_bf16, linear_bwd_weight_bf16, linear_bwd_weight_bf16_splits, linear_fwd_bf16,
};
use ddpm::gpu::mma_model::{MmaArch, mma_dot_bf16};
use ddpm::gpu::{Buffer, Gpu};
use ddpm::shapes::LinearShape;
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Odd rows and columns (not multiples of the 64 tile), batch 1, K not a multiple of the 32-wide
/// slice, and more slices than pipeline stages.
pub const SHAPES: [(usize, usize, usize); 4] = [(37, 64, 45), (1, 8, 3), (130, 136, 70), (64, 200, 64)];

pub struct Case {
    pub s: LinearShape,
    pub x: Vec<bf16>,
    pub w: Vec<bf16>,
    pub b: Vec<f32>,
}

pub fn case(rows: usize, k: usize, n: usize, value: &mut dyn FnMut() -> f32) -> Case {
    let s = LinearShape { rows, in_features: k, out_features: n };
    let x = (0..rows * k).map(|_| bf16::from_f32(value())).collect();
    let w = (0..n * k).map(|_| bf16::from_f32(value())).collect();
    let b = (0..n).map(|_| bf16::from_f32(value()).to_f32()).collect();
    Case { s, x, w, b }
}

/// The kernel's output, the output buffer NaN-poisoned first.
pub fn run(gpu: &Gpu, c: &Case) -> Vec<f32> {
    let (x, w, b) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap(), gpu.upload(&c.b).unwrap());
    let mut y: Buffer<f32> = gpu.upload(&vec![f32::NAN; c.s.rows * c.s.out_features]).unwrap();
    linear_fwd_bf16(&c.s, &x, &w, Some(&b), &mut y).unwrap();
    gpu.download(&y).unwrap()
}

/// The forward into bf16 (`linear_fwd_bf16_to_bf16`, what attention's bf16 kernels read): the f32
/// forward's output rounded to nearest even, bit for bit, on `SHAPES` with and without the bias,
/// into a poisoned output. Outputs are spread over 2^-30..2^30 so the rounding meets every
/// exponent; ties to even are what `half` does.
pub fn bf16_output_is_the_rounded_f32(gpu: &Gpu) {
    let mut rng = StdRng::seed_from_u64(0xbf16);
    for (i, &(rows, k, n)) in SHAPES.iter().enumerate() {
        let mut c = random_case(&mut rng, rows, k, n);
        for (j, v) in c.x.iter_mut().enumerate() {
            *v = bf16::from_f32(v.to_f32() * 2f32.powi((j / k % 60) as i32 - 30));
        }
        let with_bias = i % 2 == 0;
        let (x, w, b) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap(), gpu.upload(&c.b).unwrap());
        let b = with_bias.then_some(&b);
        let mut y32: Buffer<f32> = gpu.upload(&vec![f32::NAN; rows * n]).unwrap();
        linear_fwd_bf16(&c.s, &x, &w, b, &mut y32).unwrap();
        let mut y16: Buffer<bf16> = gpu.upload(&vec![bf16::NAN; rows * n]).unwrap();
        linear_fwd_bf16(&c.s, &x, &w, b, &mut y16).unwrap();
        let (y32, y16) = (gpu.download(&y32).unwrap(), gpu.download(&y16).unwrap());
        for (e, (&f, &h)) in y32.iter().zip(&y16).enumerate() {
            let want = bf16::from_f32(f);
            assert!(f.is_finite(), "{:?} bias={with_bias}: f32 element {e} not written", c.s);
            assert_eq!(h.to_bits(), want.to_bits(), "{:?} bias={with_bias}: element {e}: {f:e}", c.s);
        }
    }
}

/// q, k and v in one launch (`linear_fwd_bf16_to_bf16_x3`): each output bit for bit what
/// `linear_fwd_bf16_to_bf16` writes with its weight and bias, on `SHAPES` (odd rows and columns,
/// one row), one projection without a bias, into poisoned outputs; a wrong length is an error.
pub fn x3_is_three_launches(gpu: &Gpu) {
    use ddpm::cuda::linear::linear_fwd_bf16_to_bf16_x3;
    let mut rng = StdRng::seed_from_u64(0x3bf16);
    for (rows, k, n) in SHAPES {
        let cases: Vec<Case> = (0..3).map(|_| random_case(&mut rng, rows, k, n)).collect();
        let x = gpu.upload(&cases[0].x).unwrap();
        let w: Vec<Buffer<bf16>> = cases.iter().map(|c| gpu.upload(&c.w).unwrap()).collect();
        let b: Vec<Buffer<f32>> = cases.iter().map(|c| gpu.upload(&c.b).unwrap()).collect();
        let bias = |i: usize| (i != 1).then_some(&b[i]);
        let poisoned = || gpu.upload(&vec![bf16::NAN; rows * n]).unwrap();
        let want: Vec<Vec<u16>> = (0..3)
            .map(|i| {
                let mut y = poisoned();
                linear_fwd_bf16(&cases[0].s, &x, &w[i], bias(i), &mut y).unwrap();
                gpu.download(&y).unwrap().iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        let (mut q, mut kk, mut v) = (poisoned(), poisoned(), poisoned());
        linear_fwd_bf16_to_bf16_x3(
            &cases[0].s,
            &x,
            [&w[0], &w[1], &w[2]],
            [bias(0), bias(1), bias(2)],
            [&mut q, &mut kk, &mut v],
        )
        .unwrap();
        for (i, y) in [q, kk, v].iter().enumerate() {
            let got: Vec<u16> = gpu.download(y).unwrap().iter().map(|v| v.to_bits()).collect();
            assert!(got == want[i], "{rows}x{k}x{n}: projection {i} differs from its own launch");
        }
        let mut short = gpu.upload(&vec![bf16::NAN; rows * n - 1]).unwrap();
        let (mut q, mut kk) = (poisoned(), poisoned());
        let err = linear_fwd_bf16_to_bf16_x3(
            &cases[0].s,
            &x,
            [&w[0], &w[1], &w[2]],
            [None; 3],
            [&mut q, &mut kk, &mut short],
        );
        let err = err.expect_err("a short v output").to_string();
        assert!(err.contains("linear_fwd_bf16_to_bf16_x3") && err.contains("y_v"), "{err}");
    }
}

/// (a) Small-integer inputs: every sum is exact, so the kernel must equal the f32 reference bit
/// for bit; a layout slip fails with zero tolerance.
pub fn exact_small_integers(gpu: &Gpu, order: &str) {
    for (rows, k, n) in SHAPES {
        let mut i = 0u32;
        let c = case(rows, k, n, &mut || {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((i >> 16) % 7) as f32 - 3.0
        });
        let got = run(gpu, &c);
        for r in 0..rows {
            for o in 0..n {
                let dot: f32 = (0..k).map(|j| c.x[r * k + j].to_f32() * c.w[o * k + j].to_f32()).sum();
                let want = dot + c.b[o];
                assert_eq!(got[r * n + o], want, "{order} {rows}x{k}x{n}: y[{r}][{o}]");
            }
        }
    }
}

/// The kernel's sum for y[r][o]: k16 steps in order, each an mma accumulating into the last.
fn model(arch: MmaArch, c: &Case, r: usize, o: usize) -> f32 {
    let k = c.s.in_features;
    let mut acc = 0f32;
    for k0 in (0..k.next_multiple_of(32)).step_by(16) {
        let a: [u16; 16] = std::array::from_fn(|j| if k0 + j < k { c.x[r * k + k0 + j].to_bits() } else { 0 });
        let b: [u16; 16] = std::array::from_fn(|j| if k0 + j < k { c.w[o * k + k0 + j].to_bits() } else { 0 });
        acc = mma_dot_bf16(arch, &a, &b, acc).unwrap();
    }
    acc + c.b[o]
}

pub fn random_case(rng: &mut StdRng, rows: usize, k: usize, n: usize) -> Case {
    case(rows, k, n, &mut || rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-6..3)))
}

/// (b) Random inputs on `SHAPES`, bit for bit against the host replay of the kernel's k order
/// through the mma model of `arch` (the device's: the emulator's setting, or the GPU's).
pub fn matches_model(gpu: &Gpu, arch: MmaArch, order: &str) {
    let mut rng = StdRng::seed_from_u64(17);
    let cases: Vec<Case> = SHAPES.iter().map(|&(r, k, n)| random_case(&mut rng, r, k, n)).collect();
    for c in &cases {
        let got = run(gpu, c);
        let n = c.s.out_features;
        for (i, y) in got.iter().enumerate() {
            let want = model(arch, c, i / n, i % n);
            assert_eq!(y.to_bits(), want.to_bits(), "{arch:?} {order} {:?}: y[{}][{}]", c.s, i / n, i % n);
        }
    }
}

// ---- Backward: dx = dy W, dW = dy^T x, db = sum over rows of dy ----------------------------------

/// (rows, in, out): odd rows (1, 37, 130: the weight gradient's k, not a multiple of 8 or of the
/// 32-wide slice, 130 with more slices than pipeline stages), in and out multiples of 8 but not of
/// the 64 tile (out 200: the input gradient's k over 7 slices), and in = 64, where db's ones column
/// opens a tile column of its own (in = 72, 136: it shares the last tile); and 1,001 rows over one
/// output tile, whose weight gradient splits the rows over 8 blocks (the last one short).
pub const BWD_SHAPES: [(usize, usize, usize); 5] =
    [(37, 72, 40), (1, 8, 8), (130, 136, 200), (5, 64, 24), (1001, 16, 24)];

pub struct BwdCase {
    pub s: LinearShape,
    pub x: Vec<bf16>,
    pub w: Vec<bf16>,
    pub dy: Vec<bf16>,
}

pub fn bwd_case(rows: usize, k: usize, n: usize, value: &mut dyn FnMut() -> f32) -> BwdCase {
    let s = LinearShape { rows, in_features: k, out_features: n };
    let mut v = |len: usize| (0..len).map(|_| bf16::from_f32(value())).collect::<Vec<_>>();
    let (x, w, dy) = (v(rows * k), v(n * k), v(rows * n));
    BwdCase { s, x, w, dy }
}

pub fn random_bwd_case(rng: &mut StdRng, rows: usize, k: usize, n: usize) -> BwdCase {
    bwd_case(rows, k, n, &mut || rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-6..3)))
}

/// The kernels' outputs, every output buffer NaN-poisoned first.
pub struct BwdOut {
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// Runs both backward kernels; db only `with_db` (else empty).
pub fn run_bwd(gpu: &Gpu, c: &BwdCase, with_db: bool) -> BwdOut {
    let (x, w, dy) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap(), gpu.upload(&c.dy).unwrap());
    let (rows, k, n) = (c.s.rows, c.s.in_features, c.s.out_features);
    let nan = |len: usize| -> Buffer<f32> { gpu.upload(&vec![f32::NAN; len]).unwrap() };
    let (mut dx, mut dw, mut db) = (nan(rows * k), nan(n * k), nan(n));
    linear_bwd_input_bf16(&c.s, &dy, &w, &mut dx).unwrap();
    linear_bwd_weight_bf16(&c.s, &x, &dy, &mut dw, with_db.then_some(&mut db)).unwrap();
    let db = if with_db { gpu.download(&db).unwrap() } else { Vec::new() };
    BwdOut { dx: gpu.download(&dx).unwrap(), dw: gpu.download(&dw).unwrap(), db }
}

/// Equal bit for bit, or (`signed_zeros` false) equal as values: +0 == -0. The exact check needs
/// that: the f32 reference's f64 sum of a single -0 product is -0, the mma's (from a +0
/// accumulator) +0.
fn assert_same(what: &str, got: &[f32], want: &[f32], signed_zeros: bool) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = if signed_zeros { g.to_bits() == w.to_bits() } else { g == w };
        assert!(same, "{what}[{i}]: {g} vs {w}");
    }
}

/// (a) Small-integer inputs: every sum is exact, so the kernels must equal src/cpu/linear.rs's f32
/// reference bit for bit; and dW without db is the same as with it.
pub fn exact_small_integers_bwd(gpu: &Gpu, order: &str) {
    for (rows, k, n) in BWD_SHAPES {
        let mut i = 7u32;
        let c = bwd_case(rows, k, n, &mut || {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((i >> 16) % 7) as f32 - 3.0
        });
        let f = |v: &[bf16]| v.iter().map(|b| b.to_f32()).collect::<Vec<f32>>();
        let (x, w, dy) = (f(&c.x), f(&c.w), f(&c.dy));
        let (mut dx, mut dw, mut db) = (vec![0f32; rows * k], vec![0f32; n * k], vec![0f32; n]);
        linear_bwd_input(&c.s, &dy, &w, &mut dx);
        linear_bwd_weight(&c.s, &x, &dy, &mut dw, Some(&mut db));
        let got = run_bwd(gpu, &c, true);
        let at = format!("{order} {rows}x{k}x{n}");
        assert_same(&format!("{at}: dx"), &got.dx, &dx, false);
        assert_same(&format!("{at}: dw"), &got.dw, &dw, false);
        assert_same(&format!("{at}: db"), &got.db, &db, false);
        assert_same(&format!("{at}: dw without db"), &run_bwd(gpu, &c, false).dw, &dw, false);
    }
}

/// The kernels' sum over k terms a(j) b(j): k16 steps in increasing j (zero past k, up to the
/// slice multiple of 32), each an mma accumulating into the last.
fn model_sum(arch: MmaArch, k: usize, a: impl Fn(usize) -> bf16, b: impl Fn(usize) -> bf16) -> f32 {
    let mut acc = 0f32;
    for k0 in (0..k.next_multiple_of(32)).step_by(16) {
        let a: [u16; 16] = std::array::from_fn(|j| if k0 + j < k { a(k0 + j).to_bits() } else { 0 });
        let b: [u16; 16] = std::array::from_fn(|j| if k0 + j < k { b(k0 + j).to_bits() } else { 0 });
        acc = mma_dot_bf16(arch, &a, &b, acc).unwrap();
    }
    acc
}

/// The weight gradient's sum over rows when `splits` blocks share them: the 32-row slices dealt
/// ceil(slices / splits) to a block in order, each block's model_sum, then 0 + the partial sums in
/// split order (one split: its sum as it is).
fn split_model_sum(
    arch: MmaArch,
    rows: usize,
    splits: usize,
    a: impl Fn(usize) -> bf16,
    b: impl Fn(usize) -> bf16,
) -> f32 {
    if splits == 1 {
        return model_sum(arch, rows, a, b);
    }
    let per = rows.div_ceil(32).div_ceil(splits) * 32;
    (0..rows).step_by(per).fold(0f32, |sum, r0| sum + model_sum(arch, per.min(rows - r0), |r| a(r0 + r), |r| b(r0 + r)))
}

/// The host replay of both kernels: dx over out, dW and db (a ones column) over rows.
pub fn bwd_model(arch: MmaArch, c: &BwdCase) -> BwdOut {
    let (rows, k, n) = (c.s.rows, c.s.in_features, c.s.out_features);
    let splits = linear_bwd_weight_bf16_splits(&c.s, true);
    let dx = (0..rows * k).map(|e| model_sum(arch, n, |o| c.dy[e / k * n + o], |o| c.w[o * k + e % k])).collect();
    let dw = (0..n * k)
        .map(|e| split_model_sum(arch, rows, splits, |r| c.dy[r * n + e / k], |r| c.x[r * k + e % k]))
        .collect();
    let db = (0..n).map(|o| split_model_sum(arch, rows, splits, |r| c.dy[r * n + o], |_| bf16::ONE)).collect();
    BwdOut { dx, dw, db }
}

/// (b) Random inputs on `BWD_SHAPES`, bit for bit against the host replay of the kernels' k order
/// through the mma model of `arch` (the device's: the emulator's setting, or the GPU's).
pub fn matches_model_bwd(gpu: &Gpu, arch: MmaArch, order: &str) {
    let mut rng = StdRng::seed_from_u64(19);
    for &(rows, k, n) in &BWD_SHAPES {
        let c = random_bwd_case(&mut rng, rows, k, n);
        let (got, want) = (run_bwd(gpu, &c, true), bwd_model(arch, &c));
        let at = format!("{arch:?} {order} {rows}x{k}x{n}");
        assert_same(&format!("{at}: dx"), &got.dx, &want.dx, true);
        assert_same(&format!("{at}: dw"), &got.dw, &want.dw, true);
        assert_same(&format!("{at}: db"), &got.db, &want.db, true);
    }
}

/// The model's worst case for a k-term sum of magnitude `mag` (sum of |a b|): per k16 step, 17
/// terms truncated to 24 fraction bits and a round toward zero to f32; one step of slack for the
/// second-order terms.
pub fn model_bound(k: usize, mag: f64) -> f64 {
    (k.div_ceil(16) as f64 + 1.0) * (17.0 * 2f64.powi(-24) + 2f64.powi(-23)) * mag
}

/// (c) Random inputs against an f64 reference from the same bf16 values, within `model_bound`;
/// returns the worst error as a fraction of the bound.
pub fn within_bound_bwd(gpu: &Gpu, c: &BwdCase) -> f64 {
    let (rows, k, n) = (c.s.rows, c.s.in_features, c.s.out_features);
    let got = run_bwd(gpu, c, true);
    let mut worst = 0f64;
    let mut check = |what: &str, got: f32, terms: &mut dyn Iterator<Item = f64>, len: usize| {
        let (exact, mag) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
        let (err, bound) = ((got as f64 - exact).abs(), model_bound(len, mag));
        assert!(err <= bound, "{rows}x{k}x{n} {what}: error {err:e} over the bound {bound:e}");
        worst = worst.max(err / bound.max(f64::MIN_POSITIVE));
    };
    let f = |v: bf16| v.to_f64();
    for e in 0..rows * k {
        let terms = &mut (0..n).map(|o| f(c.dy[e / k * n + o]) * f(c.w[o * k + e % k]));
        check(&format!("dx[{e}]"), got.dx[e], terms, n);
    }
    // Split rows: each split's partial sum is rounded once more when the splits are added, one
    // k16 step's worth of error per split (as the convolutions' bound, tests/conv_bf16.rs).
    let split_terms = 16 * linear_bwd_weight_bf16_splits(&c.s, true);
    for e in 0..n * k {
        let terms = &mut (0..rows).map(|r| f(c.dy[r * n + e / k]) * f(c.x[r * k + e % k]));
        check(&format!("dw[{e}]"), got.dw[e], terms, rows + split_terms);
    }
    for o in 0..n {
        check(&format!("db[{o}]"), got.db[o], &mut (0..rows).map(|r| f(c.dy[r * n + o])), rows + split_terms);
    }
    worst
}
