//! The UNet's parameters: names and shapes exactly as diffusers' UNet2DModel state dict, in its
//! order, so checkpoints move between the two unchanged. Shapes here are PyTorch's (convolution
//! weights OIHW); the engine stores convolution weights OHWI and converts at load and save.

use super::config::UNetConfig;
use super::structure::describe;

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

/// Every parameter of the model, in diffusers' state-dict order (module registration order:
/// within a stage the attentions come before the resnets, and mid_block after up_blocks, since
/// UNet2DModel assigns it None first).
pub fn parameter_specs(c: &UNetConfig) -> Vec<ParamSpec> {
    let mut l = Lister { specs: Vec::new() };
    let s = describe(c);
    let (c0, temb) = (c.block_out_channels[0], c.time_embed_dim());
    l.conv("conv_in", c.in_channels, c0, 3);
    l.linear("time_embedding.linear_1", c0, temb);
    l.linear("time_embedding.linear_2", temb, temb);
    for stage in s.down.iter().chain(&s.up) {
        for a in &stage.attentions {
            l.attention(&a.prefix, a.channels);
        }
        for r in &stage.resnets {
            l.resnet(&r.prefix, r.cin, r.cout, temb);
        }
        if let Some((name, ch)) = &stage.resample {
            l.conv(name, *ch, *ch, 3);
        }
    }
    if let Some(a) = &s.mid_attention {
        l.attention(&a.prefix, a.channels);
    }
    for r in &s.mid_resnets {
        l.resnet(&r.prefix, r.cin, r.cout, temb);
    }
    l.norm("conv_norm_out", c0);
    l.conv("conv_out", c0, c.out_channels, 3);
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
