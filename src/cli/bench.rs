//! `ddpm bench`: the training step (forward, backward, AdamW) or the sampling step (one UNet
//! forward and a DDPM step) of a preset or config, timed on a device: median of many runs after
//! warm-up (device events on CUDA), with the achieved FLOP/s from the same FLOP count every engine
//! uses (UNet::forward_macs; training counted as 3 forwards). benches/pytorch_reference.py prints
//! the same table for PyTorch/diffusers.

use super::device::Device;
use crate::backend::{Layers, Optimizer, SamplerOps};
use crate::sample::{Denoiser, Launch, Sampler};
use crate::diffusion::{DdpmScheduler, NoiseSchedule, PhiloxStream, SchedulerConfig};
use crate::model::UNetConfig;
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use crate::train::step::{OptimConfig, TrainState, train_step};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// tiny or cifar10.
    #[arg(long, default_value = "cifar10", conflicts_with = "config")]
    preset: String,
    /// A diffusers UNet2DModel config.json instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// train or sample.
    #[arg(long, default_value = "sample")]
    what: String,
    /// auto, cpu, cuda or emulator.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Timed runs after warm-up (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// One JSON object per workload instead of the table line.
    #[arg(long)]
    json: bool,
    /// Print the forward FLOPs of one image and the config as JSON, and exit (what
    /// benches/pytorch_reference.py reads so both engines count the same).
    #[arg(long)]
    describe: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let (config, preset) = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            (UNetConfig::from_json(&text).with_context(|| format!("in {}", p.display()))?, p.display().to_string())
        }
        None => (UNetConfig::preset(&args.preset)?, args.preset.clone()),
    };
    if args.describe {
        let unet = UNet::new(config)?;
        let flops = 2 * unet.forward_macs();
        println!("{}", serde_json::json!({"preset": preset, "forward_flops_per_image": flops, "config": unet.config.to_json()}));
        return Ok(());
    }
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be positive");
    }
    if args.what != "train" && args.what != "sample" {
        bail!("--what {:?}: use train or sample", args.what);
    }
    let unet = UNet::new(config)?;
    let device = Device::open(&args.device)?;
    let times = crate::with_backend!(&device, b => time_workload(b, &unet, &args))?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = sorted[sorted.len() / 2];
    let forwards = if args.what == "train" { 3.0 } else { 1.0 };
    let flops = 2.0 * unet.forward_macs() as f64 * forwards * args.batch as f64;
    let gflops = flops / (median_ms / 1e3) / 1e9;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"engine": "ddpm", "device": device.name(), "preset": preset, "batch": args.batch, "what": args.what,
                "median_ms": median_ms, "gflops": gflops, "runs": times.len()})
        );
    } else {
        println!(
            "ddpm  {:<9} {:<7} batch {:>3}  {:>10.3} ms  {:>9.1} GFLOP/s  ({} runs, {})",
            preset, args.what, args.batch, median_ms, gflops, times.len(), device.name()
        );
    }
    Ok(())
}

/// Milliseconds of each timed run.
fn time_workload<B: Layers + Optimizer + SamplerOps>(b: &B, unet: &UNet, args: &BenchArgs) -> Result<Vec<f64>> {
    let c = &unet.config;
    let n = args.batch * c.sample_size * c.sample_size * c.in_channels;
    let host = HostParams::init(&unet.table, 0);
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000)?;
    let tables = b.schedule_tables(&schedule)?;
    let mut x = b.alloc(n)?;
    b.fill_normal(&mut x, PhiloxStream { seed: 1, offset: 0 })?;
    let mut times = Vec::new();
    if args.what == "train" {
        let mut state = TrainState::new(b, &host.values)?;
        let opt = OptimConfig::default();
        for i in 0..args.warmup + args.iters {
            let start = Instant::now();
            train_step(b, unet, &tables, &mut state, &opt, &x, args.batch, 7)?; // ends with a device-to-host copy of the loss
            if i >= args.warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    } else {
        // The sampler's own step (src/sample.rs: a replayed CUDA graph on a GPU), from t = 999 down.
        let params = host.upload(b)?;
        let mut sched = DdpmScheduler::new(SchedulerConfig::default())?;
        sched.set_timesteps(1000)?;
        let sampler = Sampler::Ddpm(sched);
        let mut d = Denoiser::new(b, unet, &params, &sampler, args.batch, 2, x, Launch::Graph)?;
        for i in 0..args.warmup + args.iters {
            let start = Instant::now();
            d.step()?;
            b.download(d.sample())?; // waits for the device, as a sampler's last step would
            if i >= args.warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(times)
}
