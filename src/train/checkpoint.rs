//! Run directories. Everything needed to resume (raw weights, AdamW moments, EMA weights, the
//! step, the run's settings) is one safetensors file, `train_state.safetensors`, replaced
//! atomically, with the one before kept as `train_state.prev.safetensors`. Beside it, a diffusers
//! pipeline folder (model_index.json, unet/ with the EMA weights, scheduler/) that
//! `DDPMPipeline.from_pretrained` loads.
//!
//! A kill at any instant leaves a complete state file, old or new: every file is replaced by
//! write-fsync-rename, the previous state is kept by a hard link (so the state file itself is never
//! missing, as it was when it was renamed away first), and the state file, the one resume reads,
//! is written last: it is the commit point, and the export beside it is never older than it.

use super::step::TrainState;
use crate::backend::Backend;
use crate::checkpoint::model::save_unet;
use crate::checkpoint::tensors::{parse_tensors, serialize_tensors};
use crate::checkpoint::{atomic_write, write_if_changed};
use crate::diffusion::SchedulerConfig;
use crate::model::UNetConfig;
use crate::model::weights::{HostParams, ParamTable};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

pub const STATE_FILE: &str = "train_state.safetensors";
pub const PREV_STATE_FILE: &str = "train_state.prev.safetensors";

const GROUPS: [&str; 4] = ["param", "exp_avg", "exp_avg_sq", "ema"];

/// Saves the training state and the diffusers export of the EMA weights. `run` is JSON with the
/// run's settings (config, data, seed, batch, optimizer), stored in the state file's metadata.
pub fn save<B: Backend>(
    dir: &Path,
    b: &B,
    table: &ParamTable,
    config: &UNetConfig,
    state: &TrainState<B::Buf>,
    run: &Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tensors = Vec::new();
    for (group, bufs) in GROUPS.iter().zip([&state.params, &state.exp_avg, &state.exp_avg_sq, &state.ema]) {
        for (name, shape, data) in HostParams::download(b, bufs)?.to_torch(table) {
            tensors.push((format!("{group}.{name}"), shape, data));
        }
    }
    // The last guard against a poisoned state: finite losses do not guarantee finite weights (an
    // AdamW step at a huge learning rate overflows them), and a checkpoint of them would replace
    // the last good one.
    if let Some((name, ..)) = tensors.iter().find(|(_, _, d)| d.iter().any(|v| !v.is_finite())) {
        let kept = saved_step(dir).map_or("no checkpoint had been written".into(), |n| {
            format!("the last good checkpoint (step {n}) is kept in {}", dir.display())
        });
        bail!("step {}: {name} holds NaN or infinite values; training stopped, nothing saved ({kept})", state.step);
    }
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), state.step.to_string());
    meta.insert("run".to_string(), run.to_string());
    let bytes = serialize_tensors(&tensors, Some(meta))?;
    let ema = HostParams::download(b, &state.ema)?;
    save_unet(&dir.join("unet"), config, table, &ema)?;
    let scheduler = SchedulerConfig::default();
    let sched_json = json!({
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": scheduler.num_train_timesteps,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "variance_type": "fixed_small",
        "clip_sample": true,
        "prediction_type": "epsilon",
    });
    std::fs::create_dir_all(dir.join("scheduler"))?;
    write_if_changed(
        &dir.join("scheduler/scheduler_config.json"),
        serde_json::to_string_pretty(&sched_json)?.as_bytes(),
    )?;
    let index = json!({"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]});
    write_if_changed(&dir.join("model_index.json"), serde_json::to_string_pretty(&index)?.as_bytes())?;
    let (path, prev) = (dir.join(STATE_FILE), dir.join(PREV_STATE_FILE));
    if path.is_file() {
        keep_previous(&path, &prev)?;
    }
    atomic_write(&path, &bytes)
}

/// Makes `prev` a copy of `path` without ever removing `path`: a hard link under a temporary name
/// renamed over `prev` (a full copy where the filesystem has no hard links).
fn keep_previous(path: &Path, prev: &Path) -> Result<()> {
    let tmp = prev.with_file_name(format!(".{PREV_STATE_FILE}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(path, &tmp).is_ok() {
        std::fs::rename(&tmp, prev)
            .with_context(|| format!("cannot keep the previous checkpoint as {}", prev.display()))?;
        // Where `prev` already was a link to the same file (a kill between this and the write of
        // the new state), rename does nothing and leaves `tmp` (POSIX rename(2)).
        let _ = std::fs::remove_file(&tmp);
        return Ok(());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    atomic_write(prev, &bytes).with_context(|| format!("cannot keep the previous checkpoint as {}", prev.display()))
}

/// Removes the temporary files of writes that a killed process left half done (`.NAME.tmp-PID`
/// beside the run's files), so that crashes do not pile up copies of the weights. Files of a live
/// process (where /proc tells) are left alone.
pub fn remove_stale_temps(dir: &Path) {
    for sub in [dir.to_path_buf(), dir.join("unet"), dir.join("scheduler"), dir.join("samples")] {
        let Ok(entries) = std::fs::read_dir(&sub) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { continue };
            let alive =
                pid.parse::<u32>().is_ok_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The step of the state file in `dir`, if one reads.
pub fn saved_step(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    meta.metadata().as_ref()?.get("step")?.parse().ok()
}

/// A loaded training state, on the host.
pub struct Resumed {
    pub step: u64,
    pub run: Value,
    /// param, exp_avg, exp_avg_sq, ema (engine layouts).
    pub groups: [HostParams; 4],
}

/// Reads a state file; a damaged or truncated one is an error naming the file.
pub fn load(path: &Path, table: &ParamTable) -> Result<Resumed> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes, &path.display().to_string(), table)
}

/// [`load`] on the bytes of a state file; `name` names it in errors.
pub fn parse(bytes: &[u8], name: &str, table: &ParamTable) -> Result<Resumed> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{} is damaged or truncated ({e})", name))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let step: u64 =
        meta.get("step").and_then(|s| s.parse().ok()).with_context(|| format!("{}: no step in the metadata", name))?;
    let run: Value = meta
        .get("run")
        .and_then(|s| serde_json::from_str(s).ok())
        .with_context(|| format!("{}: no run settings", name))?;
    let mut all = parse_tensors(bytes).with_context(|| format!("{name} is damaged or truncated"))?;
    let mut take = |group: &str| -> Result<HostParams> {
        let prefix = format!("{group}.");
        let tensors: HashMap<_, _> = all
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
            .collect();
        all.retain(|k, _| !k.starts_with(&prefix));
        HostParams::from_torch(table, tensors).with_context(|| format!("{}: {group} tensors", name))
    };
    let groups = [take("param")?, take("exp_avg")?, take("exp_avg_sq")?, take("ema")?];
    if !all.is_empty() {
        bail!("{}: unexpected tensors", name);
    }
    Ok(Resumed { step, run, groups })
}

impl<Buf> TrainState<Buf> {
    pub fn from_resumed<B: Backend<Buf = Buf>>(b: &B, r: &Resumed) -> Result<Self> {
        Ok(TrainState {
            params: r.groups[0].upload(b)?,
            grads: r.groups[0].values.iter().map(|v| b.alloc(v.len())).collect::<Result<_>>()?,
            exp_avg: r.groups[1].upload(b)?,
            exp_avg_sq: r.groups[2].upload(b)?,
            ema: r.groups[3].upload(b)?,
            step: r.step,
        })
    }
}
