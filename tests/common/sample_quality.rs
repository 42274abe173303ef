//! Sample quality at bf16 (#17's criterion): a small model trained on the built-in shapes,
//! sampled from the same noise in f32 and in bf16; the bf16 samples' quality score
//! (src/data/quality.rs) must be within 10% of the f32 samples'. tests/training.rs runs it on the
//! CPU paths and the emulator with a model it trains; tests/gpu.rs on a GPU with one trained here.

use ddpm::backend::{CudaBackend, FastCpuBackend, Layers, SamplerOps};
use ddpm::diffusion::{DdimScheduler, SchedulerConfig};
use ddpm::fast::bf16::Precision;
use ddpm::gpu::Gpu;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::train::checkpoint;
use ddpm::train::run::{RunConfig, train};
use ddpm::train::schedule::LrSchedule;
use ddpm::train::step::OptimConfig;
use std::sync::atomic::AtomicBool;

/// The tiny family at 8x8 with 16 and 32 channels: what the training tests train.
pub fn small() -> UNetConfig {
    UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

/// A run of `steps` steps of `small()` on the built-in shapes, batch 4, constant lr 1e-3.
pub fn run_config(steps: u64) -> RunConfig {
    RunConfig {
        model: small(),
        data: "builtin".into(),
        batch: 4,
        steps,
        seed: 5,
        opt: OptimConfig {
            lr: 1e-3,
            warmup_steps: 2,
            schedule: LrSchedule::Constant,
            total_steps: steps,
            ..Default::default()
        },
        flip: true,
        checkpoint_every: 0,
        sample_every: 0,
        sample_count: 4,
        sample_steps: 5,
        show_progress: false,
        skip_nonfinite: false,
        graph: true,
    }
}

/// The model and EMA weights `dir`'s run wrote.
pub fn trained(r: &RunConfig, dir: &std::path::Path) -> (UNet, HostParams) {
    let unet = UNet::new(r.model.clone()).unwrap();
    let state = checkpoint::load(&dir.join(checkpoint::STATE_FILE), &unet.table).unwrap();
    let [_, _, _, ema] = state.groups;
    (unet, ema)
}

/// The quality score (lower is better) of 32 DDIM samples in `steps` steps of `unet` with
/// weights `ema` on `b`, from seed 1's noise (the same on every backend), and the pure-noise score
/// beside it.
pub fn score<B: Layers + SamplerOps>(b: &B, unet: &UNet, ema: &HostParams, steps: usize) -> (f64, f64) {
    let mut sched = DdimScheduler::new(SchedulerConfig::default()).unwrap();
    sched.set_timesteps(steps).unwrap();
    let sampler = ddpm::sample::Sampler::Ddim { scheduler: sched, eta: 0.0 };
    let x = ddpm::sample::generate(b, unet, &ema.upload(b).unwrap(), &sampler, 32, 1, &mut |_, _| {}).unwrap();
    ddpm::data::quality::score_against_generator(&x, 32, 8, 5)
}

/// The bf16 score against the f32 one: within 10%, and not the same samples (bf16 did run).
#[track_caller]
pub fn assert_within_ten_percent(what: &str, bf16: f64, f32: f64) {
    assert!((bf16 - f32).abs() <= 0.1 * f32, "{what}: bf16 samples score {bf16:.4}, f32 {f32:.4}");
    assert!(bf16 != f32, "{what}: the bf16 samples score exactly as the f32 ones ({f32}): bf16 did not run");
}

/// On a GPU: the small model trained 150 steps on the fast CPU path (as tests/training.rs
/// trains it), sampled in f32 and in bf16 on the device. Returns (f32, bf16, noise) scores.
pub fn cuda_bf16_quality(gpu: &Gpu) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = run_config(150);
    r.batch = 8;
    r.opt.warmup_steps = 10;
    train(&FastCpuBackend, &r, dir.path(), false, &AtomicBool::new(false)).unwrap();
    let (unet, ema) = trained(&r, dir.path());
    let (f32_score, noise) = score(&CudaBackend::with_precision(gpu.clone(), Precision::F32), &unet, &ema, 20);
    let (bf16_score, _) = score(&CudaBackend::with_precision(gpu.clone(), Precision::Bf16), &unet, &ema, 20);
    // Trained enough that the score means something (tests/training.rs's margin).
    assert!(f32_score < 0.75 * noise, "f32 samples score {f32_score:.4}, pure noise {noise:.4}: not trained");
    assert_within_ten_percent("CUDA", bf16_score, f32_score);
    (f32_score, bf16_score, noise)
}
