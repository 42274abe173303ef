//! The optimizer kernels (AdamW, EMA, global norm, scale) against the CPU reference, on any device.

use ddpm::backend::{Backend, CpuBackend, CudaBackend, Optimizer};
use ddpm::gpu::Gpu;
use ddpm::math::adamw::AdamWStep;
use ddpm::testing::{assert_close, random_vec, rng_for};

/// AdamW, EMA, global norm and scale on `gpu` against the CPU reference.
pub fn parity(gpu: &Gpu) {
    let emu = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("optimizer_kernels");
    // 70_001 takes 5 blocks of the sum of squares, with a tail after its 4-deep loop; 300_007 takes 19.
    for n in [1usize, 33, 1000, 70_001, 300_007] {
        let (p0, g) = (random_vec(&mut rng, n, -1.0, 1.0), random_vec(&mut rng, n, -0.1, 0.1));
        let (m0, v0) = (random_vec(&mut rng, n, -0.01, 0.01), random_vec(&mut rng, n, 0.0, 0.01));
        let s = AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 7, 0.5);
        let (mut cp, mut cm, mut cv) = (p0.clone(), m0.clone(), v0.clone());
        CpuBackend.adamw_step(&mut cp, &g, &mut cm, &mut cv, &s).unwrap();
        let (mut dp, dg, mut dm, mut dv) =
            (emu.upload(&p0).unwrap(), emu.upload(&g).unwrap(), emu.upload(&m0).unwrap(), emu.upload(&v0).unwrap());
        emu.adamw_step(&mut dp, &dg, &mut dm, &mut dv, &s).unwrap();
        for (what, d, c) in [("param", &dp, &cp), ("exp_avg", &dm, &cm), ("exp_avg_sq", &dv, &cv)] {
            assert_close(&format!("adamw {what} n={n}"), &emu.download(d).unwrap(), c, 1e-7, 1e-6);
        }
        let mut ce = m0.clone();
        CpuBackend.ema_update(&mut ce, &p0, 0.99).unwrap();
        let mut de = emu.upload(&m0).unwrap();
        let dp0 = emu.upload(&p0).unwrap();
        emu.ema_update(&mut de, &dp0, 0.99).unwrap();
        assert_close(&format!("ema n={n}"), &emu.download(&de).unwrap(), &ce, 1e-7, 1e-6);
        let tensors = [emu.upload(&p0).unwrap(), emu.upload(&g).unwrap()];
        let norm = emu.global_norm(&tensors).unwrap();
        let want = CpuBackend.global_norm(&[p0.clone(), g.clone()]).unwrap();
        assert!((norm - want).abs() <= 1e-5 * want, "global norm n={n}: {norm} vs {want}");
        let mut x = emu.upload(&g).unwrap();
        emu.scale(&mut x, 0.25).unwrap();
        let mut cx = g.clone();
        CpuBackend.scale(&mut cx, 0.25).unwrap();
        assert_close(&format!("scale n={n}"), &emu.download(&x).unwrap(), &cx, 0.0, 0.0);
    }
}
