//! The tensor-core linear forward's checks (kernels/linear_bf16.cu), on any device: run on the
//! emulator by tests/linear_bf16.rs (both fiber orders) and on a GPU by tests/gpu.rs.

use ddpm::cuda::linear::linear_fwd_bf16;
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
