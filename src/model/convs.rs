//! Every convolution one forward pass of a UNet runs, as distinct shapes with their counts: what
//! the convolution benchmarks time (benches/conv_table.rs, scripts/gpu-check's `convs` stage), so
//! they time the model's own shapes rather than made-up ones.

use super::config::UNetConfig;
use super::structure::{ResnetDesc, describe};
use crate::shapes::Conv2dShape;

/// One distinct convolution shape: the first layer that has it (its diffusers name) and how many
/// layers of one forward pass have it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvUse {
    pub first: String,
    pub shape: Conv2dShape,
    pub count: usize,
}

/// The distinct convolution shapes of one forward pass at `batch`, in the order the forward first
/// runs them (the walk of src/model/unet.rs: conv_in, the down stages with their downsamplers, the
/// mid block, the up stages with their upsamplers' convs after the 2x upsampling, conv_out).
pub fn conv_shapes(c: &UNetConfig, batch: usize) -> Vec<ConvUse> {
    let st = describe(c);
    let mut all: Vec<(String, Conv2dShape)> = Vec::new();
    let mut r = c.sample_size;
    let resnet = |all: &mut Vec<(String, Conv2dShape)>, b: &ResnetDesc, r: usize| {
        all.push((format!("{}.conv1", b.prefix), Conv2dShape::conv3x3(batch, r, r, b.cin, b.cout)));
        all.push((format!("{}.conv2", b.prefix), Conv2dShape::conv3x3(batch, r, r, b.cout, b.cout)));
        if b.cin != b.cout {
            all.push((format!("{}.conv_shortcut", b.prefix), Conv2dShape::conv1x1(batch, r, r, b.cin, b.cout)));
        }
    };
    let c0 = c.block_out_channels[0];
    all.push(("conv_in".into(), Conv2dShape::conv3x3(batch, r, r, c.in_channels, c0)));
    for stage in &st.down {
        stage.resnets.iter().for_each(|b| resnet(&mut all, b, r));
        if let Some((name, ch)) = &stage.resample {
            let s = Conv2dShape::downsample(batch, r, r, *ch, *ch, c.downsample_padding);
            all.push((name.clone(), s));
            r = s.out_h();
        }
    }
    st.mid_resnets.iter().for_each(|b| resnet(&mut all, b, r));
    for stage in &st.up {
        stage.resnets.iter().for_each(|b| resnet(&mut all, b, r));
        if let Some((name, ch)) = &stage.resample {
            r *= 2;
            all.push((name.clone(), Conv2dShape::conv3x3(batch, r, r, *ch, *ch)));
        }
    }
    all.push(("conv_out".into(), Conv2dShape::conv3x3(batch, r, r, c0, c.out_channels)));
    let mut distinct: Vec<ConvUse> = Vec::new();
    for (first, shape) in all {
        match distinct.iter_mut().find(|u| u.shape == shape) {
            Some(u) => u.count += 1,
            None => distinct.push(ConvUse { first, shape, count: 1 }),
        }
    }
    distinct
}

/// A short name for a shape that both benchmark sides print, so their lines join:
/// `3x3s1_32x32_128-256` (kernel, stride, input map, channels in and out), with the padding
/// appended as `_p<top><bottom><left><right>` when it is not the same on every side.
pub fn shape_key(s: &Conv2dShape) -> String {
    let p = s.pad;
    let pad = if p.top == p.bottom && p.top == p.left && p.top == p.right {
        String::new()
    } else {
        format!("_p{}{}{}{}", p.top, p.bottom, p.left, p.right)
    };
    format!("{k}x{k}s{}_{}x{}_{}-{}{pad}", s.stride, s.in_h, s.in_w, s.in_c, s.out_c, k = s.kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cifar10 UNet's 65 convolutions per forward, each counted once under a distinct key.
    #[test]
    fn cifar10_conv_shapes_cover_every_conv_once() {
        let c = UNetConfig::cifar10();
        let uses = conv_shapes(&c, 1);
        let total: usize = uses.iter().map(|u| u.count).sum();
        // conv_in, conv_out; down: 8 resnets x 2 convs + 1 shortcut + 3 downsamplers; mid: 2 x 2;
        // up: 12 resnets x 2 convs + 12 shortcuts (every up resnet concatenates) + 3 upsamplers.
        assert_eq!(total, 2 + (16 + 1 + 3) + 4 + (24 + 12 + 3));
        let keys: Vec<String> = uses.iter().map(|u| shape_key(&u.shape)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "keys are distinct: {keys:?}");
        assert_eq!(keys[0], "3x3s1_32x32_3-128");
        assert!(keys.contains(&"3x3s2_32x32_128-128_p0101".to_string()), "{keys:?}");
        assert_eq!(conv_shapes(&c, 16)[3].shape.batch, 16);
    }
}
