//! `ddpm bench`: the training step (forward, backward, AdamW), the sampling step (one UNet
//! forward and a DDPM step) or a whole DDIM-50 sampling run of a preset or config, timed on a
//! device at a precision: median of many runs after warm-up (device events on a GPU, through
//! Backend::time_ms), with the achieved FLOP/s from the same FLOP count every engine uses
//! (UNet::forward_macs; training counted as 3 forwards). benches/pytorch_reference.py prints the
//! same table for PyTorch/diffusers.

mod launches;
mod ranks;

use super::device::{Device, DeviceName};
use super::sample::{SchedulerName, build_sampler};
use crate::backend::{Backend, Layers, TrainOps};
use crate::diffusion::{DdpmScheduler, NoiseSchedule, PhiloxStream, SchedulerConfig};
use crate::dist::Shard;
use crate::fast::bf16::Precision;
use crate::model::UNetConfig;
use crate::model::config::Preset;
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use crate::sample::{Denoiser, Launch, NoiseSource, Sampler, generate_with};
use crate::train::graph::StepGraph;
use crate::train::step::{OptimConfig, TrainState};
use crate::train::stepper::Stepper;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// `--what`: the workload timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// One training step (noising, forward, loss, backward, AdamW).
    Train,
    /// One sampling step (a UNet forward and a DDPM step).
    Sample,
    /// A whole sampling run of --scheduler with --steps steps (also reported per image).
    #[value(alias = "sample-run")]
    Run,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Preset::Cifar10, conflicts_with = "config")]
    preset: Preset,
    /// A diffusers UNet2DModel config.json instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = Workload::Sample)]
    what: Workload,
    /// Scheduler steps of --what run (Heun and PNDM evaluate the model more than once a step).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// The sampler of --what run, as `ddpm sample --scheduler` names it.
    #[arg(long, value_enum, default_value_t = SchedulerName::Ddim)]
    scheduler: SchedulerName,
    /// Karras sigmas for --what run's sampler, where its class has them.
    #[arg(long)]
    karras: bool,
    /// f32, or bf16 matrix-product operands (src/fast/bf16.rs on the CPU, src/backend/cuda_bf16.rs on
    /// CUDA). Default: bf16 on a CUDA device, f32 on the CPU and the emulator.
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceName::Auto)]
    device: DeviceName,
    /// Timed runs after warm-up (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed runs first (at most 1 for --what run: a whole run warms everything).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// One JSON object per workload instead of the table line.
    #[arg(long)]
    json: bool,
    /// Launch every op instead of replaying a captured CUDA graph (the training step, the
    /// sampler's step, a whole run). A graphed training step is timed over 4 steps read back
    /// once, as `ddpm train` reads its loss back once per window.
    #[arg(long)]
    no_graph: bool,
    /// Capture the training step (--what train) or one model evaluation of the sampler (--what
    /// sample) as a graph without running it, and print the memory pool's peak and the kernel
    /// launches: exact for this engine's allocator at any model size and batch, also on the
    /// emulator, where the step itself would take hours (the device adds its context).
    #[arg(long)]
    memory_only: bool,
    /// With --memory-only: also list the captured launches by kernel, with their block counts
    /// (which launches are too small to fill a GPU: where fusion would pay at batch 1).
    #[arg(long, requires = "memory_only")]
    launches: bool,
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
        None => (args.preset.config(), args.preset.name().to_string()),
    };
    if args.describe {
        let unet = UNet::new(config)?;
        let flops = 2 * unet.forward_macs();
        println!(
            "{}",
            serde_json::json!({"preset": preset, "forward_flops_per_image": flops, "config": unet.config.to_json()})
        );
        return Ok(());
    }
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be positive");
    }
    if args.what == Workload::Run && args.steps == 0 {
        bail!("--steps must be positive");
    }
    // Model evaluations of a run (a Heun step is two): the FLOP count, and checks the sampler's
    // options before anything is timed.
    let evaluations = match args.what {
        Workload::Run => {
            build_sampler(args.scheduler, SchedulerConfig::default(), Some(args.steps), None, args.karras)?.steps()
        }
        _ => 1,
    };
    let unet = UNet::new(config)?;
    let comm = crate::dist::open()?;
    if comm.size() > 1 {
        return super::as_rank(comm, |comm| ranks::run(&args, &unet, &preset, comm));
    }
    let device = Device::open_with(args.device, args.precision)?;
    if args.memory_only {
        let Device::Cuda(b) = &device else { bail!("--memory-only needs --device cuda or emulator (a graph capture)") };
        return memory_only(b, &unet, &args, &preset);
    }
    let times = crate::with_backend!(&device, b => time_workload(b, &unet, &args))?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = sorted[sorted.len() / 2];
    let forwards = match args.what {
        Workload::Train => 3.0,
        Workload::Run => evaluations as f64,
        Workload::Sample => 1.0,
    };
    let flops = 2.0 * unet.forward_macs() as f64 * forwards * args.batch as f64;
    let gflops = flops / (median_ms / 1e3) / 1e9;
    let runs = times.len();
    print_result(&args, &device, &preset, median_ms, gflops, runs, evaluations)
}

