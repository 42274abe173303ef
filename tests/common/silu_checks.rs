//! The SiLU kernels on the CUDA backend (emulated or real) against the CPU backend, written once:
//! run on the emulator in tests/silu.rs and on a GPU in tests/gpu.rs.

use super::parity::{SIZES, poisoned};
use ddpm::backend::{Backend, CpuBackend, CudaBackend};
use ddpm::gpu::Gpu;
use ddpm::testing::{assert_close, random_vec, rng_for, tol};

pub fn parity(gpu: &Gpu) {
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
