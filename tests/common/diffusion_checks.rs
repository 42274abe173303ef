//! Diffusion-process checks written once over the Backend trait: against diffusers' fixtures, and
//! CUDA backend against the CPU backend. Run on the CPU backend and the emulator in
//! tests/diffusion_*.rs, and on a real GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s, worst_error};
use ddpm::backend::{Backend, CpuBackend, CudaBackend};
use ddpm::diffusion::{
    DdimScheduler, DdpmScheduler, Noise, NoiseSchedule, PhiloxStream, PredictionType, SchedulerConfig, TimestepSpacing,
    VarianceType,
};
use ddpm::gpu::Gpu;
use ddpm::testing::{assert_close, random_vec, rng_for, tol};
use serde_json::Value;

fn diffusion_fixture() -> Fixture {
    Fixture::load("diffusion.json")
}

fn prediction(v: &Value) -> PredictionType {
    match v.as_str().unwrap() {
        "epsilon" => PredictionType::Epsilon,
        "sample" => PredictionType::Sample,
        _ => PredictionType::VPrediction,
    }
}

/// Which of the fixture's outputs to compare against: diffusers as it ran on the CPU, or with
/// IEEE (correctly rounded) sqrt/log/exp, as diffusers computes on a GPU (see the fixture script).
#[derive(Clone, Copy)]
pub enum Reference {
    DiffusersCpu,
    DiffusersIeee,
}

/// A step run on a backend: (sample, model output, noise, prev sample out).
type StepRun<'a, Buf> = &'a dyn Fn(&Buf, &Buf, &Buf, &mut Buf);

/// Runs every DDPM and DDIM step case of the fixture on `b`; returns the largest absolute error
/// against diffusers' prev_sample, after asserting it is within `atol` (0 means bit for bit).
pub fn steps_match_diffusers<B: Backend>(b: &B, reference: Reference, atol: f32) -> f32 {
    let key = match reference {
        Reference::DiffusersCpu => "prev_sample",
        Reference::DiffusersIeee => "prev_sample_ieee",
    };
    let f = diffusion_fixture();
    let mut worst = 0f32;
    let mut check = |what: String, case: &Value, run: StepRun<B::Buf>| {
        let (sample, model_out, noise) = (f32s(&case["sample"]), f32s(&case["model_output"]), f32s(&case["noise"]));
        let want = f32s(&case[key]);
        let (s, m, z) = (b.upload(&sample).unwrap(), b.upload(&model_out).unwrap(), b.upload(&noise).unwrap());
        let mut prev = b.upload(&vec![f32::NAN; want.len()]).unwrap();
        run(&s, &m, &z, &mut prev);
        let got = b.download(&prev).unwrap();
        worst = worst.max(worst_error(&got, &want));
        assert_close(&what, &got, &want, atol, 0.0);
    };
    for case in f.json["ddpm_steps"].as_array().unwrap() {
        let mut config = SchedulerConfig {
            prediction_type: prediction(&case["prediction_type"]),
            clip_sample: Some(case["clip_sample"].as_bool().unwrap()),
            clip_sample_range: case["clip_sample_range"].as_f64().unwrap() as f32,
            ..Default::default()
        };
        config.variance_type = match case["variance_type"].as_str().unwrap() {
            "fixed_small" => VarianceType::FixedSmall,
            "fixed_small_log" => VarianceType::FixedSmallLog,
            _ => VarianceType::FixedLarge,
        };
        let mut sched = DdpmScheduler::new(config).unwrap();
        sched.set_timesteps(case["steps"].as_u64().unwrap() as usize).unwrap();
        let c = sched.step_params(case["timestep"].as_u64().unwrap() as usize).unwrap();
        let what = format!(
            "DDPM step {} {} clip={} t={}",
            case["prediction_type"], case["variance_type"], case["clip_sample"], case["timestep"]
        );
        check(what, case, &|s, m, z, p| b.ddpm_step(&c, s, m, Noise::Given(z), p).unwrap());
    }
    for case in f.json["ddim_steps"].as_array().unwrap() {
        let config = SchedulerConfig {
            prediction_type: prediction(&case["prediction_type"]),
            clip_sample: Some(case["clip_sample"].as_bool().unwrap()),
            set_alpha_to_one: case["set_alpha_to_one"].as_bool().unwrap(),
            timestep_spacing: if case["timestep_spacing"] == "trailing" {
                TimestepSpacing::Trailing
            } else {
                TimestepSpacing::Leading
            },
            ..Default::default()
        };
        let mut sched = DdimScheduler::new(config).unwrap();
        sched.set_timesteps(case["steps"].as_u64().unwrap() as usize).unwrap();
        let eta = case["eta"].as_f64().unwrap() as f32;
        let c = sched
            .step_params(
                case["timestep"].as_u64().unwrap() as usize,
                eta,
                case["use_clipped_model_output"].as_bool().unwrap(),
            )
            .unwrap();
        let what = format!(
            "DDIM step {} eta={eta} t={} {}",
            case["prediction_type"], case["timestep"], case["timestep_spacing"]
        );
        check(what, case, &|s, m, z, p| b.ddim_step(&c, s, m, Noise::Given(z), p).unwrap());
    }
    worst
}

