//! The diffusion process itself (the seed document's equations), checked statistically and with
//! an oracle model.

use ddpm::backend::{Backend, CpuBackend, CudaBackend};
use ddpm::diffusion::{DdimScheduler, Noise, NoiseSchedule, PhiloxStream, SchedulerConfig};
use ddpm::gpu::Gpu;
use ddpm::math::philox;
use rayon::prelude::*;

fn linear_schedule() -> NoiseSchedule {
    NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap()
}

fn mean_and_variance(v: &[f32]) -> (f64, f64) {
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    (mean, v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64)
}

fn normals(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    philox::fill_normal(seed, 0, 0, &mut v);
    v
}

/// Eqs. 3-5: with x_0 ~ N(0, 1), x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps keeps unit variance at
/// every t. 10^6 samples per t, all 1000 t, through the CPU reference's noising.
#[test]
fn variance_is_preserved_at_every_timestep() {
    let n = 1_000_000;
    let s = linear_schedule();
    let tables = CpuBackend.schedule_tables(&s).unwrap();
    let x0 = normals(1, n);
    let eps = normals(2, n);
    let worst = (0..1000u32)
        .into_par_iter()
        .map(|t| {
            let mut xt = vec![0f32; n];
            ddpm::cpu::diffusion::q_sample(
                &x0,
                &[t],
                &tables.sqrt_abar,
                &tables.sqrt_one_minus_abar,
                Noise::Given(&eps),
                &mut xt,
            );
            let (_, var) = mean_and_variance(&xt);
            assert!((var - 1.0).abs() < 0.01, "t={t}: variance {var}");
            (var - 1.0).abs()
        })
        .reduce(|| 0.0, f64::max);
    println!("largest |var(x_t) - 1| over t: {worst:.5}");
}

/// For T = 1000, x_T is N(0, 1) whatever x_0 is in [-1, 1].
#[test]
fn x_t_forgets_x_0() {
    let n = 1_000_000;
    let s = linear_schedule();
    let tables = CpuBackend.schedule_tables(&s).unwrap();
    let eps = normals(3, n);
    for x0_value in [-1.0f32, -0.3, 0.0, 0.5, 1.0] {
        let x0 = vec![x0_value; n];
        let mut xt = vec![0f32; n];
        ddpm::cpu::diffusion::q_sample(
            &x0,
            &[999],
            &tables.sqrt_abar,
            &tables.sqrt_one_minus_abar,
            Noise::Given(&eps),
            &mut xt,
        );
        let (mean, var) = mean_and_variance(&xt);
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "x0={x0_value}: mean {mean} var {var}");
    }
}

/// DDIM with eta = 0 and an oracle model that returns the true noise walks back along the
/// forward trajectory: starting from x_t, sampling recovers x_0.
fn ddim_round_trip<B: Backend>(b: &B) {
    let n = 3 * 8 * 8 * 2;
    let mut rng = ddpm::testing::rng_for("ddim_round_trip");
    let x0 = ddpm::testing::random_vec(&mut rng, n, -1.0, 1.0);
    let eps = normals(9, n);
    let config = SchedulerConfig { clip_sample: false, ..Default::default() };
    let mut sched = DdimScheduler::new(config).unwrap();
    sched.set_timesteps(50).unwrap();
    let tables = b.schedule_tables(&sched.schedule).unwrap();
    let t0 = sched.timesteps[0] as u32;
    let (dx0, deps, dt) = (b.upload(&x0).unwrap(), b.upload(&eps).unwrap(), b.upload_u32(&[t0]).unwrap());
    let mut x = b.upload(&vec![f32::NAN; n]).unwrap();
    b.q_sample(&dx0, &dt, &tables, Noise::Given(&deps), &mut x).unwrap();
    let mut next = b.upload(&vec![f32::NAN; n]).unwrap();
    for &t in &sched.timesteps {
        let c = sched.step_params(t, 0.0, false).unwrap();
        b.ddim_step(&c, &x, &deps, Noise::Philox(PhiloxStream { seed: 0, offset: 0 }), &mut next).unwrap();
        std::mem::swap(&mut x, &mut next);
    }
    let got = b.download(&x).unwrap();
    let err = got.iter().zip(&x0).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
    assert!(err <= 1e-4, "{}: DDIM round trip error {err}", b.name());
    println!("{}: DDIM round trip max error {err:e}", b.name());
}

#[test]
fn ddim_with_an_oracle_recovers_x0_on_cpu() {
    ddim_round_trip(&CpuBackend);
}

#[test]
fn ddim_with_an_oracle_recovers_x0_on_the_emulator() {
    ddim_round_trip(&CudaBackend::new(Gpu::emulator().unwrap()));
}
