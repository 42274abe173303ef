//! The tensor-core convolution forward's checks (kernels/conv_bf16.cu), on any device: run on the
//! emulator by tests/conv_bf16.rs (both fiber orders) and on a GPU by tests/gpu.rs.

use ddpm::cuda::conv_bf16::{ConvOut, conv2d_fwd_bf16, conv2d_fwd_bf16_splits, conv2d_fwd_bf16_tile};
use ddpm::gpu::Gpu;
use ddpm::gpu::mma_model::{MmaArch, mma_dot_bf16};
use ddpm::shapes::{Conv2dShape, Padding};
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// 3x3 with odd maps and out_c not a multiple of the 64 tile, batch 1, a 1x1, diffusers' stride-2
/// downsample with one-sided padding, and K (= 9 x 72, 9 x 128) over several pipeline rounds and
/// split over blocks (split-K: 5 and 9 splits).
pub fn shapes() -> Vec<Conv2dShape> {
    vec![
        Conv2dShape::conv3x3(2, 5, 7, 8, 5),
        Conv2dShape::conv3x3(1, 9, 8, 24, 70),
        Conv2dShape::conv1x1(2, 6, 6, 16, 33),
        Conv2dShape::downsample(1, 8, 8, 16, 16, 0),
        Conv2dShape::downsample(2, 7, 7, 8, 12, 1),
        Conv2dShape { batch: 1, in_h: 6, in_w: 6, in_c: 72, out_c: 9, kernel: 3, stride: 1, pad: Padding::same(1) },
        Conv2dShape::conv3x3(1, 4, 4, 128, 16),
    ]
}

/// One problem: every input bf16-exact; `out_bf16` picks the output (and residual) type.
pub struct Case {
    pub s: Conv2dShape,
    pub x: Vec<bf16>,
    pub w: Vec<bf16>,
    pub bias: Vec<f32>,
    pub emb: Vec<f32>,
    pub residual: Vec<f32>,
    pub out_bf16: bool,
}

pub fn case(s: Conv2dShape, out_bf16: bool, value: &mut dyn FnMut() -> f32) -> Case {
    let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| bf16::from_f32(value()).to_f32()).collect() };
    let (x, w) = (v(s.x_len()), v(s.w_len()));
    let (bias, emb, residual) = (v(s.out_c), v(s.batch * s.out_c), v(s.y_len()));
    let to_bf16 = |a: Vec<f32>| a.into_iter().map(bf16::from_f32).collect();
    Case { s, x: to_bf16(x), w: to_bf16(w), bias, emb, residual, out_bf16 }
}

/// The kernel's output as f32, the output buffer NaN-poisoned first.
pub fn run(gpu: &Gpu, c: &Case) -> Vec<f32> {
    let (x, w) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap());
    let (bias, emb) = (gpu.upload(&c.bias).unwrap(), gpu.upload(&c.emb).unwrap());
    let n = c.s.y_len();
    if c.out_bf16 {
        let res: Vec<bf16> = c.residual.iter().map(|&v| bf16::from_f32(v)).collect();
        let res = gpu.upload(&res).unwrap();
        let mut y = gpu.upload(&vec![bf16::NAN; n]).unwrap();
        conv2d_fwd_bf16(&c.s, &x, &w, Some(&bias), Some(&emb), ConvOut::Bf16 { y: &mut y, residual: Some(&res) })
            .unwrap();
        gpu.download(&y).unwrap().iter().map(|v| v.to_f32()).collect()
    } else {
        let res = gpu.upload(&c.residual).unwrap();
        let mut y = gpu.upload(&vec![f32::NAN; n]).unwrap();
        conv2d_fwd_bf16(&c.s, &x, &w, Some(&bias), Some(&emb), ConvOut::F32 { y: &mut y, residual: Some(&res) })
            .unwrap();
        gpu.download(&y).unwrap()
    }
}

/// Row m of the implicit GEMM's A (x at output pixel m's taps, zero in the padding), K long.
pub fn im2col_row(s: &Conv2dShape, x: &[bf16], m: usize) -> Vec<bf16> {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (img, oy, ox) = (m / (oh * ow), (m / ow) % oh, m % ow);
    let mut row = Vec::with_capacity(s.kernel * s.kernel * s.in_c);
    for ky in 0..s.kernel {
        for kx in 0..s.kernel {
            let iy = (oy * s.stride + ky).checked_sub(s.pad.top).filter(|&i| i < s.in_h);
            let ix = (ox * s.stride + kx).checked_sub(s.pad.left).filter(|&i| i < s.in_w);
            for ci in 0..s.in_c {
                row.push(match (iy, ix) {
                    (Some(iy), Some(ix)) => x[((img * s.in_h + iy) * s.in_w + ix) * s.in_c + ci],
                    _ => bf16::ZERO,
                });
            }
        }
    }
    row
}

