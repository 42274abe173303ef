//! The optimizer kernels (AdamW, EMA, global norm, scale) against the CPU reference, on any device.

use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers, Optimizer};
use ddpm::fast::bf16::Precision;
use ddpm::gpu::{Buffer, Gpu};
use ddpm::math::adamw::AdamWStep;
use ddpm::testing::{assert_close, random_vec, rng_for};
use half::bf16;

/// An AdamW step (`step`) on a weight kept as a bf16 copy (src/backend/cuda_weights.rs), from host
/// [p, g, m, v]: the copy is the updated weight rounded, bit for bit; returns p, m and v.
pub fn kept_adamw(
    gpu: &Gpu,
    [p, g, m, v]: [&Vec<f32>; 4],
    step: impl FnOnce(&CudaBackend, [&mut Buffer<f32>; 4]) -> anyhow::Result<()>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let b = CudaBackend::with_precision(gpu.clone(), Precision::Bf16).keeping_weights(true);
    let up = |x: &Vec<f32>| b.upload(x).unwrap();
    let (mut dp, mut dg, mut dm, mut dv) = (up(p), up(g), up(m), up(v));
    b.keep_product_weights(&[&dp]).unwrap();
    step(&b, [&mut dp, &mut dg, &mut dm, &mut dv]).unwrap();
    let p = b.download(&dp).unwrap();
    let copy = b.kept_weight(&dp).unwrap().expect("kept");
    let stale = p.iter().zip(&copy).filter(|(p, c)| bf16::from_f32(**p).to_bits() != c.to_bits()).count();
    assert_eq!(stale, 0, "{stale} of {} copy elements are not the updated weight rounded", p.len());
    // The launcher refuses a copy of another length.
    let short = gpu.alloc::<bf16>(p.len() + 1).unwrap();
    let s = AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 1.0);
    let err = ddpm::cuda::optim::adamw_step_f32(&mut dp, &dg, &mut dm, &mut dv, Some(&short), &s).unwrap_err();
    assert!(err.to_string().contains("bf16 copy has"), "{err}");
    (p, b.download(&dm).unwrap(), b.download(&dv).unwrap())
}

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
        let (kp, km, kv) = kept_adamw(gpu, [&p0, &g, &m0, &v0], |b, [p, g, m, v]| b.adamw_step(p, g, m, v, &s));
        for (what, k, d) in [("param", &kp, &dp), ("exp_avg", &km, &dm), ("exp_avg_sq", &kv, &dv)] {
            assert_close(&format!("adamw with a kept copy: {what} n={n}"), k, &emu.download(d).unwrap(), 0.0, 0.0);
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