/// `--memory-only`: the pool's peak over a captured training step or model evaluation, weights
/// (and optimizer state) included, and its kernel launches.
fn memory_only(b: &crate::backend::CudaBackend, unet: &UNet, args: &BenchArgs, preset: &str) -> Result<()> {
    match args.what {
        Workload::Train => memory_train(b, unet, args, preset),
        Workload::Sample => memory_sample(b, unet, args, preset),
        Workload::Run => {
            bail!("--memory-only measures a training step or one model evaluation: --what train or sample")
        }
    }
}

/// `--memory-only --what sample`: one model evaluation, weights kept as `ddpm sample` keeps them.
fn memory_sample(b: &crate::backend::CudaBackend, unet: &UNet, args: &BenchArgs, preset: &str) -> Result<()> {
    let c = &unet.config;
    let params = HostParams::init(&unet.table, 0).upload(b)?;
    unet.keep_product_weights(b, &params)?;
    let held = b.gpu.memory_stats().in_use_bytes;
    let x = b.alloc(args.batch * c.sample_size * c.sample_size * c.in_channels)?;
    let t = b.upload(&vec![500.0; args.batch])?;
    b.gpu.begin_capture()?;
    let captured = unet.predict(b, &params, &x, &t, args.batch);
    let graph = b.gpu.end_capture();
    drop(captured?);
    let graph = graph?;
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    println!(
        "ddpm  {preset:<9} sample  batch {:>3} {:<4}  peak memory {:.1} MiB ({:.1} MiB weights, {:.1} MiB of them bf16 copies), {} kernel launches per model evaluation, captured on {}",
        args.batch,
        b.precision.name(),
        mib(b.gpu.memory_stats().peak_in_use_bytes),
        mib(held),
        mib(2 * b.kept_weight_elements()),
        graph.len(),
        b.name()
    );
    if args.launches {
        launches::print(graph.launches());
    }
    Ok(())
}

/// `--memory-only --what train`.
fn memory_train(b: &crate::backend::CudaBackend, unet: &UNet, args: &BenchArgs, preset: &str) -> Result<()> {
    let host = HostParams::init(&unet.table, 0);
    let tables = b.schedule_tables(&NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000)?)?;
    let state = TrainState::new(b, &host.values)?;
    let held = b.gpu.memory_stats().in_use_bytes;
    let c = &unet.config;
    let mut graph = StepGraph::new(b, state, args.batch, c.sample_size * c.sample_size * c.in_channels, true)?;
    graph.capture(b, unet, &tables, &OptimConfig::default())?;
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let peak = b.gpu.memory_stats().peak_in_use_bytes;
    let launch_count = graph.graph().map_or(0, |g| g.len());
    println!(
        "ddpm  {preset:<9} train   batch {:>3} {:<4}  peak memory {:.1} MiB ({:.1} MiB weights, gradients, AdamW moments and EMA, {:.1} MiB bf16 weight copies; the rest the step's activations and temporaries), {launch_count} kernel launches, captured on {}",
        args.batch,
        b.precision.name(),
        mib(peak),
        mib(held),
        mib(2 * b.kept_weight_elements()),
        b.name()
    );
    if let (true, Some(g)) = (args.launches, graph.graph()) {
        launches::print(g.launches());
    }
    Ok(())
}

/// The device's peak for the precision it runs at, in TFLOP/s (None off CUDA or for an
/// architecture whose rate is not written down).
fn device_peak(device: &Device) -> Result<Option<(f64, String)>> {
    let Device::Cuda(b) = device else { return Ok(None) };
    match device.precision() {
        Precision::Bf16 => crate::gpu::bf16_dense_peak(&b.gpu),
        Precision::F32 => crate::gpu::f32_simt_peak(&b.gpu),
    }
}