/// The epilogue after the convolution's sum `acc`, in the kernel's order and roundings.
fn epilogue(c: &Case, m: usize, o: usize, acc: f32) -> f32 {
    let img = m / (c.s.out_h() * c.s.out_w());
    let v = acc + c.bias[o] + c.emb[img * c.s.out_c + o] + c.residual[m * c.s.out_c + o];
    if c.out_bf16 { bf16::from_f32(v).to_f32() } else { v }
}

/// (a) Small-integer inputs: every sum is exact, so the kernel must equal the f32 reference
/// (src/cpu/conv.rs) plus the epilogue's terms bit for bit; a layout slip fails with zero
/// tolerance.
pub fn exact_small_integers(gpu: &Gpu, order: &str) {
    for (ci, s) in shapes().into_iter().enumerate() {
        let mut i = ci as u32;
        let c = case(s, ci % 2 == 1, &mut || {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((i >> 16) % 7) as f32 - 3.0
        });
        let got = run(gpu, &c);
        let (x, w): (Vec<f32>, Vec<f32>) =
            (c.x.iter().map(|v| v.to_f32()).collect(), c.w.iter().map(|v| v.to_f32()).collect());
        let mut conv = vec![0f32; s.y_len()];
        ddpm::cpu::conv::conv2d_fwd(&s, &x, &w, None, &mut conv);
        for (i, (&g, &r)) in got.iter().zip(&conv).enumerate() {
            let want = epilogue(&c, i / s.out_c, i % s.out_c, r);
            assert_eq!(g, want, "{order} {s:?}: y[{i}]");
        }
    }
}

/// k16 steps of a and b (equal lengths, zero-padded to whole 32-wide slices), each an mma
/// accumulating into the last: the GEMM core's order.
pub fn model_dot(arch: MmaArch, a: &[bf16], b: &[bf16]) -> f32 {
    let k = a.len();
    let mut acc = 0f32;
    for k0 in (0..k.next_multiple_of(32)).step_by(16) {
        let pick = |v: &[bf16], j: usize| if k0 + j < k { v[k0 + j].to_bits() } else { 0 };
        let (av, bv): ([u16; 16], [u16; 16]) =
            (std::array::from_fn(|j| pick(a, j)), std::array::from_fn(|j| pick(b, j)));
        acc = mma_dot_bf16(arch, &av, &bv, acc).unwrap();
    }
    acc
}

/// The sum of a split-K GEMM: K's 32-wide slices dealt to `splits` blocks, ceil(slices / splits)
/// each in order, each block's model_dot, then 0 + the partial sums in split order (one split: its
/// sum as it is).
pub fn split_dot(arch: MmaArch, a: &[bf16], b: &[bf16], splits: usize) -> f32 {
    if splits == 1 {
        return model_dot(arch, a, b);
    }
    let per = a.len().div_ceil(32).div_ceil(splits) * 32;
    a.chunks(per).zip(b.chunks(per)).fold(0f32, |sum, (a, b)| sum + model_dot(arch, a, b))
}

pub fn random_case(rng: &mut StdRng, s: Conv2dShape, out_bf16: bool) -> Case {
    case(s, out_bf16, &mut || rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-6..3)))
}

/// (b) Random inputs, bit for bit against the host replay of the kernel's k order through the
/// mma model of `arch` (the device's), then the epilogue; both output types.
pub fn matches_model(gpu: &Gpu, arch: MmaArch, order: &str) {
    let mut rng = StdRng::seed_from_u64(27);
    for (ci, s) in shapes().into_iter().enumerate() {
        let c = random_case(&mut rng, s, ci % 2 == 0);
        let got = run(gpu, &c);
        let (k, splits) = (s.kernel * s.kernel * s.in_c, conv2d_fwd_bf16_splits(&s, conv2d_fwd_bf16_tile(&s)));
        for m in 0..s.batch * s.out_h() * s.out_w() {
            let a = im2col_row(&s, &c.x, m);
            for o in 0..s.out_c {
                let want = epilogue(&c, m, o, split_dot(arch, &a, &c.w[o * k..][..k], splits));
                let g = got[m * s.out_c + o];
                assert_eq!(g.to_bits(), want.to_bits(), "{arch:?} {order} {s:?}: y[{m}][{o}] {g} vs {want}");
            }
        }
    }
}