/// diffusers' add_noise on the fixture's x0, noise and timesteps.
pub fn add_noise_matches_diffusers<B: Backend>(b: &B, reference: Reference, atol: f32) -> f32 {
    let f = diffusion_fixture();
    let case = &f.json["add_noise"];
    let sched = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let tables = b.schedule_tables(&sched).unwrap();
    let t: Vec<u32> = case["timesteps"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let key = match reference {
        Reference::DiffusersCpu => "noisy",
        Reference::DiffusersIeee => "noisy_ieee",
    };
    let (x0, noise, want) = (f32s(&case["x0"]), f32s(&case["noise"]), f32s(&case[key]));
    let (dx0, dz, dt) = (b.upload(&x0).unwrap(), b.upload(&noise).unwrap(), b.upload_u32(&t).unwrap());
    let mut xt = b.upload(&vec![f32::NAN; x0.len()]).unwrap();
    b.q_sample(&dx0, &dt, &tables, Noise::Given(&dz), &mut xt).unwrap();
    let got = b.download(&xt).unwrap();
    assert_close("add_noise", &got, &want, atol, 0.0);
    worst_error(&got, &want)
}

const SIZES: &[usize] = &[1, 5, 33, 1000, 4097, 70_001];

/// Timesteps and normals from the Philox stream: CUDA backend vs CPU. Timesteps and uniforms
/// are bitwise; normals within 2 ulp (they are bitwise on the emulator, whose libm is the host's).
pub fn rng_parity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    for &n in SIZES {
        let stream = PhiloxStream { seed: 0x5eed_0000_0000 + n as u64, offset: 3 };
        let mut t = b.upload_u32(&vec![u32::MAX; n]).unwrap();
        b.sample_timesteps(&mut t, 1000, stream).unwrap();
        let mut want = vec![0u32; n];
        CpuBackend.sample_timesteps(&mut want, 1000, stream).unwrap();
        assert_eq!(b.download_u32(&t).unwrap(), want, "timesteps n={n}");
        let mut z = b.upload(&vec![f32::NAN; n]).unwrap();
        b.fill_normal(&mut z, stream).unwrap();
        let mut want = vec![f32::NAN; n];
        CpuBackend.fill_normal(&mut want, stream).unwrap();
        for (i, (g, w)) in b.download(&z).unwrap().iter().zip(&want).enumerate() {
            let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
            assert!(ulps <= 2, "normal n={n} i={i}: {g} vs {w} ({ulps} ulp)");
        }
    }
}

