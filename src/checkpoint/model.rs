//! diffusers model folders: `config.json` + `diffusion_pytorch_model.safetensors` (a UNet folder),
//! a pipeline or run directory with `unet/` and `scheduler/`, or a single safetensors file with its
//! config.json beside it. Writing produces what diffusers' `UNet2DModel.from_pretrained` and
//! `DDPMPipeline.from_pretrained` load.

use super::tensors::{modernize_name, read_tensors, write_tensors};
use crate::diffusion::SchedulerConfig;
use crate::model::UNetConfig;
use crate::model::weights::{HostParams, ParamTable};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// A model read from disk.
pub struct LoadedModel {
    pub config: UNetConfig,
    pub table: ParamTable,
    pub params: HostParams,
    /// The folder's scheduler config, if it has one.
    pub scheduler: Option<SchedulerConfig>,
}

/// Where the UNet's config and weights are, for any of the accepted layouts.
fn locate(path: &Path) -> Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Ok((dir.join("config.json"), path.to_path_buf(), None));
    }
    if !path.is_dir() {
        bail!("{} does not exist", path.display());
    }
    let unet = if path.join("unet").join("config.json").is_file() { path.join("unet") } else { path.to_path_buf() };
    let scheduler = [path.join("scheduler").join("scheduler_config.json"), path.join("scheduler_config.json")]
        .into_iter()
        .find(|p| p.is_file());
    if !unet.join(WEIGHTS_FILE).is_file() {
        if unet.join("diffusion_pytorch_model.bin").is_file() {
            bail!(
                "{} holds PyTorch .bin weights; convert them to safetensors (diffusers: save_pretrained(safe_serialization=True))",
                unet.display()
            );
        }
        bail!("{} holds no {WEIGHTS_FILE}", unet.display());
    }
    Ok((unet.join("config.json"), unet.join(WEIGHTS_FILE), scheduler))
}

pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let (config_path, weights_path, scheduler_path) = locate(path)?;
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read the model config {}", config_path.display()))?;
    let config = UNetConfig::from_json(&text).with_context(|| format!("in {}", config_path.display()))?;
    let table = ParamTable::new(&config);
    let tensors: HashMap<String, _> =
        read_tensors(&weights_path)?.into_iter().map(|(name, t)| (modernize_name(&name), t)).collect();
    let params = HostParams::from_torch(&table, tensors).with_context(|| format!("in {}", weights_path.display()))?;
    let scheduler = scheduler_path.map(|p| SchedulerConfig::from_file(&p)).transpose()?;
    Ok(LoadedModel { config, table, params, scheduler })
}

/// Writes a UNet folder (config.json and the weights) that diffusers loads.
pub fn save_unet(dir: &Path, config: &UNetConfig, table: &ParamTable, params: &HostParams) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_tensors(&dir.join(WEIGHTS_FILE), &params.to_torch(table), Some(meta))?;
    let json = serde_json::to_string_pretty(&config.to_json())?;
    super::write_if_changed(&dir.join("config.json"), json.as_bytes())
}
