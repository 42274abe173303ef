//! Checks of the residual stream in bf16 (issue #17; src/backend/stream.rs, kernels/stream_bf16.cu)
//! written once: the kernels against their f32 twins on the widened values, rounded (bit for
//! bit, NaN-poisoned outputs, odd sizes), and the CUDA backend's `Stream` ops at both precisions.
//! Run on the emulator in tests/stream.rs and on a GPU in tests/gpu.rs.

use super::parity::{IMAGES, SIZES, bits, cpu_out};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, CudaOperand, Layers, ProductInput, Stream};
use ddpm::cuda::stream_bf16::{add_scaled_to_bf16_bf16, concat_channels_bf16, widen_bf16};
use ddpm::fast::bf16::Precision;
use ddpm::gpu::{Buffer, Gpu};
use ddpm::shapes::Conv2dShape;
use ddpm::testing::{random_vec, rng_for};
use half::bf16;

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}
fn bf16_bits(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}
/// `v` rounded to bf16, as bits: what a kernel that sums in f32 and stores bf16 must write.
fn rounded_bits(v: &[f32]) -> Vec<u16> {
    bf16_bits(&to_bf16(v))
}
fn poisoned_bf16(gpu: &Gpu, n: usize) -> Buffer<bf16> {
    gpu.upload(&vec![bf16::NAN; n]).unwrap()
}
/// `v` rounded to bf16 and widened back: a bf16 tensor's values as f32.
fn on_grid_exact(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}
/// Random values already on the bf16 grid (a bf16 stream tensor's), as f32.
fn on_grid(rng: &mut rand::rngs::StdRng, n: usize, lim: f32) -> Vec<f32> {
    random_vec(rng, n, -lim, lim).iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

/// The three kernels of kernels/stream_bf16.cu and the bf16 upsampling from a bf16 input.
pub fn kernels(gpu: &Gpu) {
    let rng = &mut rng_for("stream_bf16_kernels");
    for &n in SIZES {
        // Widening: every bf16 value, specials included, to its exact f32.
        let mut x = to_bf16(&random_vec(rng, n, -1e3, 1e3));
        for (i, s) in [bf16::INFINITY, bf16::NEG_INFINITY, bf16::from_bits(1), bf16::MAX].into_iter().enumerate() {
            if i < n {
                x[i] = s;
            }
        }
        let mut y = gpu.upload(&vec![f32::NAN; n]).unwrap();
        widen_bf16(&gpu.upload(&x).unwrap(), &mut y).unwrap();
        let want: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        assert_eq!(bits(&gpu.download(&y).unwrap()), bits(&want), "widen_bf16 n={n}");

        // (x + h) / divisor in f32 on the widened x, rounded once.
        let (xs, h) = (on_grid(rng, n, 4.0), random_vec(rng, n, -4.0, 4.0));
        for divisor in [1.0, std::f32::consts::SQRT_2, 3.0] {
            let want = cpu_out(n, |y| CpuBackend.add_scaled(&h, &xs, divisor, y).unwrap());
            let mut y = poisoned_bf16(gpu, n);
            let (dx, dh) = (gpu.upload(&to_bf16(&xs)).unwrap(), gpu.upload(&h).unwrap());
            add_scaled_to_bf16_bf16(&dx, &dh, divisor, &mut y).unwrap();
            let got = bf16_bits(&gpu.download(&y).unwrap());
            assert!(got == rounded_bits(&want), "add_scaled_to_bf16 n={n} divisor={divisor}");
        }
    }
    for s in IMAGES {
        // Concatenation: bits moved. c2 differs from c1 and is odd.
        let (rows, c1, c2) = (s.batch * s.h * s.w, s.c, s.c + 2);
        let (a, b) = (on_grid(rng, rows * c1, 3.0), on_grid(rng, rows * c2, 3.0));
        let want = cpu_out(rows * (c1 + c2), |y| CpuBackend.concat_channels(rows, c1, c2, &a, &b, y).unwrap());
        let mut y = poisoned_bf16(gpu, rows * (c1 + c2));
        let (da, db) = (gpu.upload(&to_bf16(&a)).unwrap(), gpu.upload(&to_bf16(&b)).unwrap());
        concat_channels_bf16(rows, c1, c2, &da, &db, &mut y).unwrap();
        assert!(bf16_bits(&gpu.download(&y).unwrap()) == rounded_bits(&want), "concat_channels_bf16 {s:?}");

        // Upsampling a bf16 input: bits copied.
        let x = on_grid(rng, s.len(), 3.0);
        let want = cpu_out(4 * s.len(), |y| CpuBackend.upsample_nearest2x_fwd(s, &x, y).unwrap());
        let mut y = poisoned_bf16(gpu, 4 * s.len());
        ddpm::cuda::resample::upsample_nearest2x_fwd_bf16(s, &gpu.upload(&to_bf16(&x)).unwrap(), &mut y).unwrap();
        assert!(bf16_bits(&gpu.download(&y).unwrap()) == rounded_bits(&want), "upsample_nearest2x_fwd_bf16 {s:?}");
    }
}

fn stored(b: &CudaBackend, op: &CudaOperand) -> (bool, Vec<f32>) {
    match op {
        CudaOperand::Bf16(y) => (true, b.gpu.download(y).unwrap().iter().map(|v| v.to_f32()).collect()),
        CudaOperand::F32(y) => (false, b.download(y).unwrap()),
    }
}

/// The stream in the precision `precision` asks for: a bf16 tensor on the grid, or an f32 one.
fn stream_tensor(b: &CudaBackend, v: &[f32]) -> CudaOperand {
    match b.precision {
        Precision::Bf16 => CudaOperand::Bf16(b.gpu.upload(&to_bf16(v)).unwrap()),
        Precision::F32 => CudaOperand::F32(b.upload(v).unwrap()),
    }
}

/// `Stream` on the CUDA backend: at bf16 every op stores the f32 result of the same kernels
/// (`conv2d_fwd_fused` with the residual widened, `add_scaled`, `concat_channels`) rounded once;
/// at f32 it is that result itself. Convolutions with and without a bf16 kernel (16 and 3 input
/// channels: conv_in's), with and without a residual; a bf16 input into a convolution with no bf16
/// kernel (12 channels) is widened; mixed precisions and wrong lengths are errors.
pub fn backend_ops(gpu: &Gpu) {
    let rng = &mut rng_for("stream_backend_ops");
    for precision in [Precision::Bf16, Precision::F32] {
        let b = CudaBackend::with_precision(gpu.clone(), precision);
        let want_bf16 = precision == Precision::Bf16;
        for (in_c, out_c, residual) in [(16, 24, true), (16, 8, false), (3, 16, false), (3, 16, true), (12, 16, true)] {
            let conv = Conv2dShape::conv3x3(2, 5, 7, in_c, out_c);
            let x = on_grid(rng, conv.x_len(), 2.0);
            let (w, bias, r) = (
                random_vec(rng, conv.w_len(), -0.3, 0.3),
                random_vec(rng, out_c, -1.0, 1.0),
                on_grid(rng, conv.y_len(), 2.0),
            );
            let (dw, dbias, dr) = (b.upload(&w).unwrap(), b.upload(&bias).unwrap(), b.upload(&r).unwrap());
            let mut want = b.upload(&vec![f32::NAN; conv.y_len()]).unwrap();
            let res = residual.then_some(&dr);
            b.conv2d_fwd_fused(&conv, &b.upload(&x).unwrap(), &dw, Some(&dbias), None, res, &mut want).unwrap();
            let want = b.download(&want).unwrap();
            let want = if want_bf16 { on_grid_exact(&want) } else { want };
            let rs = stream_tensor(&b, &r);
            // From an f32 input (conv_in's) and from a stream tensor.
            let (x32, xs) = (b.upload(&x).unwrap(), stream_tensor(&b, &x));
            for (i, xin) in [ProductInput::F32(&x32), ProductInput::Operand(&xs)].into_iter().enumerate() {
                let y = b.conv2d_fwd_to_stream(&conv, xin, &dw, Some(&dbias), residual.then_some(&rs)).unwrap();
                let (is_bf16, got) = stored(&b, &y);
                let case = format!("conv2d_fwd_to_stream {precision:?} in_c {in_c} residual {residual} input {i}");
                assert_eq!(is_bf16, want_bf16, "{case}: precision of the stored tensor");
                assert_eq!(bits(&got), bits(&want), "{case}: not the f32 sum (rounded once at bf16)");
            }
        }
        // The residual add and the concatenation.
        let (n, rows, c1, c2) = (5 * 7 * 16, 35, 16, 24);
        let (x, h) = (on_grid(rng, n, 3.0), random_vec(rng, n, -3.0, 3.0));
        let want = cpu_out(n, |y| CpuBackend.add_scaled(&x, &h, std::f32::consts::SQRT_2, y).unwrap());
        let y = b.add_scaled_operand(&stream_tensor(&b, &x), &b.upload(&h).unwrap(), std::f32::consts::SQRT_2).unwrap();
        let (is_bf16, got) = stored(&b, &y);
        assert_eq!(is_bf16, want_bf16, "add_scaled_operand {precision:?}");
        let want = if want_bf16 { on_grid_exact(&want) } else { want };
        assert_eq!(bits(&got), bits(&want), "add_scaled_operand {precision:?}");
        let (a, c) = (on_grid(rng, rows * c1, 3.0), on_grid(rng, rows * c2, 3.0));
        let want = cpu_out(rows * (c1 + c2), |y| CpuBackend.concat_channels(rows, c1, c2, &a, &c, y).unwrap());
        let y = b.concat_channels_operand(rows, c1, c2, &stream_tensor(&b, &a), &stream_tensor(&b, &c)).unwrap();
        let (is_bf16, got) = stored(&b, &y);
        assert!(is_bf16 == want_bf16 && bits(&got) == bits(&want), "concat_channels_operand {precision:?}");
        // Bad input: one-line errors.
        let mixed = [CudaOperand::F32(b.upload(&a).unwrap()), CudaOperand::Bf16(b.gpu.upload(&to_bf16(&c)).unwrap())];
        let err =
            b.concat_channels_operand(rows, c1, c2, &mixed[0], &mixed[1]).err().expect("mixed precisions").to_string();
        assert!(err.contains("concat_channels"), "{err}");
        let err = b.concat_channels_operand(rows, c1, c2, &stream_tensor(&b, &c), &stream_tensor(&b, &a)).err();
        assert!(err.expect("swapped lengths").to_string().contains("concat_channels"));
        let err = b.add_scaled_operand(&stream_tensor(&b, &x), &b.upload(&h[1..]).unwrap(), 1.0).err();
        assert!(err.expect("short h").to_string().contains("add_scaled"));
    }
}

/// A bf16 stream tensor read by a convolution with no bf16 kernel (channels not a multiple of 8):
/// forward and weight gradient from the widened input, bit for bit the f32 ones.
pub fn widened_where_no_bf16_kernel(gpu: &Gpu) {
    let rng = &mut rng_for("stream_widened");
    let b = CudaBackend::with_precision(gpu.clone(), Precision::Bf16);
    let conv = Conv2dShape::conv1x1(2, 3, 5, 12, 20);
    let x = on_grid(rng, conv.x_len(), 2.0);
    let (w, dy) = (random_vec(rng, conv.w_len(), -0.5, 0.5), random_vec(rng, conv.y_len(), -1.0, 1.0));
    let (dx32, dw, ddy) = (b.upload(&x).unwrap(), b.upload(&w).unwrap(), b.upload(&dy).unwrap());
    let xs = CudaOperand::Bf16(gpu.upload(&to_bf16(&x)).unwrap());
    let (mut want, mut got) =
        (b.upload(&vec![f32::NAN; conv.y_len()]).unwrap(), b.upload(&vec![f32::NAN; conv.y_len()]).unwrap());
    b.conv2d_fwd(&conv, &dx32, &dw, None, &mut want).unwrap();
    b.conv2d_fwd_from(&conv, &xs, &dw, None, None, None, &mut got).unwrap();
    assert_eq!(
        bits(&b.download(&got).unwrap()),
        bits(&b.download(&want).unwrap()),
        "conv2d_fwd_from a widened bf16 input"
    );
    let (mut want, mut got) =
        (b.upload(&vec![f32::NAN; conv.w_len()]).unwrap(), b.upload(&vec![f32::NAN; conv.w_len()]).unwrap());
    b.conv2d_bwd_weight(&conv, &dx32, &ddy, &mut want, None).unwrap();
    b.conv2d_bwd_weight_from(&conv, &xs, &ddy, &mut got, None).unwrap();
    assert_eq!(
        bits(&b.download(&got).unwrap()),
        bits(&b.download(&want).unwrap()),
        "conv2d_bwd_weight_from a widened bf16 input"
    );
}
