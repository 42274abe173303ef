//! The tensor-core convolution backward's checks (kernels/conv_bwd_bf16.cu), on any device: run
//! on the emulator by tests/conv_bf16.rs (both fiber orders) and on a GPU by tests/gpu.rs.

use super::conv_bf16_checks::{im2col_row, model_dot, split_dot};
use ddpm::cuda::conv_bf16::{
    conv2d_bwd_input_bf16, conv2d_bwd_input_bf16_splits, conv2d_bwd_weight_bf16, conv2d_bwd_weight_bf16_chunks,
};
use ddpm::gpu::Gpu;
use ddpm::gpu::mma_model::MmaArch;
use ddpm::shapes::{Conv2dShape, Padding};
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Odd maps, channels (multiples of 8) that are not multiples of the 64 tile, batch 1, 1x1, both
/// stride-2 paddings, a 16x16 batch whose weight gradient splits into two pixel chunks, and a
/// 4x4 map whose input gradient splits K (9 x 128) over 9 blocks.
pub fn shapes() -> Vec<Conv2dShape> {
    vec![
        Conv2dShape::conv3x3(2, 5, 7, 8, 8),
        Conv2dShape::conv3x3(1, 9, 8, 24, 72),
        Conv2dShape::conv1x1(2, 6, 6, 16, 40),
        Conv2dShape::downsample(1, 8, 8, 16, 16, 0),
        Conv2dShape::downsample(2, 7, 7, 8, 24, 1),
        Conv2dShape { batch: 1, in_h: 6, in_w: 6, in_c: 72, out_c: 8, kernel: 3, stride: 1, pad: Padding::same(1) },
        Conv2dShape::conv3x3(2, 16, 16, 8, 8),
        Conv2dShape::conv3x3(1, 4, 4, 16, 128),
    ]
}

pub struct Case {
    pub s: Conv2dShape,
    pub x: Vec<bf16>,
    pub w: Vec<bf16>,
    pub dy: Vec<bf16>,
}

pub fn case(s: Conv2dShape, value: &mut dyn FnMut() -> f32) -> Case {
    let mut v = |n: usize| -> Vec<bf16> { (0..n).map(|_| bf16::from_f32(value())).collect() };
    Case { s, x: v(s.x_len()), w: v(s.w_len()), dy: v(s.y_len()) }
}

pub fn random_case(rng: &mut StdRng, s: Conv2dShape) -> Case {
    case(s, &mut || rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-6..3)))
}

fn small_integer_case(s: Conv2dShape, seed: u32) -> Case {
    let mut i = seed;
    case(s, &mut || {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((i >> 16) % 7) as f32 - 3.0
    })
}

/// The kernels' outputs (dx, dw, db), every output NaN-poisoned first.
pub fn run(gpu: &Gpu, c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = &c.s;
    let (x, w, dy) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap(), gpu.upload(&c.dy).unwrap());
    let mut dx = gpu.upload(&vec![f32::NAN; s.x_len()]).unwrap();
    let mut dw = gpu.upload(&vec![f32::NAN; s.w_len()]).unwrap();
    let mut db = gpu.upload(&vec![f32::NAN; s.out_c]).unwrap();
    conv2d_bwd_input_bf16(s, &dy, &w, &mut dx).unwrap();
    conv2d_bwd_weight_bf16(s, &x, &dy, &mut dw, Some(&mut db)).unwrap();
    (gpu.download(&dx).unwrap(), gpu.download(&dw).unwrap(), gpu.download(&db).unwrap())
}

fn f32s(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|v| v.to_f32()).collect()
}

