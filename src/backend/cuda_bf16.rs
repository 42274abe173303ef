//! The CUDA backend at `--precision bf16` (issue #17): convolutions, linears and attention run on
//! the tensor cores with bf16 operands (nearest even) and f32 accumulation. An activation is
//! rounded once: by the kernel that writes it where that kernel knows its reader (a GroupNorm
//! feeding a product, the q/k/v projections feeding attention: `Operand`), else by one pass here
//! (a dy once for both of its backward products); a weight once per optimizer step where the
//! trainer or sampler keeps a copy (src/backend/cuda_weights.rs), else by a pass at each use, so
//! the functions here take weights already in bf16. The residual stream is bf16 too
//! (src/backend/cuda_stream.rs); the model's output, the master weights and all gradients stay
//! f32. This is torch.autocast's split:
//! products in bf16, sums and statistics (GroupNorm, softmax, the loss, the optimizer) in f32,
//! and no loss scaling (bf16 has f32's exponent range).
//!
//! The kernels read 16-byte rows of channels, so a layer whose channel count is not a multiple of
//! 8 (the UNet's 3-channel input and output convolutions) keeps the f32 kernel: the `*_fits`
//! tests below pick per layer, by shape alone.

use crate::cuda::conv_bf16::{self, ConvOut};
use crate::cuda::{attention_bf16, elementwise, linear};
use crate::gpu::Buffer;
use crate::shapes::{AttentionShape, Conv2dShape, LinearShape};
use anyhow::Result;
use half::bf16;

type V = Buffer<f32>;

/// `x` rounded to bf16 in a new device buffer.
pub(super) fn rounded(x: &V) -> Result<Buffer<bf16>> {
    let mut y = x.gpu().alloc::<bf16>(x.len())?;
    elementwise::round_bf16_f32(x, &mut y)?;
    Ok(y)
}

fn eights(dims: &[usize]) -> bool {
    dims.iter().all(|d| d.is_multiple_of(8))
}

pub fn conv_fwd_fits(s: &Conv2dShape) -> bool {
    eights(&[s.in_c])
}
pub fn conv_bwd_fits(s: &Conv2dShape) -> bool {
    eights(&[s.in_c, s.out_c])
}
pub fn linear_fwd_fits(s: &LinearShape) -> bool {
    eights(&[s.in_features])
}
pub fn linear_bwd_fits(s: &LinearShape) -> bool {
    eights(&[s.in_features, s.out_features])
}
pub fn attention_fits(s: &AttentionShape) -> bool {
    eights(&[s.head_dim]) && s.head_dim <= attention_bf16::MAX_HEAD_DIM
}

/// Whether `consumer` takes bf16 operands forward and backward: what an operand made for it may be.
pub fn fits_both_ways(consumer: super::Consumer) -> bool {
    match consumer {
        super::Consumer::Conv(c) => conv_fwd_fits(c) && conv_bwd_fits(c),
        super::Consumer::Linear(l) => linear_fwd_fits(l) && linear_bwd_fits(l),
    }
}

/// A GroupNorm's output for a matrix product (src/backend/layers.rs `Layers::Operand`): f32,
/// or rounded to bf16 by the GroupNorm when the product takes bf16 operands both ways (its
/// `*_fwd_fits` and `*_bwd_fits`).
pub enum Operand {
    F32(V),
    Bf16(Buffer<bf16>),
}

// Each product from an f32 input rounds it and calls the version that takes it rounded (what a
// GroupNorm that wrote bf16 calls directly), so both paths run the same kernels on the same bits.

