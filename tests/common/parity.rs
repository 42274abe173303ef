//! Each op on the CUDA backend (emulated or real) against the CPU backend: fresh random inputs,
//! odd sizes, outputs poisoned with NaN before the run, every element compared.

use ddpm::backend::{Backend, CpuBackend, CudaBackend};
use ddpm::gpu::Gpu;
use ddpm::testing::{assert_close, random_vec, rng_for, tol};

/// Sizes that are not multiples of 32 or of the 256-thread blocks, plus a few that are.
pub const SIZES: &[usize] = &[1, 7, 31, 32, 33, 255, 256, 257, 1000, 4099, 65_537, 300_001];
/// (rows, cols) for the row reduction.
pub const SHAPES: &[(usize, usize)] = &[(1, 1), (3, 31), (7, 257), (2, 1000), (5, 4099), (64, 3), (1, 70_001)];

fn poisoned(b: &CudaBackend, n: usize) -> <CudaBackend as Backend>::Buf {
    b.upload(&vec![f32::NAN; n]).unwrap()
}

pub fn fill(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("fill");
    for &n in SIZES {
        let value = random_vec(&mut rng, 1, -5.0, 5.0)[0];
        let mut want = vec![f32::NAN; n];
        CpuBackend.fill(&mut want, value).unwrap();
        let mut out = poisoned(&b, n);
        b.fill(&mut out, value).unwrap();
        assert_close(&format!("fill n={n}"), &b.download(&out).unwrap(), &want, 0.0, 0.0);
    }
}

pub fn axpy(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("axpy");
    for &n in SIZES {
        let (x, y0) = (random_vec(&mut rng, n, -2.0, 2.0), random_vec(&mut rng, n, -2.0, 2.0));
        let a = random_vec(&mut rng, 1, -3.0, 3.0)[0];
        let mut want = y0.clone();
        CpuBackend.axpy(a, &x, &mut want).unwrap();
        let dx = b.upload(&x).unwrap();
        let mut dy = b.upload(&y0).unwrap();
        b.axpy(a, &dx, &mut dy).unwrap();
        // Both sides use one fused multiply-add per element: bitwise equal.
        assert_close(&format!("axpy n={n}"), &b.download(&dy).unwrap(), &want, 0.0, 0.0);
    }
}

pub fn row_sum_sumsq(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("row_sum_sumsq");
    for &(rows, cols) in SHAPES {
        let x = random_vec(&mut rng, rows * cols, -1.0, 1.0);
        let (mut s, mut ss) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
        CpuBackend.row_sum_sumsq(&x, rows, cols, &mut s, &mut ss).unwrap();
        let dx = b.upload(&x).unwrap();
        let (mut ds, mut dss) = (poisoned(&b, rows), poisoned(&b, rows));
        b.row_sum_sumsq(&dx, rows, cols, &mut ds, &mut dss).unwrap();
        // The reference is exact (f64); the kernel adds |x| <= 1 terms in f32 along a tree of
        // depth ~log2(cols), so its error is below cols * 2^-24 * log2(cols) < 1e-6 * cols.
        let atol = 1e-6 * cols as f32;
        assert_close(&format!("row sum {rows}x{cols}"), &b.download(&ds).unwrap(), &s, atol, tol::F32_RTOL);
        assert_close(&format!("row sumsq {rows}x{cols}"), &b.download(&dss).unwrap(), &ss, atol, tol::F32_RTOL);
    }
}

pub fn silu(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("silu");
    for &n in SIZES {
        let (x, dy) = (random_vec(&mut rng, n, -8.0, 8.0), random_vec(&mut rng, n, -1.0, 1.0));
        let (mut y, mut dx) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        CpuBackend.silu_fwd(&x, &mut y).unwrap();
        CpuBackend.silu_bwd(&x, &dy, &mut dx).unwrap();
        let (gx, gdy) = (b.upload(&x).unwrap(), b.upload(&dy).unwrap());
        let (mut gy, mut gdx) = (poisoned(&b, n), poisoned(&b, n));
        b.silu_fwd(&gx, &mut gy).unwrap();
        b.silu_bwd(&gx, &gdy, &mut gdx).unwrap();
        assert_close(&format!("silu_fwd n={n}"), &b.download(&gy).unwrap(), &y, tol::F32_ATOL, tol::F32_RTOL);
        assert_close(&format!("silu_bwd n={n}"), &b.download(&gdx).unwrap(), &dx, tol::F32_ATOL, tol::F32_RTOL);
    }
}

/// Every op, for the GPU suite.
pub fn all(gpu: &Gpu) {
    fill(gpu);
    axpy(gpu);
    row_sum_sumsq(gpu);
    silu(gpu);
}
