//! The training loop: batches from a background loader, one training step each, a progress bar,
//! a log line per step in log.jsonl, sample grids and checkpoints at intervals, and a clean stop
//! (checkpoint first) when asked to (Ctrl-C). A step whose loss or gradient norm is not finite
//! stops the run, naming the step, with the last good checkpoint left as it was (nothing is written
//! from the poisoned state), or is skipped when `skip_nonfinite` is set.

use super::checkpoint;
use super::step::{OptimConfig, StepStats, TrainState};
use super::stepper::Stepper;
use crate::backend::{Layers, Optimizer, SamplerOps, TrainOps};
use crate::data::{self, Dataset};
use crate::diffusion::{DdpmScheduler, NoiseSchedule, SchedulerConfig};
use crate::dist::{Comm, Shard, Solo};
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
    /// Images per grid (0: no grids, not even at the end).
    pub sample_count: usize,
    /// DDPM steps for the preview grids.
    pub sample_steps: usize,
    pub show_progress: bool,
    /// Skip a step whose loss or gradient norm is not finite (no update; the step still counts,
    /// so a resumed run sees the same batches) instead of stopping.
    pub skip_nonfinite: bool,
    /// Capture the whole step once and replay it (where the backend can and the run is one
    /// process); false: op by op (`--no-graph`).
    pub graph: bool,
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
pub fn train<B: Layers + TrainOps>(
    b: &B,
    r: &RunConfig,
    dir: &Path,
    resume: bool,
    stop: &AtomicBool,
) -> Result<Summary> {
    train_ranked(b, r, dir, resume, stop, &Ranks { comm: Arc::new(Solo), check_every: 0 })
}

/// The processes of a data-parallel run, as this one sees them.
pub struct Ranks {
    pub comm: Arc<dyn Comm>,
    /// Compare a hash of every rank's weights every this many steps (0: never; a debugging aid).
    pub check_every: u64,
}

/// `train` as one of `ranks`: this rank takes its shard of every global batch, the gradients are
/// averaged over the ranks, and rank 0 alone writes the run directory (checkpoints, the log,
/// sample grids) and shows progress. Every rank can resume a run that any number of ranks wrote.
pub fn train_ranked<B: Layers + TrainOps>(
    b: &B,
    r: &RunConfig,
    dir: &Path,
    resume: bool,
    stop: &AtomicBool,
    ranks: &Ranks,
) -> Result<Summary> {
    let (comm, leader) = (&ranks.comm, ranks.comm.rank() == 0);
    let shard = Shard::of(r.batch, comm.rank(), comm.size())?;
    let dataset = open_dataset(r)?;
    let unet = UNet::new(r.model.clone())?;
    let state = initial_state(b, &unet, r, dir, resume)?;
    if leader {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // What a killed run left behind: half-written temporaries and log lines past its checkpoint.
        checkpoint::remove_stale_temps(dir);
        trim_log(&dir.join("log.jsonl"), state.step)?;
    }
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000)?;
    let tables = b.schedule_tables(&schedule)?;
    let batches = data::loader::spawn(dataset, shard, state.step, r.seed, r.flip);
    let sync = match comm.size() {
        1 => None,
        _ => Some(b.grad_sync(comm.clone(), state.params.len())?),
    };
    let mut progress = Progress::new(r, dir, state.step, leader)?;
    let image_len = r.model.sample_size * r.model.sample_size * r.model.in_channels;
    let mut stepper = Stepper::new(b, state, sync, r.graph, shard, image_len, !r.skip_nonfinite)?;
    let mut last_grid = None;
    while stepper.state().step < r.steps {
        let batch = batches.recv().context("the data loader stopped")?;
        let t0 = Instant::now();
        if let Some(sync) = stepper.sync_mut() {
            sync.stop_vote = stop.load(Ordering::Relaxed);
        }
        let mut stats = stepper.step(b, &unet, &tables, &r.opt, &batch, shard, r.seed)?;
        // Any rank's Ctrl-C stops them all after the same step (the vote rides on the loss's sum).
        let stopping = stepper.sync_mut().map_or_else(|| stop.load(Ordering::Relaxed), |s| s.stop_vote);
        let step = stepper.state().step;
        let done = step == r.steps;
        let save = leader && (done || stopping || (r.checkpoint_every > 0 && step % r.checkpoint_every == 0));
        let grid = leader && r.sample_count > 0 && (done || (r.sample_every > 0 && step % r.sample_every == 0));
        let check = ranks.check_every > 0 && step % ranks.check_every == 0;
        // A captured run's stats arrive per window; everything written or checked below needs
        // them (a non-finite step must stop the run before anything is saved).
        if save || grid || check || stopping || progress.due() {
            stats.extend(stepper.flush(b)?);
        }
        progress.step_time += t0.elapsed().as_secs_f64();
        for s in &stats {
            progress.record(s)?;
        }
        if check {
            check_same_weights(b, comm.as_ref(), stepper.state())?;
        }
        if save {
            checkpoint::save(dir, b, &unet.table, &r.model, stepper.state(), &settings_json(r))?;
        }
        if grid {
            last_grid = Some(sample_grid(b, &unet, stepper.state(), r, dir)?);
        }
        if stopping {
            break;
        }
    }
    Ok(progress.finish(stepper.state().step, last_grid))
}

