//! Run directories. Everything needed to resume (raw weights, AdamW moments, EMA weights, the
//! step, the run's settings) is one safetensors file, `train_state.safetensors`, replaced
//! atomically, with the one before kept as `train_state.prev.safetensors`; a crash at any moment
//! leaves a complete checkpoint. Beside it, a diffusers pipeline folder (model_index.json, unet/
//! with the EMA weights, scheduler/) that `DDPMPipeline.from_pretrained` loads.

use super::step::TrainState;
use crate::backend::Backend;
use crate::checkpoint::atomic_write;
use crate::checkpoint::model::save_unet;
use crate::checkpoint::tensors::{parse_tensors, serialize_tensors};
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
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), state.step.to_string());
    meta.insert("run".to_string(), run.to_string());
    let bytes = serialize_tensors(&tensors, Some(meta))?;
    let (path, prev) = (dir.join(STATE_FILE), dir.join(PREV_STATE_FILE));
    if path.is_file() {
        std::fs::rename(&path, &prev)
            .with_context(|| format!("cannot keep the previous checkpoint as {}", prev.display()))?;
    }
    atomic_write(&path, &bytes)?;
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
    atomic_write(&dir.join("scheduler/scheduler_config.json"), serde_json::to_string_pretty(&sched_json)?.as_bytes())?;
    let index = json!({"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]});
    atomic_write(&dir.join("model_index.json"), serde_json::to_string_pretty(&index)?.as_bytes())
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