pub fn conv2d_fwd(s: &Conv2dShape, x: &V, w: &Buffer<bf16>, b: Option<&V>, y: &mut V) -> Result<()> {
    conv2d_fwd_fused(s, x, w, b, None, None, y)
}
/// The forward with a ResnetBlock's adds in the tensor-core kernel's epilogue.
pub fn conv2d_fwd_fused(
    s: &Conv2dShape,
    x: &V,
    w: &Buffer<bf16>,
    b: Option<&V>,
    emb: Option<&V>,
    residual: Option<&V>,
    y: &mut V,
) -> Result<()> {
    conv2d_fwd_rounded(s, &rounded(x)?, w, b, emb, residual, y)
}
/// The forward from an input already rounded.
pub fn conv2d_fwd_rounded(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    w: &Buffer<bf16>,
    b: Option<&V>,
    emb: Option<&V>,
    residual: Option<&V>,
    y: &mut V,
) -> Result<()> {
    conv_bf16::conv2d_fwd_bf16(s, x, w, b, emb, ConvOut::F32 { y, residual })
}
/// A convolution that only a GroupNorm reads (a ResnetBlock's first) into a bf16 activation: the
/// epilogue's f32 sum (bias, then the time embedding) rounded once, as torch.autocast stores it.
pub fn conv2d_fwd_to_bf16(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    w: &Buffer<bf16>,
    b: Option<&V>,
    emb: Option<&V>,
) -> Result<Buffer<bf16>> {
    let mut y = w.gpu().alloc::<bf16>(s.y_len())?;
    conv_bf16::conv2d_fwd_bf16(s, x, w, b, emb, ConvOut::Bf16 { y: &mut y, residual: None })?;
    Ok(y)
}
pub fn conv2d_bwd_input(s: &Conv2dShape, dy: &V, w: &Buffer<bf16>, dx: &mut V) -> Result<()> {
    conv_bf16::conv2d_bwd_input_bf16(s, &rounded(dy)?, w, dx)
}
pub fn conv2d_bwd_weight(s: &Conv2dShape, x: &V, dy: &V, dw: &mut V, db: Option<&mut V>) -> Result<()> {
    conv2d_bwd_weight_rounded(s, &rounded(x)?, dy, dw, db)
}
/// The weight gradient from an input already rounded.
pub fn conv2d_bwd_weight_rounded(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    dy: &V,
    dw: &mut V,
    db: Option<&mut V>,
) -> Result<()> {
    conv_bf16::conv2d_bwd_weight_bf16(s, x, &rounded(dy)?, dw, db)
}
/// A convolution's whole backward with dy rounded once for both products; dx with the weight
/// that makes it.
pub fn conv2d_bwd_rounded(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    dy: &V,
    dw: &mut V,
    db: Option<&mut V>,
    dx: Option<(&mut V, &Buffer<bf16>)>,
) -> Result<()> {
    let dy = rounded(dy)?;
    conv_bf16::conv2d_bwd_weight_bf16(s, x, &dy, dw, db)?;
    dx.map_or(Ok(()), |(dx, w)| conv_bf16::conv2d_bwd_input_bf16(s, &dy, w, dx))
}
pub fn linear_fwd(s: &LinearShape, x: &V, w: &Buffer<bf16>, b: Option<&V>, y: &mut V) -> Result<()> {
    linear_fwd_rounded(s, &rounded(x)?, w, b, y)
}
/// The forward from an input already rounded.
pub fn linear_fwd_rounded(s: &LinearShape, x: &Buffer<bf16>, w: &Buffer<bf16>, b: Option<&V>, y: &mut V) -> Result<()> {
    linear::linear_fwd_bf16(s, x, w, b, y)
}
pub fn linear_bwd_input(s: &LinearShape, dy: &V, w: &Buffer<bf16>, dx: &mut V) -> Result<()> {
    linear::linear_bwd_input_bf16(s, &rounded(dy)?, w, dx)
}
pub fn linear_bwd_weight(s: &LinearShape, x: &V, dy: &V, dw: &mut V, db: Option<&mut V>) -> Result<()> {
    linear_bwd_weight_rounded(s, &rounded(x)?, dy, dw, db)
}
/// The weight gradient from an input already rounded.
pub fn linear_bwd_weight_rounded(
    s: &LinearShape,
    x: &Buffer<bf16>,
    dy: &V,
    dw: &mut V,
    db: Option<&mut V>,
) -> Result<()> {
    linear::linear_bwd_weight_bf16(s, x, &rounded(dy)?, dw, db)
}
/// A linear layer's whole backward, as `conv2d_bwd_rounded`.
pub fn linear_bwd_rounded(
    s: &LinearShape,
    x: &Buffer<bf16>,
    dy: &V,
    dw: &mut V,
    db: Option<&mut V>,
    dx: Option<(&mut V, &Buffer<bf16>)>,
) -> Result<()> {
    let dy = rounded(dy)?;
    linear::linear_bwd_weight_bf16(s, x, &dy, dw, db)?;
    dx.map_or(Ok(()), |(dx, w)| linear::linear_bwd_input_bf16(s, &dy, w, dx))
}
/// An attention block's q, k and v from one input, for attention only: each product's f32 values
/// rounded once, in the kernel's epilogue, which is what attention would round itself; the three
/// in one launch, bit for bit three launches.
pub fn linear_fwd_to_bf16_x3(
    s: &LinearShape,
    x: &Buffer<bf16>,
    w: [&Buffer<bf16>; 3],
    b: [Option<&V>; 3],
) -> Result<[Buffer<bf16>; 3]> {
    let alloc = || x.gpu().alloc::<bf16>(s.rows * s.out_features);
    let (mut q, mut k, mut v) = (alloc()?, alloc()?, alloc()?);
    linear::linear_fwd_bf16_to_bf16_x3(s, x, w, b, [&mut q, &mut k, &mut v])?;
    Ok([q, k, v])
}
pub fn attention_fwd(s: &AttentionShape, q: &V, k: &V, v: &V, out: &mut V, lse: &mut V) -> Result<()> {
    attention_bf16::attention_fwd_bf16(s, &rounded(q)?, &rounded(k)?, &rounded(v)?, out, lse)
}
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    s: &AttentionShape,
    [q, k, v, out, lse, dout]: [&V; 6],
    dq: &mut V,
    dk: &mut V,
    dv: &mut V,
) -> Result<()> {
    attention_bwd_rounded(s, [&rounded(q)?, &rounded(k)?, &rounded(v)?], out, lse, dout, dq, dk, dv)
}
/// The backward from q, k and v already rounded, and the forward's output in f32 or bf16.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_rounded<T: attention_bf16::AttentionOut>(
    s: &AttentionShape,
    [q, k, v]: [&Buffer<bf16>; 3],
    out: &Buffer<T>,
    lse: &V,
    dout: &V,
    dq: &mut V,
    dk: &mut V,
    dv: &mut V,
) -> Result<()> {
    attention_bf16::attention_bwd_bf16(s, q, k, v, out, lse, &rounded(dout)?, dq, dk, dv)
}
