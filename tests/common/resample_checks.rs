//! Checks of nearest 2x upsampling and its backward written once: the CUDA backend (emulated or
//! real) against the CPU backend, and any backend against PyTorch (tests/fixtures/resample.json,
//! from tests/fixtures/make_resample_fixtures.py). Run on the emulator in tests/resample.rs and on
//! a GPU in tests/gpu.rs.

use super::fixtures::{Fixture, check_fixture as check, dims, f32s, run};
use super::parity::{EXACT, IMAGES, bits, cpu_out, dev_out};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::nchw_to_nhwc;
use ddpm::shapes::ImageShape;
use ddpm::testing::{assert_close, random_vec, rng_for};

/// Upsampling forward and backward on `gpu` (emulated or real) against the CPU backend.
pub fn parity(gpu: &Gpu) {
    let b = &CudaBackend::new(gpu.clone());
    let rng = &mut rng_for("resample_parity");
    for s in IMAGES {
        let n = s.len();
        let x = random_vec(rng, n, -2.0, 2.0);
        let want = cpu_out(4 * n, |y| CpuBackend.upsample_nearest2x_fwd(s, &x, y).unwrap());
        let dx = b.upload(&x).unwrap();
        let got = dev_out(b, 4 * n, |y| b.upsample_nearest2x_fwd(s, &dx, y).unwrap());
        assert_close(&format!("upsample_nearest2x_fwd {s:?}"), &got, &want, EXACT, EXACT);

        let dy = random_vec(rng, 4 * n, -1.0, 1.0);
        let want = cpu_out(n, |g| CpuBackend.upsample_nearest2x_bwd(s, &dy, g).unwrap());
        let ddy = b.upload(&dy).unwrap();
        let first = dev_out(b, n, |g| b.upsample_nearest2x_bwd(s, &ddy, g).unwrap());
        assert_close(&format!("upsample_nearest2x_bwd {s:?}"), &first, &want, EXACT, EXACT);
        let again = dev_out(b, n, |g| b.upsample_nearest2x_bwd(s, &ddy, g).unwrap());
        assert_eq!(bits(&first), bits(&again), "upsample_nearest2x_bwd {s:?}: bits differ between two runs");
    }
}

/// Upsampling against PyTorch: interpolate(scale_factor=2, mode="nearest") and the gradient of
/// sum(r * y). Returns (tensor, largest abs error, largest rel error) per compared tensor.
pub fn upsample_matches_torch<B: Layers>(b: &B) -> Vec<(String, f32, f32)> {
    let f = Fixture::load("resample.json");
    let mut report = Vec::new();
    let up = |v: &[f32]| b.upload(v).unwrap();

    let u = &f.json["upsample"];
    let [n, c, h, w] = dims(&u["shape"])[..] else { panic!("upsample shape") };
    let s = ImageShape { batch: n, h, w, c };
    let x = nchw_to_nhwc(&f32s(&u["x"]), n, c, h, w);
    let r = nchw_to_nhwc(&f32s(&u["r"]), n, c, 2 * h, 2 * w);
    let y = run(b, 4 * s.len(), |y| b.upsample_nearest2x_fwd(&s, &up(&x), y).unwrap());
    check(&mut report, "upsample y", &y, &nchw_to_nhwc(&f32s(&u["y"]), n, c, 2 * h, 2 * w));
    let dx = run(b, s.len(), |g| b.upsample_nearest2x_bwd(&s, &up(&r), g).unwrap());
    check(&mut report, "upsample dx", &dx, &nchw_to_nhwc(&f32s(&u["dx"]), n, c, h, w));

    report
}

/// The upsampled image a bf16 convolution reads (`upsample_nearest2x_fwd_to_bf16_f32`, issue #17):
/// the f32 upsampling rounded to nearest even, bit for bit, into a NaN-poisoned buffer, on every
/// parity shape (one channel, odd sizes, 33 channels). Then the per-layer decision behind
/// `upsample_nearest2x_fwd_operand`, from an f32 or a bf16 input: bf16 only at `--precision bf16`
/// for a convolution whose channel count the bf16 kernels take (16 yes, 12 no). Run on the emulator in tests/resample.rs
/// and on a GPU in tests/gpu.rs.
pub fn bf16_output(gpu: &Gpu) {
    use ddpm::backend::{Consumer, CudaOperand};
    use ddpm::cuda::resample::upsample_nearest2x_fwd_to_bf16_f32;
    use ddpm::fast::bf16::Precision;
    use ddpm::shapes::Conv2dShape;
    use half::bf16;
    let rounded = |v: &[f32]| v.iter().map(|&v| bf16::from_f32(v).to_bits()).collect::<Vec<u16>>();
    let rng = &mut rng_for("upsample_bf16_output");
    for s in IMAGES {
        let x = random_vec(rng, s.len(), -3.0, 3.0);
        let want = cpu_out(4 * s.len(), |y| CpuBackend.upsample_nearest2x_fwd(s, &x, y).unwrap());
        let mut y = gpu.upload(&vec![bf16::NAN; 4 * s.len()]).unwrap();
        upsample_nearest2x_fwd_to_bf16_f32(s, &gpu.upload(&x).unwrap(), &mut y).unwrap();
        let got: Vec<u16> = gpu.download(&y).unwrap().iter().map(|v| v.to_bits()).collect();
        assert!(got == rounded(&want), "upsample_nearest2x_fwd_to_bf16 {s:?}: not the f32 upsampling rounded");
    }
    // From an f32 input and from a bf16 one (the residual stream in bf16, whose values are
    // exactly the rounded f32 ones): the output is the upsampling of the input's values, rounded
    // once where it is stored in bf16.
    for (precision, c, want_bf16) in
        [(Precision::Bf16, 16, true), (Precision::Bf16, 12, false), (Precision::F32, 16, false)]
    {
        for bf16_input in [false, true] {
            let b = CudaBackend::with_precision(gpu.clone(), precision);
            let s = ImageShape { batch: 2, h: 3, w: 5, c };
            let conv = Conv2dShape::conv3x3(2, 6, 10, c, c);
            let mut x = random_vec(rng, s.len(), -3.0, 3.0);
            if bf16_input {
                x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
            }
            let want = cpu_out(4 * s.len(), |y| CpuBackend.upsample_nearest2x_fwd(&s, &x, y).unwrap());
            let x = match bf16_input {
                true => {
                    CudaOperand::Bf16(gpu.upload(&x.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap())
                }
                false => CudaOperand::F32(b.upload(&x).unwrap()),
            };
            let case = format!("{precision:?} {c} channels, bf16 input {bf16_input}");
            match b.upsample_nearest2x_fwd_operand(&s, &x, Consumer::Conv(&conv)).unwrap() {
                CudaOperand::Bf16(up) => {
                    assert!(want_bf16, "{case}: stored in bf16");
                    let got: Vec<u16> = gpu.download(&up).unwrap().iter().map(|v| v.to_bits()).collect();
                    assert!(got == rounded(&want), "{case}: not the f32 upsampling rounded");
                }
                CudaOperand::F32(up) => {
                    assert!(!want_bf16, "{case}: stored in f32");
                    assert_eq!(bits(&b.download(&up).unwrap()), bits(&want), "{case}: not the f32 upsampling");
                }
            }
        }
    }
}
