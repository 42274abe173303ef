//! Fuzz entry points: every parser of a file this engine reads, on in-memory bytes, returning a
//! Result and never panicking. One place for both fuzzers: the cargo-fuzz targets in fuzz/ (runs
//! of minutes by hand, on nightly) and the bounded, seeded run in tests/fuzz_parsers.rs. Each
//! calls the same code the file-reading paths call, and goes on as far as the loader would with
//! the result (tables, schedulers, images) so what a parser lets through is exercised too.

use crate::data::Dataset;
use anyhow::{Context, Result};

/// The name errors must carry, standing in for the file's path.
pub const NAME: &str = "fuzz-input";

/// safetensors weights (a diffusers folder's diffusion_pytorch_model.safetensors).
pub fn safetensors(data: &[u8]) -> Result<()> {
    let tensors = crate::checkpoint::tensors::parse_tensors(data).with_context(|| format!("{NAME} is not usable"))?;
    // As load_model does: map the names onto a config's table.
    let table = crate::model::weights::ParamTable::new(&config());
    let tensors = tensors.into_iter().map(|(k, v)| (crate::checkpoint::modernize_name(&k), v)).collect();
    crate::model::weights::HostParams::from_torch(&table, tensors).with_context(|| format!("in {NAME}"))?;
    Ok(())
}

/// A run directory's train_state.safetensors, read against [`config`]'s table.
pub fn train_state(data: &[u8]) -> Result<()> {
    let table = crate::model::weights::ParamTable::new(&config());
    crate::train::checkpoint::parse(data, NAME, &table).map(drop)
}

/// .npy arrays (noise, `ddpm grads` inputs).
pub fn npy(data: &[u8]) -> Result<()> {
    crate::npy::parse_f32(data, NAME).map(drop)
}

/// IDX image files, plain or gzip.
pub fn idx(data: &[u8]) -> Result<()> {
    touch(&crate::data::idx::decode(data, NAME)?);
    Ok(())
}

/// One CIFAR-10 batch file.
pub fn cifar(data: &[u8]) -> Result<()> {
    let mut pixels = Vec::new();
    crate::data::cifar::decode(data, NAME, &mut pixels)?;
    touch(&crate::data::InMemory { size: 32, channels: 3, pixels });
    Ok(())
}

/// One image of a folder dataset, resized to 8x8. Decoding may allocate 16 bytes per input byte
/// (plus 256 KiB), far below folder::MAX_ALLOC, so the fuzzers check the limit is honoured
/// before the decoder allocates rather than spending their time on 512 MB images.
pub fn image(data: &[u8]) -> Result<()> {
    let max_alloc = 16 * data.len() as u64 + (256 << 10);
    crate::data::folder::decode(data, NAME, 8, max_alloc).map(drop)
}

/// A model's config.json, with the parameter table it implies.
pub fn model_config(data: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(data).with_context(|| format!("{NAME} is not UTF-8"))?;
    let config = crate::model::UNetConfig::from_json(text).with_context(|| format!("in {NAME}"))?;
    crate::model::weights::ParamTable::new(&config);
    Ok(())
}

/// A scheduler_config.json, with both schedulers built from it and set to 10 sampling steps.
pub fn scheduler_config(data: &[u8]) -> Result<()> {
    use crate::diffusion::{DdimScheduler, DdpmScheduler, SchedulerConfig};
    let in_name = || format!("in {NAME}");
    let text = std::str::from_utf8(data).with_context(|| format!("{NAME} is not UTF-8"))?;
    let config = SchedulerConfig::from_json(text).with_context(in_name)?;
    let steps = config.num_train_timesteps.min(10);
    DdpmScheduler::new(config.clone()).and_then(|mut s| s.set_timesteps(steps)).with_context(in_name)?;
    DdimScheduler::new(config).and_then(|mut s| s.set_timesteps(steps)).with_context(in_name)?;
    Ok(())
}

/// A fuzz entry point.
pub type Target = fn(&[u8]) -> Result<()>;

