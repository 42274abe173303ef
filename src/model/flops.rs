//! The UNet's FLOP count, the one every engine's benchmark divides by.

use super::blocks::{AttentionBlock, ResnetBlock};
use super::unet::UNet;

impl UNet {
    /// Multiply-adds of one forward pass for one image: every convolution, linear layer and the
    /// two attention products (QK^T and PV). Norms and element-wise ops are left out (a few
    /// percent). The same count serves every engine, so FLOP/s compare like with like.
    pub fn forward_macs(&self) -> u64 {
        let c = &self.config;
        let (mut r, mut macs) = (c.sample_size as u64, 0u64);
        let conv = |r: u64, cin: usize, cout: usize, k: u64| r * r * cin as u64 * cout as u64 * k * k;
        let resnet = |r: u64, b: &ResnetBlock| {
            conv(r, b.cin, b.cout, 3)
                + conv(r, b.cout, b.cout, 3)
                + if b.shortcut.is_some() { conv(r, b.cin, b.cout, 1) } else { 0 }
                + (c.time_embed_dim() * b.cout) as u64
        };
        let attention = |r: u64, a: &AttentionBlock| {
            let (tokens, ch) = (r * r, a.channels as u64);
            4 * tokens * ch * ch + 2 * tokens * tokens * ch
        };
        let (c0, temb) = (c.block_out_channels[0], c.time_embed_dim());
        macs += (c0 * temb + temb * temb) as u64 + conv(r, c.in_channels, c0, 3);
        for stage in &self.down {
            for (j, b) in stage.resnets.iter().enumerate() {
                macs += resnet(r, b) + stage.attentions.get(j).map_or(0, |a| attention(r, a));
            }
            if stage.resample.is_some() {
                let ch = stage.resnets.last().map_or(c0, |b| b.cout);
                r = r.div_ceil(2);
                macs += conv(r, ch, ch, 3);
            }
        }
        macs += resnet(r, &self.mid_resnets[0]) + resnet(r, &self.mid_resnets[1]);
        macs += self.mid_attention.as_ref().map_or(0, |a| attention(r, a));
        for stage in &self.up {
            for (j, b) in stage.resnets.iter().enumerate() {
                macs += resnet(r, b) + stage.attentions.get(j).map_or(0, |a| attention(r, a));
            }
            if stage.resample.is_some() {
                let ch = stage.resnets.last().map_or(c0, |b| b.cout);
                r *= 2;
                macs += conv(r, ch, ch, 3);
            }
        }
        macs + conv(r, c0, c.out_channels, 3)
    }
}