/// Forward noising, the loss and its gradient, DDPM and DDIM steps with Philox noise: CUDA
/// backend vs CPU, outputs poisoned, odd sizes.
pub fn process_parity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("process_parity");
    let sched = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let (tables, cpu_tables) = (b.schedule_tables(&sched).unwrap(), CpuBackend.schedule_tables(&sched).unwrap());
    for &(batch, per_image) in &[(1usize, 1usize), (3, 31), (2, 3 * 17 * 9), (5, 1000)] {
        let n = batch * per_image;
        let stream = PhiloxStream { seed: 42 + n as u64, offset: 7 };
        let x0 = random_vec(&mut rng, n, -1.0, 1.0);
        let t: Vec<u32> = (0..batch).map(|i| (i as u32 * 397 + 11) % 1000).collect();
        let (dx0, dt) = (b.upload(&x0).unwrap(), b.upload_u32(&t).unwrap());
        let mut xt = b.upload(&vec![f32::NAN; n]).unwrap();
        b.q_sample(&dx0, &dt, &tables, Noise::Philox(stream), &mut xt).unwrap();
        let mut want = vec![f32::NAN; n];
        CpuBackend.q_sample(&x0, &t, &cpu_tables, Noise::Philox(stream), &mut want).unwrap();
        assert_close(&format!("q_sample n={n}"), &b.download(&xt).unwrap(), &want, tol::F32_ATOL, tol::F32_RTOL);

        let pred = random_vec(&mut rng, n, -2.0, 2.0);
        let dpred = b.upload(&pred).unwrap();
        let mut loss = b.upload(&[f32::NAN]).unwrap();
        b.mse_loss(&dpred, Noise::Philox(stream), &mut loss).unwrap();
        let first = b.download(&loss).unwrap();
        b.mse_loss(&dpred, Noise::Philox(stream), &mut loss).unwrap();
        assert_eq!(first[0].to_bits(), b.download(&loss).unwrap()[0].to_bits(), "loss bits differ between runs");
        let mut want = vec![f32::NAN];
        CpuBackend.mse_loss(&pred, Noise::Philox(stream), &mut want).unwrap();
        assert_close(&format!("mse_loss n={n}"), &first, &want, 0.0, 1e-5);

        let mut grad = b.upload(&vec![f32::NAN; n]).unwrap();
        b.mse_loss_bwd(&dpred, Noise::Philox(stream), 0.75, &mut grad).unwrap();
        let mut want = vec![f32::NAN; n];
        CpuBackend.mse_loss_bwd(&pred, Noise::Philox(stream), 0.75, &mut want).unwrap();
        assert_close(&format!("mse_loss_bwd n={n}"), &b.download(&grad).unwrap(), &want, tol::F32_ATOL, tol::F32_RTOL);

        let sample = random_vec(&mut rng, n, -3.0, 3.0);
        let (ds, dm) = (b.upload(&sample).unwrap(), dpred);
        for prediction in [PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction] {
            let config = SchedulerConfig { prediction_type: prediction, ..Default::default() };
            let mut ddpm = DdpmScheduler::new(config.clone()).unwrap();
            ddpm.set_timesteps(20).unwrap();
            let mut ddim = DdimScheduler::new(config).unwrap();
            ddim.set_timesteps(20).unwrap();
            for &t in &[ddpm.timesteps[3], 0] {
                let c = ddpm.step_params(t).unwrap();
                let mut prev = b.upload(&vec![f32::NAN; n]).unwrap();
                b.ddpm_step(&c, &ds, &dm, Noise::Philox(stream), &mut prev).unwrap();
                let mut want = vec![f32::NAN; n];
                CpuBackend.ddpm_step(&c, &sample, &pred, Noise::Philox(stream), &mut want).unwrap();
                assert_close(
                    &format!("ddpm_step {prediction:?} t={t} n={n}"),
                    &b.download(&prev).unwrap(),
                    &want,
                    tol::F32_ATOL,
                    tol::F32_RTOL,
                );
            }
            for eta in [0.0, 0.7] {
                let c = ddim.step_params(ddim.timesteps[5], eta, eta > 0.0).unwrap();
                let mut prev = b.upload(&vec![f32::NAN; n]).unwrap();
                b.ddim_step(&c, &ds, &dm, Noise::Philox(stream), &mut prev).unwrap();
                let mut want = vec![f32::NAN; n];
                CpuBackend.ddim_step(&c, &sample, &pred, Noise::Philox(stream), &mut want).unwrap();
                assert_close(
                    &format!("ddim_step {prediction:?} eta={eta} n={n}"),
                    &b.download(&prev).unwrap(),
                    &want,
                    tol::F32_ATOL,
                    tol::F32_RTOL,
                );
            }
        }
    }
}
