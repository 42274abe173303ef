//! The training loop: batches from a background loader, one training step each, a progress bar,
//! a log line per step in log.jsonl, sample grids and checkpoints at intervals, and a clean stop
//! (checkpoint first) when asked to (Ctrl-C). A step whose loss or gradient norm is not finite
//! stops the run, naming the step, with the last good checkpoint left as it was (nothing is written
//! from the poisoned state), or is skipped when `skip_nonfinite` is set.

use super::checkpoint;
use super::step::{OptimConfig, TrainState, train_step};
use crate::backend::{Layers, Optimizer, SamplerOps};
use crate::data::{self, Dataset};
use crate::diffusion::{DdpmScheduler, NoiseSchedule, SchedulerConfig};
use crate::model::UNetConfig;
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use crate::sample::{Sampler, generate, write_grid};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub model: UNetConfig,
    /// builtin, idx:PATH, cifar10:DIR or folder:DIR
    pub data: String,
    pub batch: usize,
    /// Train until this many optimizer steps in total.
    pub steps: u64,
    pub seed: u64,
    pub opt: OptimConfig,
    pub flip: bool,
    pub checkpoint_every: u64,
    /// 0: only at the end.
    pub sample_every: u64,
    pub sample_count: usize,
    /// DDPM steps for the preview grids.
    pub sample_steps: usize,
    pub show_progress: bool,
    /// Skip a step whose loss or gradient norm is not finite (no update; the step still counts,
    /// so a resumed run sees the same batches) instead of stopping.
    pub skip_nonfinite: bool,
}

/// Consecutive skipped steps after which a run with `skip_nonfinite` stops all the same: by then
/// the weights, not one unlucky batch, are the problem.
pub const MAX_SKIPPED_IN_A_ROW: u32 = 20;

pub struct Summary {
    pub steps: u64,
    pub final_loss: f32,
    pub images_per_second: f64,
    pub last_grid: Option<PathBuf>,
}

fn settings_json(r: &RunConfig) -> serde_json::Value {
    let schedule = format!("{:?}", r.opt.schedule).to_lowercase();
    json!({"model": r.model.to_json(), "data": r.data, "batch": r.batch, "seed": r.seed, "flip": r.flip, "lr": r.opt.lr,
        "warmup": r.opt.warmup_steps, "lr_schedule": schedule})
}

/// Whether a stored run's settings match this run's. Only the keys the stored run has are
/// compared, so run directories from before a setting was recorded still resume.
fn same_settings(stored: &serde_json::Value, now: &serde_json::Value) -> bool {
    match (stored.as_object(), now.as_object()) {
        (Some(s), Some(n)) => s.iter().all(|(k, v)| n.get(k) == Some(v)),
        _ => stored == now,
    }
}

