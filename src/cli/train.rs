//! `ddpm train`: train a DDPM UNet on the built-in shapes or a dataset, checkpointing a run
//! directory that diffusers can load.

use super::device::{Device, DeviceName};
use crate::model::UNetConfig;
use crate::model::config::Preset;
use crate::train::run::{Ranks, RunConfig, Summary, train_ranked};
use crate::train::schedule::LrSchedule;
use crate::train::step::OptimConfig;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args, Clone)]
pub struct TrainArgs {
    /// Training data: builtin (procedural shapes, no files), idx:FILE (MNIST / Fashion-MNIST
    /// images, plain or .gz), cifar10:DIR (binary batches) or folder:DIR (PNG/JPEG, resized).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// A model preset: tiny or cifar10 (google/ddpm-cifar10-32). in_channels and sample_size
    /// follow the data.
    #[arg(long, value_enum, default_value_t = Preset::Tiny, conflicts_with = "config")]
    pub preset: Preset,
    /// A diffusers UNet2DModel config.json instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Total optimizer steps (a resumed run continues up to this many). A cosine schedule spans
    /// this many steps, so resuming to a larger total reshapes it; a constant one resumes exactly.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f32,
    /// Linear warmup steps before the schedule.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// After the warmup: constant, or cosine (to zero at --steps).
    #[arg(long, value_enum, default_value_t = LrSchedule::Constant)]
    pub lr_schedule: LrSchedule,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Random horizontal flips off.
    #[arg(long)]
    pub no_flip: bool,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceName::Auto)]
    pub device: DeviceName,
    /// f32, or bf16 matrix-product operands in the forward and backward passes (CPU, or CUDA's tensor cores;
    /// master weights, gradients, AdamW and the EMA stay f32; no loss scaling: bf16 has f32's range).
    /// Default: bf16 on a CUDA device, f32 on the CPU and the emulator.
    #[arg(long, value_enum)]
    pub precision: Option<crate::fast::bf16::Precision>,
    /// The run directory (checkpoints, log.jsonl, samples/).
    #[arg(long, default_value = "run")]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Write a sample grid every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub sample_every: u64,
    /// Images in each sample grid (0: no grids, not even the final one).
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// A step whose loss or gradient norm is NaN or infinite stops the run (naming the step; the
    /// last good checkpoint is kept, nothing is written from the bad state). With this flag such a
    /// step is skipped instead: no update, the step still counts, a line on stderr and in
    /// log.jsonl. 20 skipped steps in a row stop the run all the same.
    #[arg(long)]
    pub skip_nonfinite: bool,
    /// Under mpirun/srun: check every N steps that all ranks hold bit-identical weights (a hash
    /// of every parameter compared across ranks; a debugging aid, 0 = off).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub check_sync: u64,
    /// Run each step op by op instead of replaying it as one captured CUDA graph. The graph (the
    /// default on CUDA devices and the emulator, in a single process) takes bitwise the same
    /// steps and reads the loss back every 16 steps instead of after each one.
    #[arg(long)]
    pub no_graph: bool,
}

/// The model config: a preset adapted to the data's image size and channels, or a config file.
pub fn model_config(args: &TrainArgs) -> Result<UNetConfig> {
    let (size, channels) = {
        let d = crate::data::open(&args.data, 32, args.seed)?;
        let size = if args.data == "builtin" { 0 } else { d.size() };
        (size, d.channels())
    };
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            UNetConfig::from_json(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => args.preset.config(),
    };
    if args.config.is_none() {
        c.in_channels = channels;
        c.out_channels = channels;
        if size != 0 {
            c.sample_size = size;
        }
    }
    c.validate().with_context(|| {
        format!(
            "the model does not fit the data ({channels} channels{})",
            if size > 0 { format!(", {size}x{size}") } else { String::new() }
        )
    })?;
    Ok(c)
}

pub fn run_config(args: &TrainArgs) -> Result<RunConfig> {
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be positive");
    }
    let schedule = args.lr_schedule;
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be positive and finite");
    }
    Ok(RunConfig {
        model: model_config(args)?,
        data: args.data.clone(),
        batch: args.batch,
        steps: args.steps,
        seed: args.seed,
        opt: OptimConfig {
            lr: args.lr,
            warmup_steps: args.warmup,
            schedule,
            total_steps: args.steps,
            ..Default::default()
        },
        flip: !args.no_flip,
        checkpoint_every: args.checkpoint_every,
        sample_every: args.sample_every,
        sample_count: args.samples,
        sample_steps: 100,
        show_progress: true,
        skip_nonfinite: args.skip_nonfinite,
        graph: !args.no_graph,
    })
}

/// Ctrl-C sets the flag: the loop saves a checkpoint and returns.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130); // a second Ctrl-C: stop now
        }
        eprintln!("\nstopping: saving a checkpoint (Ctrl-C again to quit at once)");
    });
    flag
}

/// Under a launcher (`mpirun -np N ddpm train`, `srun`), one of N data-parallel ranks; rank 0
/// alone prints.
pub fn run(args: TrainArgs) -> Result<()> {
    super::as_rank(crate::dist::open()?, |comm| run_ranked(args, comm))
}

fn run_ranked(args: TrainArgs, comm: Arc<dyn crate::dist::Comm>) -> Result<()> {
    let r = run_config(&args)?;
    let device = Device::open_with_on(args.device, args.precision, comm.local_rank())?;
    let leader = comm.rank() == 0;
    if leader {
        println!(
            "training a {}-parameter UNet on {} ({} {}x{}x{}) on {}{}, batch {}, to step {}",
            crate::model::parameter_count(&r.model),
            r.data,
            r.batch,
            r.model.sample_size,
            r.model.sample_size,
            r.model.in_channels,
            device.name(),
            match comm.size() {
                1 => String::new(),
                n => format!(" x {n} ranks ({} images each)", r.batch / n.max(1)),
            },
            r.batch,
            r.steps
        );
    }
    let stop = stop_flag();
    let ranks = Ranks { comm, check_every: args.check_sync };
    let summary: Summary =
        crate::with_backend!(&device, b => train_ranked(b, &r, &args.out, args.resume, &stop, &ranks))?;
    if leader {
        report(&summary, &args.out, &device);
    }
    Ok(())
}

pub fn report(s: &Summary, dir: &std::path::Path, device: &Device) {
    println!("step {}: loss {:.4}, {:.1} images/s", s.steps, s.final_loss, s.images_per_second);
    match device {
        Device::Cuda(b) => {
            println!("peak device memory {:.1} MiB", b.gpu.memory_stats().peak_in_use_bytes as f64 / (1 << 20) as f64)
        }
        Device::Cpu(_) | Device::CpuBf16(_) => {
            let mib = |b: usize| b as f64 / (1 << 20) as f64;
            let buffers = crate::fast::pool::stats().peak_in_use_bytes;
            let rss = peak_resident_bytes()
                .map_or(String::new(), |b| format!("; process peak resident {:.1} MiB", mib(b as usize)));
            println!("peak buffer memory {:.1} MiB (weights, optimizer state, activations{rss})", mib(buffers));
        }
    }
    if let Some(g) = &s.last_grid {
        println!("samples: {}", g.display());
    }
    println!("checkpoint: {} (a diffusers DDPMPipeline folder)", dir.display());
}

/// The process's peak resident memory (VmHWM in /proc/self/status), where the OS reports it: on
/// the CPU backend the device memory is the process's memory.
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
