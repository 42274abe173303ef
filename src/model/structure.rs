//! The UNet's structure described once, from its config: which blocks, in which stage, with how
//! many channels and under which diffusers name. Parameter naming and shapes (src/model/params.rs)
//! and the blocks the forward and backward passes run (src/model/unet.rs) both walk this
//! description, so a config change is made here alone.

use super::blocks::{AttentionBlock, ResnetBlock};
use super::config::{DownBlock, UNetConfig, UpBlock};
use super::weights::ParamTable;

/// A ResnetBlock2D: `prefix` is its diffusers name (e.g. "down_blocks.1.resnets.0").
#[derive(Clone, Debug, PartialEq)]
pub struct ResnetDesc {
    pub prefix: String,
    pub cin: usize,
    pub cout: usize,
    /// diffusers' output_scale_factor (the mid block's mid_block_scale_factor, else 1).
    pub scale: f32,
}

/// An attention block over `channels`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionDesc {
    pub prefix: String,
    pub channels: usize,
    /// diffusers' rescale_output_factor.
    pub scale: f32,
}

/// One down or up stage: resnets, an attention after each resnet (attention stages only), and
/// the resampling convolution after the stage (all but the last).
#[derive(Clone, Debug, PartialEq)]
pub struct StageDesc {
    pub resnets: Vec<ResnetDesc>,
    pub attentions: Vec<AttentionDesc>,
    /// The down- or upsampler's convolution: (name, channels).
    pub resample: Option<(String, usize)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Structure {
    pub down: Vec<StageDesc>,
    pub mid_resnets: [ResnetDesc; 2],
    pub mid_attention: Option<AttentionDesc>,
    pub up: Vec<StageDesc>,
}

fn resnet(prefix: String, cin: usize, cout: usize, scale: f32) -> ResnetDesc {
    ResnetDesc { prefix, cin, cout, scale }
}

fn attention(prefix: String, channels: usize, scale: f32) -> AttentionDesc {
    AttentionDesc { prefix, channels, scale }
}

/// The structure of the UNet2DModel that `c` configures (the channel arithmetic of diffusers'
/// UNet2DModel.__init__: each down stage maps the previous stage's channels to its own; each up
/// stage concatenates the matching down stage's skip activations).
pub fn describe(c: &UNetConfig) -> Structure {
    let ch = &c.block_out_channels;
    let n = ch.len();
    let mut down = Vec::new();
    let mut out = ch[0];
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let (cin, cout) = (out, ch[i]);
        out = cout;
        let p = format!("down_blocks.{i}");
        let layers = 0..c.layers_per_block;
        down.push(StageDesc {
            resnets: layers
                .clone()
                .map(|j| resnet(format!("{p}.resnets.{j}"), if j == 0 { cin } else { cout }, cout, 1.0))
                .collect(),
            attentions: match kind {
                DownBlock::Attn => layers.map(|j| attention(format!("{p}.attentions.{j}"), cout, 1.0)).collect(),
                DownBlock::Plain => Vec::new(),
            },
            resample: (i + 1 < n).then(|| (format!("{p}.downsamplers.0.conv"), cout)),
        });
    }
    let mid = ch[n - 1];
    let scale = c.mid_block_scale_factor;
    let mid_resnets =
        [resnet("mid_block.resnets.0".into(), mid, mid, scale), resnet("mid_block.resnets.1".into(), mid, mid, scale)];
    let mid_attention = c.add_attention.then(|| attention("mid_block.attentions.0".into(), mid, scale));
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut up = Vec::new();
    let mut out = rev[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let prev = out;
        out = rev[i];
        let input = rev[(i + 1).min(n - 1)];
        let p = format!("up_blocks.{i}");
        let layers = c.layers_per_block + 1;
        up.push(StageDesc {
            resnets: (0..layers)
                .map(|j| {
                    let skip = if j == layers - 1 { input } else { out };
                    resnet(format!("{p}.resnets.{j}"), if j == 0 { prev } else { out } + skip, out, 1.0)
                })
                .collect(),
            attentions: match kind {
                UpBlock::Attn => (0..layers).map(|j| attention(format!("{p}.attentions.{j}"), out, 1.0)).collect(),
                UpBlock::Plain => Vec::new(),
            },
            resample: (i + 1 < n).then(|| (format!("{p}.upsamplers.0.conv"), out)),
        });
    }
    Structure { down, mid_resnets, mid_attention, up }
}

// The blocks the passes run, named from the description.

pub(super) fn resnet_block(t: &ParamTable, d: &ResnetDesc) -> ResnetBlock {
    let p = &d.prefix;
    ResnetBlock {
        cin: d.cin,
        cout: d.cout,
        norm1: t.pair(&format!("{p}.norm1")),
        conv1: t.pair(&format!("{p}.conv1")),
        time_emb_proj: t.pair(&format!("{p}.time_emb_proj")),
        norm2: t.pair(&format!("{p}.norm2")),
        conv2: t.pair(&format!("{p}.conv2")),
        shortcut: (d.cin != d.cout).then(|| t.pair(&format!("{p}.conv_shortcut"))),
        output_scale: d.scale,
    }
}

pub(super) fn attention_block(t: &ParamTable, c: &UNetConfig, d: &AttentionDesc) -> AttentionBlock {
    let p = &d.prefix;
    AttentionBlock {
        channels: d.channels,
        heads: c.attention_head_dim.map_or(1, |h| d.channels / h),
        norm: t.pair(&format!("{p}.group_norm")),
        q: t.pair(&format!("{p}.to_q")),
        k: t.pair(&format!("{p}.to_k")),
        v: t.pair(&format!("{p}.to_v")),
        out: t.pair(&format!("{p}.to_out.0")),
        rescale: d.scale,
    }
}

pub(super) fn stage_blocks(t: &ParamTable, c: &UNetConfig, d: &StageDesc) -> super::unet::Stage {
    super::unet::Stage {
        resnets: d.resnets.iter().map(|r| resnet_block(t, r)).collect(),
        attentions: d.attentions.iter().map(|a| attention_block(t, c, a)).collect(),
        resample: d.resample.as_ref().map(|(name, _)| t.pair(name)),
    }
}
