//! `ddpm demo`: the whole product in one command. Trains the tiny preset on the built-in shapes
//! with the best device available, samples a grid, writes samples.png and prints the quality
//! score of the samples next to that of pure noise.

use super::device::{Device, DeviceName};
use super::sample::{SchedulerName, build_sampler};
use super::train::{report, stop_flag};
use crate::backend::{Layers, SamplerOps};
use crate::data::quality::score_against_generator;
use crate::diffusion::{DdpmScheduler, SchedulerConfig};
use crate::model::UNetConfig;
use crate::model::unet::UNet;
use crate::sample::{Sampler, generate, write_grid};
use crate::train::run::{RunConfig, train};
use crate::train::schedule::LrSchedule;
use crate::train::step::OptimConfig;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Optimizer steps (the default takes about 3 minutes on 2 CPU cores).
    #[arg(long, default_value_t = 5000)]
    steps: u64,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceName::Auto)]
    device: DeviceName,
    /// Where the run and samples.png go.
    #[arg(long, default_value = "demo-run")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip training: score every sampler of `ddpm sample --scheduler` at 10, 20 and 50 model
    /// evaluations on the run already in --out, from the same noise, and print the table.
    #[arg(long)]
    compare_samplers: bool,
}

/// The demo's model: the tiny preset's layout (two resolutions, attention at 8x8) at half its
/// width, sized so training and sampling finish in minutes on 2 CPU cores.
pub fn demo_config() -> UNetConfig {
    UNetConfig { block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let device = Device::open(args.device)?;
    let model = demo_config();

    let r = RunConfig {
        model: model.clone(),
        data: "builtin".into(),
        batch: args.batch,
        steps: args.steps,
        seed: args.seed,
        opt: OptimConfig {
            lr: 1e-3,
            warmup_steps: 50,
            schedule: LrSchedule::Cosine,
            total_steps: args.steps,
            ..Default::default()
        },
        flip: true,
        checkpoint_every: 0,
        sample_every: 0,
        sample_count: 16,
        sample_steps: 100,
        show_progress: true,
        skip_nonfinite: false,
        graph: true,
    };
    if args.compare_samplers {
        return crate::with_backend!(&device, b => compare_samplers(b, &r, &args.out));
    }
    println!(
        "ddpm demo: a {}-parameter UNet on the built-in shapes ({}x{} RGB), {} steps of batch {} on {}",
        crate::model::parameter_count(&model),
        model.sample_size,
        model.sample_size,
        r.steps,
        r.batch,
        device.name()
    );
    let _ = std::fs::remove_file(args.out.join(crate::train::checkpoint::STATE_FILE));
    let _ = std::fs::remove_file(args.out.join(crate::train::checkpoint::PREV_STATE_FILE));
    let start = std::time::Instant::now();
    let stop = stop_flag();
    let summary = crate::with_backend!(&device, b => train(b, &r, &args.out, false, &stop))?;
    report(&summary, &args.out, &device);
    let (score, noise_score) = crate::with_backend!(&device, b => score_samples(b, &r, &args.out, true))?;
    println!(
        "samples: {} (ddpm, 100 steps: on this model the stochastic samplers beat the ODE solvers at \
         every budget; README's sampler table, `ddpm demo --compare-samplers`)",
        args.out.join("samples.png").display()
    );
    println!(
        "quality (shape Frechet distance to the true distribution, lower is better): {score:.4}; pure noise scores {noise_score:.4}"
    );
    if let Device::Cpu(_) = device {
        // The bf16 accuracy contract's sample check: the same noise with bf16 matrix operands.
        let (bf16, _) = score_samples(&crate::backend::FastCpuBf16Backend, &r, &args.out, false)?;
        println!(
            "the same samples with --precision bf16 score {bf16:.4} ({:+.1}% of f32)",
            100.0 * (bf16 - score) / score
        );
    }
    println!("total {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Samples 64 images from the EMA weights (DDPM ancestral sampling, 100 steps: after a short run it
/// gives much cleaner shapes than deterministic DDIM, whose errors are not washed out by fresh
/// noise), writes samples.png (if `write`), and scores them and pure noise against 256 fresh images.
fn score_samples<B: Layers + SamplerOps>(
    b: &B,
    r: &RunConfig,
    dir: &std::path::Path,
    write: bool,
) -> Result<(f64, f64)> {
    let unet = UNet::new(r.model.clone())?;
    let state = crate::train::checkpoint::load(&dir.join(crate::train::checkpoint::STATE_FILE), &unet.table)?;
    let ema = state.groups[3].upload(b)?;
    let mut sched = DdpmScheduler::new(SchedulerConfig::default())?;
    sched.set_timesteps(100)?;
    let n = 64;
    let x = generate(b, &unet, &ema, &Sampler::Ddpm(sched), n, r.seed ^ 0xd3, &mut |_, _| {})?;
    let size = r.model.sample_size;
    if write {
        write_grid(&dir.join("samples.png"), &x, n, size, 3, 8)?;
    }
    Ok(score_against_generator(&x, n, size, r.seed))
}

/// Model-evaluation budgets of the sampler table (README).
const BUDGETS: [usize; 3] = [10, 20, 50];

/// The most scheduler steps of `name` whose run fits in `budget` model evaluations (Heun and
/// PNDM evaluate more than once a step), with its sampler; None if even one step does not fit.
fn fit_budget(name: SchedulerName, budget: usize) -> Result<Option<(usize, Sampler)>> {
    for steps in (1..=budget).rev() {
        // Too few steps for a solver's order is an error, not a fit.
        if let Ok(s) = build_sampler(name, SchedulerConfig::default(), Some(steps), None, false)
            && s.steps() <= budget
        {
            return Ok(Some((steps, s)));
        }
    }
    Ok(None)
}

/// Every sampler at every budget on the demo run in `dir`: 64 images from the EMA weights, the
/// same Philox noise for all, scored as the demo scores its samples; a markdown table on stdout.
fn compare_samplers<B: Layers + SamplerOps>(b: &B, r: &RunConfig, dir: &std::path::Path) -> Result<()> {
    use clap::ValueEnum;
    let unet = UNet::new(r.model.clone())?;
    let path = dir.join(crate::train::checkpoint::STATE_FILE);
    let state = crate::train::checkpoint::load(&path, &unet.table)
        .with_context(|| format!("--compare-samplers needs a demo run in {} (run `ddpm demo` first)", dir.display()))?;
    let ema = state.groups[3].upload(b)?;
    let (n, size) = (64, r.model.sample_size);
    println!("| sampler | {} |", BUDGETS.map(|e| format!("{e} evaluations")).join(" | "));
    println!("| --- |{}", " ---: |".repeat(BUDGETS.len()));
    for &name in SchedulerName::value_variants() {
        let mut cells = Vec::new();
        for budget in BUDGETS {
            let Some((steps, sampler)) = fit_budget(name, budget)? else {
                cells.push("-".to_string());
                continue;
            };
            let x = generate(b, &unet, &ema, &sampler, n, r.seed ^ 0xd3, &mut |_, _| {})?;
            let (score, _) = score_against_generator(&x, n, size, r.seed);
            cells.push(format!("{score:.3} ({steps} steps, {} evals)", sampler.steps()));
        }
        println!("| {} | {} |", name.name(), cells.join(" | "));
    }
    Ok(())
}
