//! The optimizer ops against PyTorch's AdamW and diffusers' EMA schedule, and the CUDA kernels on
//! the emulator against the CPU reference.

mod common;
use common::fixtures::{Fixture, f32s, worst_error};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Optimizer};
use ddpm::cpu::optim::AdamWStep;
use ddpm::testing::{assert_close, random_vec, rng_for};
use ddpm::train::schedule::ema_decay;

fn adamw_matches_torch<B: Optimizer>(b: &B) -> f32 {
    let f = Fixture::load("optim.json");
    let mut p = b.upload(&f32s(&f.json["p0"])).unwrap();
    let n = B::len(&p);
    let (mut m, mut v) = (b.upload(&vec![0.0; n]).unwrap(), b.upload(&vec![0.0; n]).unwrap());
    let mut worst = 0f32;
    for (step, (g, want)) in f.json["grads"].as_array().unwrap().iter().zip(f.json["params"].as_array().unwrap()).enumerate() {
        let g = b.upload(&f32s(g)).unwrap();
        let s = AdamWStep::new(1e-3, 0.95, 0.999, 1e-8, 1e-2, step as u64 + 1, 1.0);
        b.adamw_step(&mut p, &g, &mut m, &mut v, &s).unwrap();
        let (got, want) = (b.download(&p).unwrap(), f32s(want));
        worst = worst.max(worst_error(&got, &want));
        // torch computes the same f32 operations; a few ulps of |p| ~ 1 cover operation order.
        assert_close(&format!("AdamW step {}", step + 1), &got, &want, 1e-6, 1e-6);
    }
    worst
}

#[test]
fn adamw_matches_pytorch_on_cpu_and_emulator() {
    let cpu = adamw_matches_torch(&CpuBackend);
    let emu = adamw_matches_torch(&CudaBackend::new(common::emu()));
    common::say(&format!("AdamW vs torch.optim.AdamW, 3 steps: largest abs error {cpu:e} (CPU), {emu:e} (emulated kernel)"));
}

#[test]
fn ema_decay_matches_diffusers() {
    let f = Fixture::load("optim.json");
    for (step, want) in f.json["ema_steps"].as_array().unwrap().iter().zip(f.json["ema_decays"].as_array().unwrap()) {
        let got = ema_decay(step.as_u64().unwrap(), 1.0, 0.75, 0.9999) as f64;
        assert!((got - want.as_f64().unwrap()).abs() < 1e-7, "step {step}: {got} vs {want}");
    }
}

#[test]
fn optimizer_kernels_match_cpu_on_the_emulator() {
    let emu = CudaBackend::new(common::emu());
    let mut rng = rng_for("optimizer_kernels");
    for n in [1usize, 33, 1000, 70_001] {
        let (p0, g) = (random_vec(&mut rng, n, -1.0, 1.0), random_vec(&mut rng, n, -0.1, 0.1));
        let (m0, v0) = (random_vec(&mut rng, n, -0.01, 0.01), random_vec(&mut rng, n, 0.0, 0.01));
        let s = AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 7, 0.5);
        let (mut cp, mut cm, mut cv) = (p0.clone(), m0.clone(), v0.clone());
        CpuBackend.adamw_step(&mut cp, &g, &mut cm, &mut cv, &s).unwrap();
        let (mut dp, dg, mut dm, mut dv) = (emu.upload(&p0).unwrap(), emu.upload(&g).unwrap(), emu.upload(&m0).unwrap(), emu.upload(&v0).unwrap());
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
