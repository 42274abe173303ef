//! The optimizer ops against PyTorch's AdamW and diffusers' EMA schedule, and the CUDA kernels on
//! the emulator against the CPU reference.

mod common;
use common::fixtures::{Fixture, f32s, worst_error};
use ddpm::backend::{Backend, Optimizer};
use ddpm::math::adamw::AdamWStep;
use ddpm::testing::assert_close;
use ddpm::train::schedule::ema_decay;

fn adamw_matches_torch<B: Optimizer>(b: &B) -> f32 {
    let f = Fixture::load("optim.json");
    let mut p = b.upload(&f32s(&f.json["p0"])).unwrap();
    let n = B::len(&p);
    let (mut m, mut v) = (b.upload(&vec![0.0; n]).unwrap(), b.upload(&vec![0.0; n]).unwrap());
    let mut worst = 0f32;
    for (step, (g, want)) in
        f.json["grads"].as_array().unwrap().iter().zip(f.json["params"].as_array().unwrap()).enumerate()
    {
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

on_every_backend!(adamw_matches_pytorch => |b| {
    let worst = adamw_matches_torch(b);
    common::say(&format!("AdamW vs torch.optim.AdamW, 3 steps ({}): largest abs error {worst:e}", Backend::name(b)));
});

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
    common::optim_checks::parity(&common::emu());
}

#[test]
fn sum_squares_grid_is_fixed_by_the_length() {
    use ddpm::cuda::optim::{SUM_MAX_PARTS, sum_squares_parts};
    assert_eq!(sum_squares_parts(0), 1);
    assert_eq!(sum_squares_parts(1), 1);
    assert_eq!(sum_squares_parts(16 * 1024), 1);
    assert_eq!(sum_squares_parts(16 * 1024 + 1), 2);
    assert_eq!(sum_squares_parts(300_007), 19);
    assert_eq!(sum_squares_parts(64 << 20), SUM_MAX_PARTS);
}
