//! The tensors that one op writes for another in a backend's own precision (`Stream::Operand`),
//! and the ops of the UNet's residual stream on them: every block's output, the skip connections
//! and their concatenation, the downsamplers' outputs, conv_in's. Where the backend runs products
//! on bf16 operands (CUDA at `--precision bf16`) the stream is stored in bf16, as torch.autocast
//! stores a convolution's output: each value is summed in f32 and rounded once when stored, and
//! every reader widens it (exactly) or feeds it to its products as it is. Elsewhere an operand is
//! the f32 buffer and these are the f32 ops, to the same bits as before.

use super::{Backend, ProductInput};
use crate::shapes::Conv2dShape;
use anyhow::Result;

pub trait Stream: Backend {
    /// A matrix product's input as a GroupNorm(+SiLU) makes it (a ResnetBlock's convolutions, an
    /// attention block's q/k/v projections), or as those projections make attention's, or a
    /// tensor of the residual stream: the f32 activation, or, where the backend runs products on
    /// bf16 operands (CUDA at `--precision bf16`), that activation rounded to bf16 by the kernel
    /// that wrote it. For a product's input the rounded copy is what the product would make
    /// itself, so the bits are the same; it saves the rounding passes of the forward and of the
    /// weight gradient (one per reader), and halves what the tape keeps.
    type Operand;

    /// y = conv(x, w) + b + residual (each add an f32 rounding, in that order, as
    /// `conv2d_fwd_fused`), stored as the residual stream is: a ResnetBlock's second convolution
    /// with its residual, its shortcut, a downsampler, conv_in. `x` is an f32 activation (the
    /// model's input) or an operand.
    fn conv2d_fwd_to_stream(
        &self,
        s: &Conv2dShape,
        x: ProductInput<Self>,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        residual: Option<&Self::Operand>,
    ) -> Result<Self::Operand>;
    /// y = (x + h) / divisor (as `add_scaled`), stored as the stream: an attention block's
    /// residual (h its output projection), a ResnetBlock's when its output scale is not 1.
    fn add_scaled_operand(&self, x: &Self::Operand, h: &Self::Buf, divisor: f32) -> Result<Self::Operand>;
    /// `concat_channels` of two stream tensors (an up stage's input and its skip), stored as the
    /// stream.
    fn concat_channels_operand(
        &self,
        rows: usize,
        c1: usize,
        c2: usize,
        a: &Self::Operand,
        b: &Self::Operand,
    ) -> Result<Self::Operand>;
}
