//! The UNet's parameters: names and shapes exactly as diffusers' UNet2DModel state dict, in its
//! order, so checkpoints move between the two unchanged. Shapes here are PyTorch's (convolution
//! weights OIHW); the engine stores convolution weights OHWI and converts at load and save.

use super::config::{DownBlock, UNetConfig, UpBlock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// [out, in, k, k] in PyTorch, [out, k, k, in] in the engine.
    ConvWeight,
    /// [out, in], the same in both.
    LinearWeight,
    /// GroupNorm gamma.
    NormWeight,
    /// Any bias or GroupNorm beta.
    Bias,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    /// PyTorch's shape.
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Lister {
    specs: Vec<ParamSpec>,
}

impl Lister {
    fn push(&mut self, name: String, shape: Vec<usize>, kind: ParamKind) {
        self.specs.push(ParamSpec { name, shape, kind });
    }
    fn conv(&mut self, prefix: &str, cin: usize, cout: usize, k: usize) {
        self.push(format!("{prefix}.weight"), vec![cout, cin, k, k], ParamKind::ConvWeight);
        self.push(format!("{prefix}.bias"), vec![cout], ParamKind::Bias);
    }
    fn linear(&mut self, prefix: &str, fin: usize, fout: usize) {
        self.push(format!("{prefix}.weight"), vec![fout, fin], ParamKind::LinearWeight);
        self.push(format!("{prefix}.bias"), vec![fout], ParamKind::Bias);
    }
    fn norm(&mut self, prefix: &str, c: usize) {
        self.push(format!("{prefix}.weight"), vec![c], ParamKind::NormWeight);
        self.push(format!("{prefix}.bias"), vec![c], ParamKind::Bias);
    }
    fn resnet(&mut self, prefix: &str, cin: usize, cout: usize, temb: usize) {
        self.norm(&format!("{prefix}.norm1"), cin);
        self.conv(&format!("{prefix}.conv1"), cin, cout, 3);
        self.linear(&format!("{prefix}.time_emb_proj"), temb, cout);
        self.norm(&format!("{prefix}.norm2"), cout);
        self.conv(&format!("{prefix}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{prefix}.conv_shortcut"), cin, cout, 1);
        }
    }
    fn attention(&mut self, prefix: &str, c: usize) {
        self.norm(&format!("{prefix}.group_norm"), c);
        for p in ["to_q", "to_k", "to_v", "to_out.0"] {
            self.linear(&format!("{prefix}.{p}"), c, c);
        }
    }
}

/// Every parameter of the model, in diffusers' state-dict order.
pub fn parameter_specs(c: &UNetConfig) -> Vec<ParamSpec> {
    let mut l = Lister { specs: Vec::new() };
    let ch = &c.block_out_channels;
    let temb = c.time_embed_dim();
    l.conv("conv_in", c.in_channels, ch[0], 3);
    l.linear("time_embedding.linear_1", ch[0], temb);
    l.linear("time_embedding.linear_2", temb, temb);
    let n = ch.len();
    let mut out = ch[0];
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let (cin, cout) = (out, ch[i]);
        out = cout;
        let p = format!("down_blocks.{i}");
        if *kind == DownBlock::Attn {
            for j in 0..c.layers_per_block {
                l.attention(&format!("{p}.attentions.{j}"), cout);
            }
        }
        for j in 0..c.layers_per_block {
            l.resnet(&format!("{p}.resnets.{j}"), if j == 0 { cin } else { cout }, cout, temb);
        }
        if i + 1 < n {
            l.conv(&format!("{p}.downsamplers.0.conv"), cout, cout, 3);
        }
    }
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut out = rev[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let prev = out;
        out = rev[i];
        let input = rev[(i + 1).min(n - 1)];
        let p = format!("up_blocks.{i}");
        let layers = c.layers_per_block + 1;
        if *kind == UpBlock::Attn {
            for j in 0..layers {
                l.attention(&format!("{p}.attentions.{j}"), out);
            }
        }
        for j in 0..layers {
            let skip = if j == layers - 1 { input } else { out };
            let resnet_in = if j == 0 { prev } else { out };
            l.resnet(&format!("{p}.resnets.{j}"), resnet_in + skip, out, temb);
        }
        if i + 1 < n {
            l.conv(&format!("{p}.upsamplers.0.conv"), out, out, 3);
        }
    }
    // diffusers registers mid_block after up_blocks (it is assigned None first), so it comes here.
    let mid = ch[n - 1];
    if c.add_attention {
        l.attention("mid_block.attentions.0", mid);
    }
    l.resnet("mid_block.resnets.0", mid, mid, temb);
    l.resnet("mid_block.resnets.1", mid, mid, temb);
    l.norm("conv_norm_out", ch[0]);
    l.conv("conv_out", ch[0], c.out_channels, 3);
    l.specs
}

pub fn parameter_count(c: &UNetConfig) -> usize {
    parameter_specs(c).iter().map(ParamSpec::numel).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar10_has_the_published_parameter_count() {
        assert_eq!(parameter_count(&UNetConfig::cifar10()), 35_746_307);
    }
}