/// Trains in run directory `dir`, resuming from its checkpoint when `resume`.
pub fn train<B: Layers + Optimizer + SamplerOps>(
    b: &B,
    r: &RunConfig,
    dir: &Path,
    resume: bool,
    stop: &AtomicBool,
) -> Result<Summary> {
    let dataset: Arc<dyn Dataset> = Arc::from(data::open(&r.data, r.model.sample_size, r.seed)?);
    if dataset.size() != r.model.sample_size || dataset.channels() != r.model.in_channels {
        bail!(
            "the data are {}x{} images with {} channels but the model takes {}x{} with {}",
            dataset.size(),
            dataset.size(),
            dataset.channels(),
            r.model.sample_size,
            r.model.sample_size,
            r.model.in_channels
        );
    }
    if dataset.is_empty() || r.batch == 0 {
        bail!("nothing to train on: {} images, batch {}", dataset.len(), r.batch);
    }
    let unet = UNet::new(r.model.clone())?;
    let mut state = if resume {
        let path = dir.join(checkpoint::STATE_FILE);
        let resumed = checkpoint::load(&path, &unet.table).with_context(|| {
            let prev = dir.join(checkpoint::PREV_STATE_FILE);
            if prev.is_file() {
                format!("cannot resume; the previous checkpoint {} may still load", prev.display())
            } else {
                "cannot resume".into()
            }
        })?;
        if !same_settings(&resumed.run, &settings_json(r)) {
            bail!("the run in {} was started with other settings: {}", dir.display(), resumed.run);
        }
        TrainState::from_resumed(b, &resumed)?
    } else {
        if dir.join(checkpoint::STATE_FILE).exists() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", dir.display());
        }
        TrainState::new(b, &HostParams::init(&unet.table, r.seed).values)?
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // What a killed run left behind: half-written temporaries and log lines past its checkpoint.
    checkpoint::remove_stale_temps(dir);
    trim_log(&dir.join("log.jsonl"), state.step)?;
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000)?;
    let tables = b.schedule_tables(&schedule)?;
    let batches = data::loader::spawn(dataset, r.batch, state.step, r.seed, r.flip);
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log.jsonl"))?;
    let bar = progress_bar(r, state.step);
    let first = state.step;
    // Images/s counts the training steps only (data loading overlaps them), not checkpoints or samples.
    let mut step_time = 0f64;
    let mut smoothed: Option<f32> = None;
    let mut last_grid = None;
    let mut skipped_in_a_row = 0u32;
    while state.step < r.steps {
        let x0 = b.upload(&batches.recv().context("the data loader stopped")?)?;
        let t0 = Instant::now();
        let s = train_step(b, &unet, &tables, &mut state, &r.opt, &x0, r.batch, r.seed)?;
        step_time += t0.elapsed().as_secs_f64();
        if !s.applied {
            let step = state.step + 1;
            let what = format!("step {step}: the loss is {} and the gradient norm {}", s.loss, s.grad_norm);
            skipped_in_a_row += 1;
            if !r.skip_nonfinite || skipped_in_a_row > MAX_SKIPPED_IN_A_ROW {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                let kept = match checkpoint::saved_step(dir) {
                    Some(n) => format!("the last good checkpoint (step {n}) is kept in {}", dir.display()),
                    None => "no checkpoint had been written".into(),
                };
                let hint = if r.skip_nonfinite {
                    format!("{MAX_SKIPPED_IN_A_ROW} steps in a row skipped; ")
                } else {
                    "lower --lr, or pass --skip-nonfinite; ".into()
                };
                bail!("{what}; training stopped ({hint}{kept})");
            }
            eprintln!("{what}; step skipped (--skip-nonfinite)");
            writeln!(log, "{}", json!({"step": step, "loss": null, "grad_norm": null, "lr": s.lr, "skipped": true}))?;
            state.step = step; // the batch is spent: the step counts, as the data order and noise do
        } else {
            skipped_in_a_row = 0;
            let sm = smoothed.map_or(s.loss, |m| 0.98 * m + 0.02 * s.loss);
            smoothed = Some(sm);
            writeln!(log, "{}", json!({"step": state.step, "loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr}))?;
        }
        let sm = smoothed.unwrap_or(f32::NAN);
        let ips = (state.step - first) as f64 * r.batch as f64 / step_time.max(1e-9);
        if let Some(bar) = &bar {
            bar.set_position(state.step);
            bar.set_message(format!("loss {sm:.4}  {ips:.1} img/s"));
        }
        let stopping = stop.load(Ordering::Relaxed);
        let done = state.step == r.steps;
        if done || stopping || (r.checkpoint_every > 0 && state.step % r.checkpoint_every == 0) {
            checkpoint::save(dir, b, &unet.table, &r.model, &state, &settings_json(r))?;
        }
        if done || (r.sample_every > 0 && state.step % r.sample_every == 0) {
            last_grid = Some(sample_grid(b, &unet, &state, r, dir)?);
        }
        if stopping {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(Summary {
        steps: state.step,
        final_loss: smoothed.unwrap_or(f32::NAN),
        images_per_second: (state.step - first) as f64 * r.batch as f64 / step_time.max(1e-9),
        last_grid,
    })
}

/// Drops the log lines of steps after `step` (those a killed run took past its last checkpoint,
/// which the resumed run takes again) and a line cut short by the kill.
fn trim_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let keep = |l: &&str| {
        serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step)
    };
    let kept: String = text.lines().filter(keep).map(|l| format!("{l}\n")).collect();
    if kept.len() != text.len() {
        crate::checkpoint::atomic_write(path, kept.as_bytes())?;
    }
    Ok(())
}

fn progress_bar(r: &RunConfig, at: u64) -> Option<indicatif::ProgressBar> {
    r.show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(r.steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg}  eta {eta}")
                .expect("a valid template"),
        );
        bar.set_position(at);
        bar
    })
}

/// A grid of samples from the EMA weights (DDPM ancestral sampling), written under samples/.
fn sample_grid<B: Layers + SamplerOps>(
    b: &B,
    unet: &UNet,
    state: &TrainState<B::Buf>,
    r: &RunConfig,
    dir: &Path,
) -> Result<PathBuf> {
    let mut sched = DdpmScheduler::new(SchedulerConfig::default())?;
    sched.set_timesteps(r.sample_steps)?;
    let x = generate(b, unet, &state.ema, &Sampler::Ddpm(sched), r.sample_count, r.seed ^ 0x5a5a, &mut |_, _| {})?;
    let path = dir.join("samples").join(format!("step_{:06}.png", state.step));
    let cols = (r.sample_count as f64).sqrt().ceil() as usize;
    write_grid(&path, &x, r.sample_count, r.model.sample_size, r.model.out_channels, cols)?;
    Ok(path)
}
