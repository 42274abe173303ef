//! UNet2DModel configuration: the keys of diffusers' `config.json` for the DDPM family, with
//! diffusers' defaults. A value this engine does not implement is refused with an error naming the
//! key; unknown keys (`_class_name`, `_diffusers_version`, ...) are ignored.

use crate::json_keys::present;
use anyhow::{Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// A down block, by diffusers' class name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DownBlock {
    #[serde(rename = "DownBlock2D")]
    Plain,
    #[serde(rename = "AttnDownBlock2D")]
    Attn,
}

/// An up block, by diffusers' class name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum UpBlock {
    #[serde(rename = "UpBlock2D")]
    Plain,
    #[serde(rename = "AttnUpBlock2D")]
    Attn,
}

/// `--preset`: the built-in model configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// A small model for tests and the demo (two resolutions, attention at the lower one).
    Tiny,
    /// google/ddpm-cifar10-32 (35.7M parameters).
    Cifar10,
}

impl Preset {
    pub fn config(self) -> UNetConfig {
        match self {
            Preset::Tiny => UNetConfig::tiny(),
            Preset::Cifar10 => UNetConfig::cifar10(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Cifar10 => "cifar10",
        }
    }
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

    /// A preset by its `--preset` name.
    pub fn preset(name: &str) -> Result<Self> {
        match <Preset as clap::ValueEnum>::from_str(name, false) {
            Ok(p) => Ok(p.config()),
            Err(_) => bail!("unknown preset {name:?} (available: tiny, cifar10)"),
        }
    }

    /// Channels of the time embedding (4 x the first block's).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Reads a diffusers UNet2DModel `config.json`: absent or null keys take diffusers' defaults
    /// (except attention_head_dim, whose null means one head over all channels).
    pub fn from_json(text: &str) -> Result<Self> {
        let k: ConfigKeys = crate::json_keys::parse(text, "model config")?;
        k.refuse_unsupported()?;
        let d = Self::defaults();
        let c = UNetConfig {
            sample_size: k.sample_size.unwrap_or(d.sample_size),
            in_channels: k.in_channels.unwrap_or(d.in_channels),
            out_channels: k.out_channels.unwrap_or(d.out_channels),
            block_out_channels: k.block_out_channels.unwrap_or(d.block_out_channels),
            layers_per_block: k.layers_per_block.unwrap_or(d.layers_per_block),
            down_block_types: k.down_block_types.unwrap_or(d.down_block_types),
            up_block_types: k.up_block_types.unwrap_or(d.up_block_types),
            add_attention: k.add_attention.unwrap_or(d.add_attention),
            attention_head_dim: k.attention_head_dim.unwrap_or(d.attention_head_dim),
            norm_num_groups: k.norm_num_groups.unwrap_or(d.norm_num_groups),
            norm_eps: k.norm_eps.unwrap_or(d.norm_eps),
            flip_sin_to_cos: k.flip_sin_to_cos.unwrap_or(d.flip_sin_to_cos),
            freq_shift: k.freq_shift.unwrap_or(d.freq_shift),
            downsample_padding: k.downsample_padding.unwrap_or(d.downsample_padding),
            mid_block_scale_factor: k.mid_block_scale_factor.unwrap_or(d.mid_block_scale_factor),
            center_input_sample: k.center_input_sample.unwrap_or(d.center_input_sample),
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

/// The keys of config.json this engine reads; `None` is an absent (or, except where noted, null)
/// key. The `Value` fields are keys whose only supported value is diffusers' default for the DDPM
/// family: they are read as they are and compared in [`ConfigKeys::refuse_unsupported`].
#[derive(Default, Deserialize)]
#[serde(default)]
struct ConfigKeys {
    sample_size: Option<usize>,
    in_channels: Option<usize>,
    out_channels: Option<usize>,
    block_out_channels: Option<Vec<usize>>,
    layers_per_block: Option<usize>,
    down_block_types: Option<Vec<DownBlock>>,
    up_block_types: Option<Vec<UpBlock>>,
    add_attention: Option<bool>,
    /// Absent: diffusers' default (8); null: one head over all channels.
    #[serde(deserialize_with = "present")]
    attention_head_dim: Option<Option<usize>>,
    norm_num_groups: Option<usize>,
    norm_eps: Option<f32>,
    flip_sin_to_cos: Option<bool>,
    freq_shift: Option<f32>,
    downsample_padding: Option<usize>,
    mid_block_scale_factor: Option<f32>,
    center_input_sample: Option<bool>,
    dropout: Option<f32>,
    #[serde(deserialize_with = "present")]
    act_fn: Option<Value>,
    #[serde(deserialize_with = "present")]
    time_embedding_type: Option<Value>,
    #[serde(deserialize_with = "present")]
    resnet_time_scale_shift: Option<Value>,
    #[serde(deserialize_with = "present")]
    mid_block_type: Option<Value>,
    #[serde(deserialize_with = "present")]
    downsample_type: Option<Value>,
    #[serde(deserialize_with = "present")]
    upsample_type: Option<Value>,
    #[serde(deserialize_with = "present")]
    class_embed_type: Option<Value>,
    #[serde(deserialize_with = "present")]
    num_class_embeds: Option<Value>,
    #[serde(deserialize_with = "present")]
    time_embedding_dim: Option<Value>,
    #[serde(deserialize_with = "present")]
    attn_norm_num_groups: Option<Value>,
}

impl ConfigKeys {
    /// Refuses the values of diffusers' UNet2DModel this engine does not implement, naming the key.
    fn refuse_unsupported(&self) -> Result<()> {
        let fixed: [(&str, &Option<Value>, Value); 10] = [
            ("act_fn", &self.act_fn, json!("silu")),
            ("time_embedding_type", &self.time_embedding_type, json!("positional")),
            ("resnet_time_scale_shift", &self.resnet_time_scale_shift, json!("default")),
            ("mid_block_type", &self.mid_block_type, json!("UNetMidBlock2D")),
            ("downsample_type", &self.downsample_type, json!("conv")),
            ("upsample_type", &self.upsample_type, json!("conv")),
            ("class_embed_type", &self.class_embed_type, Value::Null),
            ("num_class_embeds", &self.num_class_embeds, Value::Null),
            ("time_embedding_dim", &self.time_embedding_dim, Value::Null),
            ("attn_norm_num_groups", &self.attn_norm_num_groups, Value::Null),
        ];
        for (k, got, want) in fixed {
            match got {
                // null means "no mid block" to diffusers; elsewhere it is the default.
                Some(Value::Null) if k == "mid_block_type" => {
                    bail!("mid_block_type = null (no mid block) is not supported")
                }
                Some(v) if !v.is_null() && *v != want => bail!("{k} = {v} is not supported (only {want})"),
                _ => {}
            }
        }
        if let Some(dropout) = self.dropout
            && dropout != 0.0
        {
            bail!("dropout = {dropout} is not supported yet (only 0)");
        }
        Ok(())
    }
}
