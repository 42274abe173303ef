//! The composite layer ops of [`Layers`] as the separate ops they stand for: the default
//! implementations, and the reference the fused versions are tested against bit for bit.

use super::{Layers, ProductInput};
use crate::shapes::{Conv2dShape, ImageShape, LinearShape};
use anyhow::Result;

/// `Layers::conv2d_fwd_fused` as separate ops: the convolution, then add_channel_bias(emb), then
/// add_scaled(residual, _, 1) (exact division by 1, and IEEE addition commutes, so the bits are the
/// fused epilogue's).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fwd_then_adds<B: Layers + ?Sized>(
    b: &B,
    s: &Conv2dShape,
    x: &B::Buf,
    w: &B::Buf,
    bias: Option<&B::Buf>,
    emb: Option<&B::Buf>,
    residual: Option<&B::Buf>,
    y: &mut B::Buf,
) -> Result<()> {
    b.conv2d_fwd(s, x, w, bias, y)?;
    let img = ImageShape { batch: s.batch, h: s.out_h(), w: s.out_w(), c: s.out_c };
    if let Some(e) = emb {
        let mut t = b.alloc(img.len())?;
        b.add_channel_bias(&img, y, e, &mut t)?;
        std::mem::swap(y, &mut t);
    }
    if let Some(r) = residual {
        let mut t = b.alloc(img.len())?;
        b.add_scaled(r, y, 1.0, &mut t)?;
        std::mem::swap(y, &mut t);
    }
    Ok(())
}

/// `Layers::conv2d_bwd` as its two products.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bwd_separately<B: Layers + ?Sized>(
    b: &B,
    s: &Conv2dShape,
    x: ProductInput<B>,
    dy: &B::Buf,
    w: &B::Buf,
    dw: &mut B::Buf,
    db: Option<&mut B::Buf>,
    dx: Option<&mut B::Buf>,
) -> Result<()> {
    match x {
        ProductInput::F32(x) => b.conv2d_bwd_weight(s, x, dy, dw, db)?,
        ProductInput::Operand(x) => b.conv2d_bwd_weight_from(s, x, dy, dw, db)?,
    }
    dx.map_or(Ok(()), |dx| b.conv2d_bwd_input(s, dy, w, dx))
}

/// `Layers::linear_bwd` as its two products.
#[allow(clippy::too_many_arguments)]
pub fn linear_bwd_separately<B: Layers + ?Sized>(
    b: &B,
    s: &LinearShape,
    x: ProductInput<B>,
    dy: &B::Buf,
    w: &B::Buf,
    dw: &mut B::Buf,
    db: Option<&mut B::Buf>,
    dx: Option<&mut B::Buf>,
) -> Result<()> {
    match x {
        ProductInput::F32(x) => b.linear_bwd_weight(s, x, dy, dw, db)?,
        ProductInput::Operand(x) => b.linear_bwd_weight_from(s, x, dy, dw, db)?,
    }
    dx.map_or(Ok(()), |dx| b.linear_bwd_input(s, dy, w, dx))
}