/// (a) Small-integer inputs: every sum is exact, so the kernels equal the f32 reference
/// (src/cpu/conv.rs) bit for bit.
pub fn exact_small_integers(gpu: &Gpu, order: &str) {
    for (i, s) in shapes().into_iter().enumerate() {
        let c = small_integer_case(s, i as u32);
        let (dx, dw, db) = run(gpu, &c);
        let (x, w, dy) = (f32s(&c.x), f32s(&c.w), f32s(&c.dy));
        let (mut rdx, mut rdw, mut rdb) = (vec![0f32; s.x_len()], vec![0f32; s.w_len()], vec![0f32; s.out_c]);
        ddpm::cpu::conv::conv2d_bwd_input(&s, &dy, &w, &mut rdx);
        ddpm::cpu::conv::conv2d_bwd_weight(&s, &x, &dy, &mut rdw, Some(&mut rdb));
        for (name, got, want) in [("dx", &dx, &rdx), ("dw", &dw, &rdw), ("db", &db, &rdb)] {
            for (e, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert_eq!(g, w, "{order} {s:?}: {name}[{e}]");
            }
        }
    }
}

/// dy's row for input pixel m of the input gradient's GEMM (k = (ky, kx, o); zero where no output
/// pixel reads m through the tap).
fn dgrad_row(s: &Conv2dShape, dy: &[bf16], m: usize) -> Vec<bf16> {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (img, iy, ix) = (m / (s.in_h * s.in_w), (m / s.in_w) % s.in_h, m % s.in_w);
    let out = |i: usize, k: usize, pad: usize, n: usize| {
        (i + pad).checked_sub(k).filter(|d| d % s.stride == 0).map(|d| d / s.stride).filter(|&o| o < n)
    };
    let mut row = Vec::new();
    for ky in 0..s.kernel {
        for kx in 0..s.kernel {
            let at = out(iy, ky, s.pad.top, oh).zip(out(ix, kx, s.pad.left, ow));
            row.extend(
                (0..s.out_c).map(|o| at.map_or(bf16::ZERO, |(oy, ox)| dy[((img * oh + oy) * ow + ox) * s.out_c + o])),
            );
        }
    }
    row
}

/// (b) Random inputs, bit for bit against the host replay of each kernel's k order through the
/// mma model of `arch`: dx row by row; dw and db per pixel chunk, the chunks added in order.
pub fn matches_model(gpu: &Gpu, arch: MmaArch, order: &str) {
    let mut rng = StdRng::seed_from_u64(37);
    for s in shapes() {
        let c = random_case(&mut rng, s);
        let (dx, dw, db) = run(gpu, &c);
        let w_t: Vec<Vec<bf16>> = (0..s.in_c)
            .map(|n| {
                (0..s.kernel * s.kernel * s.out_c)
                    .map(|k| c.w[((k % s.out_c) * s.kernel * s.kernel + k / s.out_c) * s.in_c + n])
                    .collect()
            })
            .collect();
        let splits = conv2d_bwd_input_bf16_splits(&s);
        for m in 0..s.batch * s.in_h * s.in_w {
            let a = dgrad_row(&s, &c.dy, m);
            for n in 0..s.in_c {
                let (g, want) = (dx[m * s.in_c + n], split_dot(arch, &a, &w_t[n], splits));
                assert_eq!(g.to_bits(), want.to_bits(), "{arch:?} {order} {s:?}: dx[{m}][{n}] {g} vs {want}");
            }
        }
        let pixels = s.batch * s.out_h() * s.out_w();
        let (chunk_len, chunks) = conv2d_bwd_weight_bf16_chunks(&s, true);
        let cols: Vec<Vec<bf16>> = (0..pixels).map(|p| im2col_row(&s, &c.x, p)).collect();
        for o in 0..s.out_c {
            let red = s.kernel * s.kernel * s.in_c;
            for col in 0..=red {
                let mut sum = 0f32;
                for ch in 0..chunks {
                    let ps = ch * chunk_len..((ch + 1) * chunk_len).min(pixels);
                    let a: Vec<bf16> = ps.clone().map(|p| c.dy[p * s.out_c + o]).collect();
                    let b: Vec<bf16> = ps.map(|p| if col < red { cols[p][col] } else { bf16::ONE }).collect();
                    sum += model_dot(arch, &a, &b);
                }
                let g = if col < red { dw[o * red + col] } else { db[o] };
                assert_eq!(
                    g.to_bits(),
                    sum.to_bits(),
                    "{arch:?} {order} {s:?}: dw[{o}][{col}] {g} vs {sum} ({chunks} chunks)"
                );
            }
        }
    }
}

