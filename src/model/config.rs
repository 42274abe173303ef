//! UNet2DModel configuration: the keys of diffusers' `config.json` for the DDPM family, with
//! diffusers' defaults. A value this engine does not implement is refused with an error naming the
//! key; unknown keys (`_class_name`, `_diffusers_version`, ...) are ignored.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownBlock {
    Plain,
    Attn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpBlock {
    Plain,
    Attn,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub down_block_types: Vec<DownBlock>,
    pub up_block_types: Vec<UpBlock>,
    pub add_attention: bool,
    /// Channels per attention head; None means one head over all channels.
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f32,
    pub center_input_sample: bool,
}

impl UNetConfig {
    /// google/ddpm-cifar10-32: 35,746,307 parameters.
    pub fn cifar10() -> Self {
        UNetConfig {
            sample_size: 32,
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 256, 256],
            layers_per_block: 2,
            down_block_types: vec![DownBlock::Plain, DownBlock::Attn, DownBlock::Plain, DownBlock::Plain],
            up_block_types: vec![UpBlock::Plain, UpBlock::Plain, UpBlock::Attn, UpBlock::Plain],
            add_attention: true,
            attention_head_dim: None,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            downsample_padding: 0,
            mid_block_scale_factor: 1.0,
            center_input_sample: false,
        }
    }

    /// A small model for tests and the demo: two resolutions, attention at the lower one.
    pub fn tiny() -> Self {
        UNetConfig {
            sample_size: 16,
            block_out_channels: vec![32, 64],
            layers_per_block: 1,
            down_block_types: vec![DownBlock::Plain, DownBlock::Attn],
            up_block_types: vec![UpBlock::Attn, UpBlock::Plain],
            norm_num_groups: 8,
            ..Self::cifar10()
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "cifar10" => Ok(Self::cifar10()),
            "tiny" => Ok(Self::tiny()),
            other => bail!("unknown preset {other:?} (available: tiny, cifar10)"),
        }
    }

    /// Channels of the time embedding (4 x the first block's).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Reads a diffusers UNet2DModel `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("model config is not valid JSON")?;
        let o = v.as_object().context("model config must be a JSON object")?;
        let get = |k: &str| o.get(k).filter(|v| !v.is_null());
        let usize_of = |k: &str, default: usize| -> Result<usize> {
            get(k).map_or(Ok(default), |v| {
                v.as_u64().map(|x| x as usize).with_context(|| format!("{k} must be a non-negative integer, got {v}"))
            })
        };
        let f32_of = |k: &str, default: f32| -> Result<f32> {
            get(k).map_or(Ok(default), |v| {
                v.as_f64().map(|x| x as f32).with_context(|| format!("{k} must be a number, got {v}"))
            })
        };
        let bool_of = |k: &str, default: bool| -> Result<bool> {
            get(k).map_or(Ok(default), |v| v.as_bool().with_context(|| format!("{k} must be true or false, got {v}")))
        };
        let str_list = |k: &str| -> Result<Option<Vec<String>>> {
            get(k)
                .map(|v| {
                    v.as_array()
                        .with_context(|| format!("{k} must be a list"))?
                        .iter()
                        .map(|s| {
                            s.as_str().map(str::to_string).with_context(|| format!("{k} must be a list of strings"))
                        })
                        .collect()
                })
                .transpose()
        };
        let d = Self::defaults();
        let block_out_channels = match get("block_out_channels") {
            None => d.block_out_channels.clone(),
            Some(v) => v
                .as_array()
                .context("block_out_channels must be a list of integers")?
                .iter()
                .map(|c| c.as_u64().map(|c| c as usize).context("block_out_channels must be a list of integers"))
                .collect::<Result<_>>()?,
        };
        let down_block_types = match str_list("down_block_types")? {
            None => d.down_block_types.clone(),
            Some(l) => l
                .iter()
                .map(|s| match s.as_str() {
                    "DownBlock2D" => Ok(DownBlock::Plain),
                    "AttnDownBlock2D" => Ok(DownBlock::Attn),
                    other => bail!("down_block_types: {other:?} is not supported (DownBlock2D, AttnDownBlock2D)"),
                })
                .collect::<Result<_>>()?,
        };
        let up_block_types = match str_list("up_block_types")? {
            None => d.up_block_types.clone(),
            Some(l) => l
                .iter()
                .map(|s| match s.as_str() {
                    "UpBlock2D" => Ok(UpBlock::Plain),
                    "AttnUpBlock2D" => Ok(UpBlock::Attn),
                    other => bail!("up_block_types: {other:?} is not supported (UpBlock2D, AttnUpBlock2D)"),
                })
                .collect::<Result<_>>()?,
        };
        // Keys whose only supported value is diffusers' default for the DDPM family.
        let fixed: [(&str, Value); 10] = [
            ("act_fn", json!("silu")),
            ("time_embedding_type", json!("positional")),
            ("resnet_time_scale_shift", json!("default")),
            ("mid_block_type", json!("UNetMidBlock2D")),
            ("downsample_type", json!("conv")),
            ("upsample_type", json!("conv")),
            ("class_embed_type", Value::Null),
            ("num_class_embeds", Value::Null),
            ("time_embedding_dim", Value::Null),
            ("attn_norm_num_groups", Value::Null),
        ];
        for (k, want) in fixed {
            if let Some(v) = get(k)
                && *v != want
            {
                bail!("{k} = {v} is not supported (only {want})");
            }
        }
        if o.get("mid_block_type").is_some_and(Value::is_null) {
            bail!("mid_block_type = null (no mid block) is not supported");
        }
        let dropout = f32_of("dropout", 0.0)?;
        if dropout != 0.0 {
            bail!("dropout = {dropout} is not supported yet (only 0)");
        }
        let c = UNetConfig {
            sample_size: usize_of("sample_size", d.sample_size)?,
            in_channels: usize_of("in_channels", d.in_channels)?,
            out_channels: usize_of("out_channels", d.out_channels)?,
            block_out_channels,
            layers_per_block: usize_of("layers_per_block", d.layers_per_block)?,
            down_block_types,
            up_block_types,
            add_attention: bool_of("add_attention", true)?,
            attention_head_dim: get("attention_head_dim")
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as usize)
                        .with_context(|| format!("attention_head_dim must be an integer or null, got {v}"))
                })
                .transpose()?,
            norm_num_groups: usize_of("norm_num_groups", d.norm_num_groups)?,
            norm_eps: f32_of("norm_eps", d.norm_eps)?,
            flip_sin_to_cos: bool_of("flip_sin_to_cos", d.flip_sin_to_cos)?,
            freq_shift: f32_of("freq_shift", d.freq_shift)?,
            downsample_padding: usize_of("downsample_padding", d.downsample_padding)?,
            mid_block_scale_factor: f32_of("mid_block_scale_factor", d.mid_block_scale_factor)?,
            center_input_sample: bool_of("center_input_sample", d.center_input_sample)?,
        };
        c.validate()?;
        Ok(c)
    }

    /// diffusers' UNet2DModel defaults (which differ from the CIFAR-10 model's).
    fn defaults() -> Self {
        UNetConfig {
            sample_size: 32,
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            down_block_types: vec![DownBlock::Plain, DownBlock::Attn, DownBlock::Attn, DownBlock::Attn],
            up_block_types: vec![UpBlock::Attn, UpBlock::Attn, UpBlock::Attn, UpBlock::Plain],
            add_attention: true,
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            center_input_sample: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || n > 16 {
            bail!("block_out_channels must have 1 to 16 entries, got {n}");
        }
        // Bounds far past any DDPM (whose sizes are in the hundreds), so the shape arithmetic of
        // the parameter table and the kernels cannot overflow on a hostile config.json.
        let sizes = [
            ("layers_per_block", self.layers_per_block, 64),
            ("in_channels", self.in_channels, 1 << 16),
            ("out_channels", self.out_channels, 1 << 16),
            ("sample_size", self.sample_size, 1 << 16),
            ("norm_num_groups", self.norm_num_groups, 1 << 16),
            ("downsample_padding", self.downsample_padding, 1 << 16),
        ];
        for (key, v, max) in
            sizes.into_iter().chain(self.block_out_channels.iter().map(|&c| ("block_out_channels", c, 1 << 16)))
        {
            if v > max {
                bail!("{key}: {v} is too large (at most {max})");
            }
        }
        if self.norm_num_groups == 0 {
            bail!("norm_num_groups must be positive");
        }
        for (key, v) in [("freq_shift", self.freq_shift), ("mid_block_scale_factor", self.mid_block_scale_factor)] {
            if !v.is_finite() {
                bail!("{key} must be finite, got {v}");
            }
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        if self.layers_per_block == 0 || self.in_channels == 0 || self.out_channels == 0 || self.sample_size == 0 {
            bail!("layers_per_block, in_channels, out_channels and sample_size must be positive");
        }
        for &c in &self.block_out_channels {
            if c == 0 || c % self.norm_num_groups != 0 {
                bail!(
                    "block_out_channels: {c} is not a positive multiple of norm_num_groups ({})",
                    self.norm_num_groups
                );
            }
            if let Some(d) = self.attention_head_dim
                && (d == 0 || c % d != 0)
            {
                bail!("attention_head_dim {d} does not divide block_out_channels entry {c}");
            }
        }
        if !self.sample_size.is_multiple_of(1 << (n - 1)) {
            bail!(
                "sample_size {} must be divisible by {} (one halving per down block)",
                self.sample_size,
                1 << (n - 1)
            );
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            bail!("norm_eps must be positive, got {}", self.norm_eps);
        }
        Ok(())
    }

    /// The config.json diffusers writes for this model.
    pub fn to_json(&self) -> Value {
        json!({
            "_class_name": "UNet2DModel",
            "sample_size": self.sample_size,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "center_input_sample": self.center_input_sample,
            "time_embedding_type": "positional",
            "freq_shift": self.freq_shift,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "down_block_types": self.down_block_types.iter().map(|b| match b { DownBlock::Plain => "DownBlock2D", DownBlock::Attn => "AttnDownBlock2D" }).collect::<Vec<_>>(),
            "up_block_types": self.up_block_types.iter().map(|b| match b { UpBlock::Plain => "UpBlock2D", UpBlock::Attn => "AttnUpBlock2D" }).collect::<Vec<_>>(),
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "mid_block_scale_factor": self.mid_block_scale_factor,
            "downsample_padding": self.downsample_padding,
            "dropout": 0.0,
            "act_fn": "silu",
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "resnet_time_scale_shift": "default",
            "add_attention": self.add_attention,
        })
    }
}