/// Fails unless every rank holds bit-identical weights (FNV-1a over every parameter's bits).
fn check_same_weights<B: Layers>(b: &B, comm: &dyn Comm, state: &TrainState<B::Buf>) -> Result<()> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in &state.params {
        for v in b.download(p)? {
            h = (h ^ v.to_bits() as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let all = comm.gather_u64(h)?;
    if let Some(r) = all.iter().position(|&x| x != all[0]) {
        bail!(
            "after step {}: rank {r}'s weights differ from rank 0's (hashes {:016x} and {:016x})",
            state.step,
            all[r],
            all[0]
        );
    }
    Ok(())
}

/// The run's data, checked against the model's image size and channels.
fn open_dataset(r: &RunConfig) -> Result<Arc<dyn Dataset>> {
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
    Ok(dataset)
}

/// The state to start from: the checkpoint in `dir` (same settings only) when resuming, else
/// freshly initialised weights (refused if `dir` already holds a run).
fn initial_state<B: Layers + Optimizer>(
    b: &B,
    unet: &UNet,
    r: &RunConfig,
    dir: &Path,
    resume: bool,
) -> Result<TrainState<B::Buf>> {
    if !resume {
        if dir.join(checkpoint::STATE_FILE).exists() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", dir.display());
        }
        return TrainState::new(b, &HostParams::init(&unet.table, r.seed).values);
    }
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
    TrainState::from_resumed(b, &resumed)
}

/// What the loop reports as it goes: log.jsonl, the progress bar (smoothed loss, images/s) and
/// the count of non-finite steps skipped in a row.
struct Progress<'a> {
    r: &'a RunConfig,
    dir: &'a Path,
    /// log.jsonl, on rank 0 only (None on the others, which also show no bar).
    log: Option<std::fs::File>,
    bar: Option<indicatif::ProgressBar>,
    first: u64,
    /// Seconds in training steps only (data loading overlaps them), not checkpoints or samples.
    step_time: f64,
    smoothed: Option<f32>,
    skipped_in_a_row: u32,
    last_report: Instant,
}

impl<'a> Progress<'a> {
    fn new(r: &'a RunConfig, dir: &'a Path, first: u64, leader: bool) -> Result<Self> {
        let open = || std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log.jsonl"));
        let log = if leader { Some(open()?) } else { None };
        let bar = if leader { progress_bar(r, first) } else { None };
        let (step_time, smoothed, skipped_in_a_row) = (0.0, None, 0);
        let last_report = Instant::now();
        Ok(Progress { r, dir, log, bar, first, step_time, smoothed, skipped_in_a_row, last_report })
    }

    /// Logs a finished step; a non-finite one stops the run (an error naming the step and the
    /// checkpoint kept) or, with `skip_nonfinite`, is logged as skipped.
    fn record(&mut self, s: &StepStats) -> Result<()> {
        let step = s.step;
        if s.applied {
            self.skipped_in_a_row = 0;
            self.smoothed = Some(self.smoothed.map_or(s.loss, |m| 0.98 * m + 0.02 * s.loss));
            self.log_line(json!({"step": step, "loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr}))?;
        } else {
            let what = format!("step {step}: the loss is {} and the gradient norm {}", s.loss, s.grad_norm);
            self.skipped_in_a_row += 1;
            if !self.r.skip_nonfinite || self.skipped_in_a_row > MAX_SKIPPED_IN_A_ROW {
                return Err(self.stop_nonfinite(&what));
            }
            if self.log.is_some() {
                eprintln!("{what}; step skipped (--skip-nonfinite)");
            }
            self.log_line(json!({"step": step, "loss": null, "grad_norm": null, "lr": s.lr, "skipped": true}))?;
        }
        self.last_report = Instant::now();
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(format!("loss {:.4}  {:.1} img/s", self.smoothed.unwrap_or(f32::NAN), self.rate(step)));
        }
        Ok(())
    }

    /// Whether the bar has waited long enough for news (a captured run reads its stats back
    /// at least this often, however slow its steps).
    fn due(&self) -> bool {
        self.last_report.elapsed().as_secs_f64() > 1.0
    }

    fn log_line(&mut self, line: serde_json::Value) -> Result<()> {
        if let Some(log) = &mut self.log {
            writeln!(log, "{line}")?;
        }
        Ok(())
    }

    fn stop_nonfinite(&self, what: &str) -> anyhow::Error {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
        let kept = match checkpoint::saved_step(self.dir) {
            Some(n) => format!("the last good checkpoint (step {n}) is kept in {}", self.dir.display()),
            None => "no checkpoint had been written".into(),
        };
        let hint = if self.r.skip_nonfinite {
            format!("{MAX_SKIPPED_IN_A_ROW} steps in a row skipped; ")
        } else {
            "lower --lr, or pass --skip-nonfinite; ".into()
        };
        anyhow::anyhow!("{what}; training stopped ({hint}{kept})")
    }

    /// Images per second of training steps since this process started.
    fn rate(&self, step: u64) -> f64 {
        (step - self.first) as f64 * self.r.batch as f64 / self.step_time.max(1e-9)
    }

    fn finish(self, steps: u64, last_grid: Option<PathBuf>) -> Summary {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        let images_per_second = self.rate(steps);
        Summary { steps, final_loss: self.smoothed.unwrap_or(f32::NAN), images_per_second, last_grid }
    }
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