/// The input gradient's 128x128 tile (8 warps of 64x32) computes every sum in the 64x64 tile's
/// order, so with the same split of K its bits must equal those (which `matches_model` checks):
/// on a shape that is not a multiple of 128 without split-K, and one split 9 ways by both tiles.
pub fn input_grad_tiles_agree(gpu: &Gpu, order: &str) {
    use ddpm::cuda::conv_bf16::conv2d_bwd_input_bf16_tiled;
    let mut rng = StdRng::seed_from_u64(38);
    for s in [Conv2dShape::conv3x3(1, 11, 13, 136, 16), Conv2dShape::conv3x3(1, 4, 4, 24, 128)] {
        let c = random_case(&mut rng, s);
        let (dy, w) = (gpu.upload(&c.dy).unwrap(), gpu.upload(&c.w).unwrap());
        let run_tiled = |tile: usize| -> Vec<u32> {
            let mut dx = gpu.upload(&vec![f32::NAN; s.x_len()]).unwrap();
            conv2d_bwd_input_bf16_tiled(tile, &s, &dy, &w, &mut dx).unwrap();
            gpu.download(&dx).unwrap().iter().map(|v| v.to_bits()).collect()
        };
        let (small, large) = (run_tiled(64), run_tiled(128));
        let diff = small.iter().zip(&large).position(|(a, b)| a != b);
        assert!(diff.is_none(), "{order} {s:?}: dx[{}] differs between the tiles", diff.unwrap());
        assert!(small.iter().all(|&b| !f32::from_bits(b).is_nan()), "{order} {s:?}: dx left unwritten");
    }
}

/// The weight gradient's 128x128 tile gives the 64x64 tile's bits when both take the same pixel
/// chunks (the chunks fix each sum's order): shapes that are not multiples of 128, a stride-2
/// one, two chunks each; dw and db.
pub fn weight_grad_tiles_agree(gpu: &Gpu, order: &str) {
    use ddpm::cuda::conv_bf16::{conv2d_bwd_weight_bf16_chunks_for, conv2d_bwd_weight_bf16_target};
    let mut rng = StdRng::seed_from_u64(39);
    for s in [Conv2dShape::conv3x3(2, 16, 16, 24, 136), Conv2dShape::downsample(3, 20, 18, 16, 40, 1)] {
        let chunks = conv2d_bwd_weight_bf16_chunks_for(&s, true, 64, 924);
        assert_eq!(chunks, conv2d_bwd_weight_bf16_chunks_for(&s, true, 128, 924), "{s:?}: the tiles' chunks differ");
        assert!(chunks.1 > 1, "{s:?}: one chunk only");
        let c = random_case(&mut rng, s);
        let (x, dy) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.dy).unwrap());
        let run_tiled = |tile: usize| -> Vec<u32> {
            let mut dw = gpu.upload(&vec![f32::NAN; s.w_len()]).unwrap();
            let mut db = gpu.upload(&vec![f32::NAN; s.out_c]).unwrap();
            conv2d_bwd_weight_bf16_target(&s, &x, &dy, &mut dw, Some(&mut db), tile, 924).unwrap();
            let (dw, db) = (gpu.download(&dw).unwrap(), gpu.download(&db).unwrap());
            dw.iter().chain(&db).map(|v| v.to_bits()).collect()
        };
        let (small, large) = (run_tiled(64), run_tiled(128));
        let diff = small.iter().zip(&large).position(|(a, b)| a != b);
        assert!(diff.is_none(), "{order} {s:?}: dw/db[{}] differs between the tiles", diff.unwrap());
        assert!(small.iter().all(|&b| !f32::from_bits(b).is_nan()), "{order} {s:?}: dw left unwritten");
    }
}