/// Every target by name, for the fuzzers' loops.
pub const TARGETS: [(&str, Target); 8] = [
    ("safetensors", safetensors),
    ("train_state", train_state),
    ("npy", npy),
    ("idx", idx),
    ("cifar", cifar),
    ("image", image),
    ("model_config", model_config),
    ("scheduler_config", scheduler_config),
];

/// The smallest model config the parsers accept: seeds built on it stay a few KB, so a fuzzer
/// spends its time in the parser and not in copying megabytes.
pub fn config() -> crate::model::UNetConfig {
    use crate::model::config::{DownBlock, UpBlock};
    crate::model::UNetConfig {
        sample_size: 8,
        in_channels: 1,
        out_channels: 1,
        block_out_channels: vec![4],
        down_block_types: vec![DownBlock::Attn],
        up_block_types: vec![UpBlock::Attn],
        layers_per_block: 1,
        norm_num_groups: 2,
        ..crate::model::UNetConfig::tiny()
    }
}

/// Small valid inputs of `target`, for the fuzzers to start from (the real fixtures in
/// tests/fixtures are added to the cargo-fuzz corpora beside these).
pub fn seeds(target: &str) -> Result<Vec<Vec<u8>>> {
    use crate::checkpoint::tensors::serialize_tensors;
    use crate::model::weights::{HostParams, ParamTable};
    use std::io::Write;
    let config = config();
    let table = ParamTable::new(&config);
    let weights = HostParams::init(&table, 0).to_torch(&table);
    Ok(match target {
        "safetensors" => vec![serialize_tensors(&weights, None)?],
        "train_state" => {
            let groups = ["param", "exp_avg", "exp_avg_sq", "ema"];
            let all: Vec<_> =
                groups.iter().flat_map(|g| weights.iter().map(move |(n, s, d)| (format!("{g}.{n}"), s.clone(), d.clone()))).collect();
            let meta = [("step", "7".to_string()), ("run", r#"{"seed":0,"batch":2}"#.to_string())];
            vec![serialize_tensors(&all, Some(meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))?]
        }
        "npy" => vec![
            crate::npy::to_bytes(&[2, 3], &[1.0, -2.0, 3.5, 0.0, 5.0, 6.0])?,
            crate::npy::to_bytes(&[1, 1, 2, 2], &[0.5; 4])?,
        ],
        "idx" => {
            let mut plain = [0x0000_0803u32, 3, 4, 4].iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
            plain.extend((0..48).map(|i| (i * 5) as u8));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&plain)?;
            vec![gz.finish()?, plain]
        }
        "cifar" => vec![(0..2 * 3073).map(|i| (i % 251) as u8).collect()],
        "image" => {
            let img = image::RgbImage::from_fn(12, 6, |x, y| image::Rgb([(x * 20) as u8, (y * 40) as u8, 200]));
            let mut out = Vec::new();
            for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
                let mut bytes = std::io::Cursor::new(Vec::new());
                img.write_to(&mut bytes, format)?;
                out.push(bytes.into_inner());
            }
            out
        }
        "model_config" => [config.to_json(), crate::model::UNetConfig::tiny().to_json()]
            .iter()
            .map(|j| serde_json::to_vec(j).map_err(Into::into))
            .collect::<Result<_>>()?,
        "scheduler_config" => vec![
            br#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "variance_type": "fixed_small", "clip_sample": true, "prediction_type": "epsilon"}"#.to_vec(),
            br#"{"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.4], "timestep_spacing": "trailing", "steps_offset": 1, "set_alpha_to_one": false, "prediction_type": "v_prediction"}"#.to_vec(),
            br#"{"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 50, "timestep_spacing": "linspace"}"#.to_vec(),
        ],
        other => anyhow::bail!("no fuzz target {other}"),
    })
}

/// Reads every decoded image once, as training would.
fn touch(d: &dyn Dataset) {
    for i in 0..d.len().min(4) {
        std::hint::black_box(d.image(i));
    }
}
