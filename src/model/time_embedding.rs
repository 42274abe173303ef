//! diffusers' TimestepEmbedding over the sinusoidal embedding of t, forward and backward.

use super::blocks::{Ctx, Grads};
use super::weights::Pair;
use crate::backend::{Consumer, Layers, ProductInput};
use crate::shapes::LinearShape;
use anyhow::Result;

/// diffusers' time embedding: the sinusoidal embedding of t (TimestepEmbedding's input, over
/// `channels` = block_out_channels[0]) -> linear_1 -> SiLU -> linear_2; every resnet then adds a
/// projection of SiLU of the result, which the block also returns.
#[derive(Clone, Debug)]
pub struct TimeEmbedding {
    pub channels: usize,
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub linear_1: Pair,
    pub linear_2: Pair,
}

/// The time embedding's activations: `silu_emb` is what the resnets read; the rest is for the
/// backward.
pub struct TimeEmbeddingSaved<Buf, In> {
    sinusoidal: Buf,
    h: Buf,
    a: Buf,
    emb: Buf,
    pub silu_emb: In,
}

impl TimeEmbedding {
    fn shapes(&self, batch: usize) -> (LinearShape, LinearShape) {
        (
            LinearShape { rows: batch, in_features: self.channels, out_features: self.dim },
            LinearShape { rows: batch, in_features: self.dim, out_features: self.dim },
        )
    }

    /// `t`: one float timestep per image; `couts`: the output channels of every resnet's
    /// projection, which all read silu(emb).
    pub fn forward<B: Layers>(
        &self,
        cx: &Ctx<B>,
        t: &B::Buf,
        batch: usize,
        couts: &[usize],
    ) -> Result<TimeEmbeddingSaved<B::Buf, B::Operand>> {
        let b = cx.b;
        let (l1, l2) = self.shapes(batch);
        let mut sinusoidal = cx.alloc(batch * self.channels)?;
        b.timestep_embedding(t, self.channels, self.flip_sin_to_cos, self.freq_shift, &mut sinusoidal)?;
        let n = batch * self.dim;
        let (mut h, mut a, mut emb) = (cx.alloc(n)?, cx.alloc(n)?, cx.alloc(n)?);
        b.linear_fwd(&l1, &sinusoidal, cx.p(self.linear_1.w), Some(cx.p(self.linear_1.b)), &mut h)?;
        b.silu_fwd(&h, &mut a)?;
        b.linear_fwd(&l2, &a, cx.p(self.linear_2.w), Some(cx.p(self.linear_2.b)), &mut emb)?;
        let projections: Vec<LinearShape> =
            couts.iter().map(|&c| LinearShape { rows: batch, in_features: self.dim, out_features: c }).collect();
        let consumers: Vec<Consumer> = projections.iter().map(Consumer::Linear).collect();
        let silu_emb = b.silu_fwd_operand(&emb, &consumers)?;
        Ok(TimeEmbeddingSaved { sinusoidal, h, a, emb, silu_emb })
    }

    /// From d silu(emb), which every resnet's backward added into `d_silu_emb`: the gradients of
    /// both linear layers (the timesteps get none).
    pub fn backward<B: Layers>(
        &self,
        cx: &Ctx<B>,
        g: &mut Grads<B>,
        saved: &TimeEmbeddingSaved<B::Buf, B::Operand>,
        d_silu_emb: &B::Buf,
        batch: usize,
    ) -> Result<()> {
        let b = cx.b;
        let (l1, l2) = self.shapes(batch);
        let n = batch * self.dim;
        let mut demb = cx.alloc(n)?;
        b.silu_bwd(&saved.emb, d_silu_emb, &mut demb)?;
        let (dw, db) = g.pair(self.linear_2);
        let mut da = cx.alloc(n)?;
        let w = cx.p(self.linear_2.w);
        b.linear_bwd(&l2, ProductInput::F32(&saved.a), &demb, w, dw, Some(db), Some(&mut da))?;
        let mut dh = cx.alloc(n)?;
        b.silu_bwd(&saved.h, &da, &mut dh)?;
        let (dw, db) = g.pair(self.linear_1);
        b.linear_bwd_weight(&l1, &saved.sinusoidal, &dh, dw, Some(db))
    }
}
