//! The layer ops of the UNet, forward and backward, on top of [`Backend`]. Parameter gradients
//! are written (not accumulated); every reduction is deterministic. Shapes and layouts:
//! src/shapes.rs.

use super::Stream;
use super::layers_separate::{conv2d_bwd_separately, conv2d_fwd_then_adds, linear_bwd_separately};
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::Result;

/// What reads a GroupNorm's output (`Layers::group_norm_fwd_operand`).
#[derive(Clone, Copy, Debug)]
pub enum Consumer<'a> {
    Conv(&'a Conv2dShape),
    Linear(&'a LinearShape),
}

/// A matrix product's input as its backward takes it: an f32 activation (the model's input), or
/// an operand: what a GroupNorm made for it (`Layers::group_norm_fwd_operand`) or a tensor of the
/// residual stream (`Stream`). Also a GroupNorm's input: a stream tensor, or a convolution's
/// output made for it (`Layers::conv2d_fwd_to_norm`).
pub enum ProductInput<'a, L: Stream + ?Sized> {
    F32(&'a L::Buf),
    Operand(&'a L::Operand),
}

/// The layer ops; their operands and the residual stream's ops are in [`Stream`].
pub trait Layers: Stream {
    /// Declares `weights` as weights that only `adamw_step` writes from now on (a trainer's or a
    /// sampler's parameters), so a backend whose products read weights in another precision may
    /// keep them converted, updated by the optimizer in the same pass, instead of converting at
    /// each use (CUDA at `--precision bf16`: src/backend/cuda_weights.rs). Calling it again for
    /// the same buffers costs a lookup. Elsewhere nothing.
    fn keep_product_weights(&self, _weights: &[&Self::Buf]) -> Result<()> {
        Ok(())
    }

    /// GroupNorm(+SiLU) (as `group_norm_fwd`) into the input of `consumer`, from an f32
    /// activation or from a convolution's output made for it (`conv2d_fwd_to_norm`).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_fwd_operand(
        &self,
        s: &GroupNormShape,
        consumer: Consumer,
        x: ProductInput<Self>,
        gamma: Option<&Self::Buf>,
        beta: Option<&Self::Buf>,
        silu: bool,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
    ) -> Result<Self::Operand>;
    /// `group_norm_bwd` from either input `group_norm_fwd_operand` takes.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_bwd_from(
        &self,
        s: &GroupNormShape,
        x: ProductInput<Self>,
        gamma: Option<&Self::Buf>,
        beta: Option<&Self::Buf>,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        silu: bool,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        dgamma: Option<&mut Self::Buf>,
        dbeta: Option<&mut Self::Buf>,
    ) -> Result<()>;
    /// `conv2d_fwd_fused` without a residual, into the input of a GroupNorm (a ResnetBlock's
    /// first convolution plus the time embedding, which only norm2 reads): f32, or, where the
    /// convolution runs on bf16 operands (CUDA at `--precision bf16`), its f32 sum rounded once to
    /// bf16 in the epilogue, as torch.autocast stores a convolution's output. The GroupNorm's
    /// passes and its backward then read half the bytes, and the tape keeps half.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_fwd_to_norm(
        &self,
        s: &Conv2dShape,
        x: &Self::Operand,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        emb: Option<&Self::Buf>,
    ) -> Result<Self::Operand>;
    /// `upsample_nearest2x_fwd` of a stream tensor into the input of `consumer` (an upsampler's
    /// convolution, its only reader): bf16 where the consumer takes bf16 operands both ways (from
    /// an f32 input each value rounded once, what the convolution would round itself, bit for bit:
    /// no rounding pass in its forward or weight gradient, and the tape keeps half), else f32.
    /// `s` is the input's shape.
    fn upsample_nearest2x_fwd_operand(
        &self,
        s: &ImageShape,
        x: &Self::Operand,
        consumer: Consumer,
    ) -> Result<Self::Operand>;
    /// SiLU (as `silu_fwd`) into the input of every one of `consumers`: the time embedding, which
    /// every ResnetBlock's projection reads. Rounded to bf16 once here where all of them take bf16
    /// operands both ways, instead of once per consumer per pass.
    fn silu_fwd_operand(&self, x: &Self::Buf, consumers: &[Consumer]) -> Result<Self::Operand>;
    /// `conv2d_fwd_fused` from such an input.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_fwd_from(
        &self,
        s: &Conv2dShape,
        x: &Self::Operand,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        emb: Option<&Self::Buf>,
        residual: Option<&Self::Buf>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// `conv2d_bwd_weight` from such an input.
    fn conv2d_bwd_weight_from(
        &self,
        s: &Conv2dShape,
        x: &Self::Operand,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;
    /// `linear_fwd` from such an input.
    fn linear_fwd_from(
        &self,
        s: &LinearShape,
        x: &Self::Operand,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// `linear_bwd_weight` from such an input.
    fn linear_bwd_weight_from(
        &self,
        s: &LinearShape,
        x: &Self::Operand,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// An attention block's q, k and v projections of one input (each as `linear_fwd_from`, with
    /// the weights `w` and biases `b` in that order) into the operands attention reads: bf16 where
    /// its kernels take bf16 (CUDA at `--precision bf16`: rounded once in the projections'
    /// epilogue, the bits attention would round itself, and half the tape; the three in one launch,
    /// which at batch 1 are 4-16 blocks each), else f32.
    fn linear_fwd_to_attention(
        &self,
        s: &LinearShape,
        attn: &AttentionShape,
        x: &Self::Operand,
        w: [&Self::Buf; 3],
        b: [Option<&Self::Buf>; 3],
    ) -> Result<[Self::Operand; 3]>;
    /// `attention_fwd` from such q, k and v, its output as the input of the output projection
    /// `proj`: bf16 where attention runs on bf16 operands and `proj` takes them both ways (the f32
    /// value rounded once in the store, what the projection would round itself, bit for bit; the
    /// backward's D = rowsum(dO * O) then reads it too), else f32. Writes lse.
    fn attention_fwd_from(
        &self,
        s: &AttentionShape,
        proj: &LinearShape,
        qkv: [&Self::Operand; 3],
        lse: &mut Self::Buf,
    ) -> Result<Self::Operand>;
    /// `attention_bwd` from such q, k, v and output.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd_from(
        &self,
        s: &AttentionShape,
        qkv: [&Self::Operand; 3],
        out: &Self::Operand,
        lse: &Self::Buf,
        dout: &Self::Buf,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
    ) -> Result<()>;

    /// A convolution's whole backward: dw (and db) from x and dy, then dx when asked. One call, so
    /// that a backend whose products read dy and w rounded (CUDA at bf16) rounds each once for
    /// both products; elsewhere `conv2d_bwd_weight(_from)` then `conv2d_bwd_input`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_bwd(
        &self,
        s: &Conv2dShape,
        x: ProductInput<Self>,
        dy: &Self::Buf,
        w: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()> {
        conv2d_bwd_separately(self, s, x, dy, w, dw, db, dx)
    }
    /// A linear layer's whole backward, as `conv2d_bwd`.
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(
        &self,
        s: &LinearShape,
        x: ProductInput<Self>,
        dy: &Self::Buf,
        w: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()> {
        linear_bwd_separately(self, s, x, dy, w, dw, db, dx)
    }

    /// y = conv(x, w) + b. x NHWC, w OHWI, y NHWC.
    fn conv2d_fwd(
        &self,
        s: &Conv2dShape,
        x: &Self::Buf,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// y = conv(x, w) + b + emb[image] + residual, each add an f32 rounding in that order: a
    /// ResnetBlock's time-embedding add (`emb` [batch, out_c]) and residual add (`residual` y's
    /// shape) fused into the convolution's epilogue where the backend has one (CUDA's bf16
    /// tensor-core kernel); elsewhere the same adds as separate ops, to the same bits.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_fwd_fused(
        &self,
        s: &Conv2dShape,
        x: &Self::Buf,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        emb: Option<&Self::Buf>,
        residual: Option<&Self::Buf>,
        y: &mut Self::Buf,
    ) -> Result<()> {
        conv2d_fwd_then_adds(self, s, x, w, b, emb, residual, y)
    }
    /// dx from dy.
    fn conv2d_bwd_input(&self, s: &Conv2dShape, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// dw (and db) from x and dy, summed over the batch in a fixed order.
    fn conv2d_bwd_weight(
        &self,
        s: &Conv2dShape,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// y = GroupNorm(x) * gamma + beta, then SiLU if `silu`; saves mean and 1/std per (image, group).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_fwd(
        &self,
        s: &GroupNormShape,
        x: &Self::Buf,
        gamma: Option<&Self::Buf>,
        beta: Option<&Self::Buf>,
        silu: bool,
        y: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
    ) -> Result<()>;
    /// dx, dgamma, dbeta from dy and the saved statistics (recomputing the pre-SiLU output if fused).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_bwd(
        &self,
        s: &GroupNormShape,
        x: &Self::Buf,
        gamma: Option<&Self::Buf>,
        beta: Option<&Self::Buf>,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        silu: bool,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        dgamma: Option<&mut Self::Buf>,
        dbeta: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// y = x W^T + b.
    fn linear_fwd(
        &self,
        s: &LinearShape,
        x: &Self::Buf,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// dx = dy W.
    fn linear_bwd_input(&self, s: &LinearShape, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// dW = dy^T x, db = column sums of dy (fixed-order sums over the rows).
    fn linear_bwd_weight(
        &self,
        s: &LinearShape,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// y = (a + b) / divisor: residual connections (diffusers' output_scale_factor and
    /// rescale_output_factor divide the sum).
    fn add_scaled(&self, a: &Self::Buf, b: &Self::Buf, divisor: f32, y: &mut Self::Buf) -> Result<()>;
    /// y = x / divisor: the backward of add_scaled for either input.
    fn div_scalar(&self, x: &Self::Buf, divisor: f32, y: &mut Self::Buf) -> Result<()>;
    /// y[n, p, c] = x[n, p, c] + v[n, c]: a per-image channel vector (the time embedding) added
    /// at every pixel.
    fn add_channel_bias(&self, s: &ImageShape, x: &Self::Buf, v: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dv[n, c] = sum over pixels of dy[n, p, c]: the backward of add_channel_bias for v.
    fn channel_sum(&self, s: &ImageShape, dy: &Self::Buf, dv: &mut Self::Buf) -> Result<()>;
    /// Nearest-neighbour 2x upsampling; `s` is the input's shape.
    fn upsample_nearest2x_fwd(&self, s: &ImageShape, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx = sum of dy over each 2x2 block.
    fn upsample_nearest2x_bwd(&self, s: &ImageShape, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// y[r, :] = [a[r, :c1], b[r, :c2]] for each of `rows` pixels (skip connections).
    fn concat_channels(
        &self,
        rows: usize,
        c1: usize,
        c2: usize,
        a: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// The backward of concat_channels: split dy into da and db.
    #[allow(clippy::too_many_arguments)]
    fn split_channels(
        &self,
        rows: usize,
        c1: usize,
        c2: usize,
        dy: &Self::Buf,
        da: &mut Self::Buf,
        db: &mut Self::Buf,
    ) -> Result<()>;
    /// diffusers' get_timestep_embedding: y[n, dim] from timesteps t[n] (as floats).
    fn timestep_embedding(
        &self,
        t: &Self::Buf,
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
        y: &mut Self::Buf,
    ) -> Result<()>;

    /// out = softmax(q k^T / sqrt(head_dim)) v per (image, head); saves the log-sum-exp of each
    /// score row for the backward. Never materialises the score matrix on the GPU.
    fn attention_fwd(
        &self,
        s: &AttentionShape,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
    ) -> Result<()>;
    /// dq, dk, dv from dout, recomputing the scores from q, k and the saved log-sum-exp.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        s: &AttentionShape,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        dout: &Self::Buf,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
    ) -> Result<()>;
}