#[allow(clippy::too_many_arguments)]
fn print_result(
    args: &BenchArgs,
    device: &Device,
    preset: &str,
    median_ms: f64,
    gflops: f64,
    runs: usize,
    evaluations: usize,
) -> Result<()> {
    let peak = device_peak(device)?;
    let percent = peak.as_ref().map(|(tflops, _)| 100.0 * gflops / 1e3 / tflops);
    // The buffer pool's high-water mark over the whole run: weights, optimizer state and the
    // largest step's activations and temporaries (the caching pool's in-use bytes, not reserved).
    // On the CPU plus the weights kept prepared (src/fast/prepared.rs), which outlive the pool's
    // buffers: an upper bound of the true peak.
    let prepared_mib = match device {
        Device::Cuda(_) => 0.0,
        Device::Cpu(_) | Device::CpuBf16(_) => crate::fast::prepared::held_bytes() as f64 / (1 << 20) as f64,
    };
    let peak_mib = match device {
        Device::Cuda(b) => b.gpu.memory_stats().peak_in_use_bytes,
        Device::Cpu(_) | Device::CpuBf16(_) => crate::fast::pool::stats().peak_in_use_bytes,
    } as f64
        / (1 << 20) as f64
        + prepared_mib;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"engine": "ddpm", "device": device.name(), "preset": preset, "batch": args.batch, "what": args.what,
                "precision": device.precision(), "steps": (args.what == Workload::Run).then_some(args.steps),
                "scheduler": (args.what == Workload::Run).then_some(args.scheduler.name()),
                "evaluations": (args.what == Workload::Run).then_some(evaluations),
                "median_ms": median_ms, "per_image_ms": median_ms / args.batch as f64, "gflops": gflops,
                "tflops": gflops / 1e3, "peak_tflops": peak.as_ref().map(|p| p.0), "percent_of_peak": percent,
                "peak_memory_mib": peak_mib, "prepared_weights_mib": prepared_mib, "runs": runs, "graph": !args.no_graph && matches!(device, Device::Cuda(_))})
        );
        return Ok(());
    }
    let prepared =
        if prepared_mib > 0.0 { format!(" ({prepared_mib:.1} MiB prepared weights)") } else { String::new() };
    println!(
        "ddpm  {:<9} {:<7} batch {:>3} {:<4}  {:>10.3} ms  {:>9.1} GFLOP/s  peak memory {peak_mib:.1} MiB{prepared}  ({} runs, {}{})",
        preset,
        super::value_name(&args.what),
        args.batch,
        device.precision().name(),
        median_ms,
        gflops,
        runs,
        device.name(),
        if args.no_graph { ", op by op" } else { "" }
    );
    if let (Some((tflops, how)), Some(pct)) = (&peak, percent) {
        let name = device.precision().name();
        println!("      {:.2} TFLOP/s: {pct:.1}% of the {name} peak, {tflops:.0} TFLOP/s ({how})", gflops / 1e3);
    }
    if args.what == Workload::Run {
        println!(
            "      {} {} steps ({evaluations} model evaluations): {:.3} ms per image",
            args.scheduler.name(),
            args.steps,
            median_ms / args.batch as f64
        );
    }
    Ok(())
}

/// Training steps per timed run of a graphed step (read back once, then divided).
const GRAPHED_TRAIN_STEPS: usize = 4;

/// Milliseconds of each timed run.
fn time_workload<B: Layers + TrainOps>(b: &B, unet: &UNet, args: &BenchArgs) -> Result<Vec<f64>> {
    let c = &unet.config;
    let n = args.batch * c.sample_size * c.sample_size * c.in_channels;
    let host = HostParams::init(&unet.table, 0);
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000)?;
    let tables = b.schedule_tables(&schedule)?;
    let mut x = b.alloc(n)?;
    b.fill_normal(&mut x, PhiloxStream { seed: 1, offset: 0 })?;
    let mut times = Vec::new();
    let launch = if args.no_graph { Launch::Plain } else { Launch::Graph };
    if args.what == Workload::Train {
        let state = TrainState::new(b, &host.values)?;
        let opt = OptimConfig::default();
        let (batch, shard) = (b.download(&x)?, Shard::whole(args.batch));
        let mut stepper = Stepper::new(b, state, None, !args.no_graph, shard, n / args.batch, true)?;
        let per = if stepper.is_graph() { GRAPHED_TRAIN_STEPS } else { 1 };
        for i in 0..args.warmup + args.iters {
            // Ends with a device-to-host copy of the loss (of each of the `per` steps).
            let (_, ms) = b.time_ms(|| {
                for _ in 0..per {
                    stepper.step(b, unet, &tables, &opt, &batch, shard, 7)?;
                }
                stepper.flush(b)
            })?;
            if i >= args.warmup {
                times.push(ms / per as f64);
            }
        }
    } else if args.what == Workload::Run {
        // A whole run from fresh noise, as `ddpm sample --scheduler NAME` runs it.
        let params = host.upload(b)?;
        unet.keep_product_weights(b, &params)?; // as `ddpm sample` (src/sample.rs)
        let sampler = build_sampler(args.scheduler, SchedulerConfig::default(), Some(args.steps), None, args.karras)?;
        for i in 0..args.warmup.min(1) + args.iters {
            let mut source = NoiseSource::Philox { seed: i as u64 };
            let (_, ms) = b.time_ms(|| {
                generate_with(b, unet, &params, &sampler, args.batch, &mut source, None, launch, &mut |_, _| {})
            })?;
            if i >= args.warmup.min(1) {
                times.push(ms);
            }
        }
    } else {
        // The sampler's own step (src/sample.rs: a replayed CUDA graph on a GPU), from t = 999 down.
        let params = host.upload(b)?;
        unet.keep_product_weights(b, &params)?; // as `ddpm sample` (src/sample.rs)
        let mut sched = DdpmScheduler::new(SchedulerConfig::default())?;
        sched.set_timesteps(1000)?;
        let sampler = Sampler::Ddpm(sched);
        let mut d = Denoiser::new(b, unet, &params, &sampler, args.batch, 2, x, launch)?;
        for i in 0..args.warmup + args.iters {
            let (_, ms) = b.time_ms(|| {
                d.step()?;
                b.download(d.sample()) // waits for the device, as a sampler's last step would
            })?;
            if i >= args.warmup {
                times.push(ms);
            }
        }
    }
    Ok(times)
}
