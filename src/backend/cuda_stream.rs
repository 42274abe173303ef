//! The CUDA backend's residual stream (`Stream`, src/backend/stream.rs): bf16 at `--precision
//! bf16`, f32 otherwise. Every stream tensor's writer rounds its f32 value once (a convolution in
//! its epilogue, the residual add in kernels/stream_bf16.cu; the concatenation moves bits); a reader
//! with no bf16 input widens it first (exact). In the UNet's presets that is never needed
//! (their channel counts are multiples of 8) except conv_in, whose 3-channel input keeps the f32
//! kernel: its output is rounded by a pass.

use super::{Backend, CudaBackend, Layers, ProductInput, Stream, cuda_bf16 as bf};
use crate::cuda::conv_bf16::{self, ConvOut};
use crate::cuda::stream_bf16;
use crate::gpu::Buffer;
use crate::shapes::Conv2dShape;
use anyhow::{Result, bail};
use half::bf16;

type V = Buffer<f32>;

/// `x` widened to f32 in a new device buffer.
pub(super) fn widened(x: &Buffer<bf16>) -> Result<V> {
    let mut y = x.gpu().alloc::<f32>(x.len())?;
    stream_bf16::widen_bf16(x, &mut y)?;
    Ok(y)
}

/// An operand as f32: itself, or widened into `owned`.
pub(super) fn as_f32<'a>(x: &'a bf::Operand, owned: &'a mut Option<V>) -> Result<&'a V> {
    match x {
        bf::Operand::F32(x) => Ok(x),
        bf::Operand::Bf16(x) => Ok(owned.insert(widened(x)?)),
    }
}

impl Stream for CudaBackend {
    type Operand = bf::Operand;

    fn conv2d_fwd_to_stream(
        &self,
        sh: &Conv2dShape,
        x: ProductInput<Self>,
        w: &V,
        b: Option<&V>,
        residual: Option<&bf::Operand>,
    ) -> Result<bf::Operand> {
        if let (true, true, None | Some(bf::Operand::Bf16(_))) = (self.bf16(), bf::conv_fwd_fits(sh), residual) {
            let residual = match residual {
                Some(bf::Operand::Bf16(r)) => Some(r),
                _ => None,
            };
            let mut owned = None;
            let x = Self::bf16_input(x, &mut owned, |_| Ok(()))?;
            let mut y = self.gpu.alloc::<bf16>(sh.y_len())?;
            let out = ConvOut::Bf16 { y: &mut y, residual };
            conv_bf16::conv2d_fwd_bf16(sh, x, &*self.weight_bf16(w)?, b, None, out)?;
            return Ok(bf::Operand::Bf16(y));
        }
        // The f32 sum (an f32 kernel, or an f32 residual), stored as the stream.
        let (mut x_owned, mut r_owned) = (None, None);
        let x = match x {
            ProductInput::F32(x) => x,
            ProductInput::Operand(x) => as_f32(x, &mut x_owned)?,
        };
        let residual = residual.map(|r| as_f32(r, &mut r_owned)).transpose()?;
        let mut y = self.alloc(sh.y_len())?;
        self.conv2d_fwd_fused(sh, x, w, b, None, residual, &mut y)?;
        Ok(if self.bf16() { bf::Operand::Bf16(bf::rounded(&y)?) } else { bf::Operand::F32(y) })
    }

    fn add_scaled_operand(&self, x: &bf::Operand, h: &V, divisor: f32) -> Result<bf::Operand> {
        match x {
            bf::Operand::Bf16(x) => {
                let mut y = self.gpu.alloc::<bf16>(x.len())?;
                stream_bf16::add_scaled_to_bf16_bf16(x, h, divisor, &mut y)?;
                Ok(bf::Operand::Bf16(y))
            }
            bf::Operand::F32(x) => {
                let mut y = self.alloc(x.len())?;
                self.add_scaled(x, h, divisor, &mut y)?;
                Ok(bf::Operand::F32(y))
            }
        }
    }

    fn concat_channels_operand(
        &self,
        rows: usize,
        c1: usize,
        c2: usize,
        a: &bf::Operand,
        b: &bf::Operand,
    ) -> Result<bf::Operand> {
        match (a, b) {
            (bf::Operand::Bf16(a), bf::Operand::Bf16(b)) => {
                let mut y = self.gpu.alloc::<bf16>(rows * (c1 + c2))?;
                stream_bf16::concat_channels_bf16(rows, c1, c2, a, b, &mut y)?;
                Ok(bf::Operand::Bf16(y))
            }
            (bf::Operand::F32(a), bf::Operand::F32(b)) => {
                let mut y = self.alloc(rows * (c1 + c2))?;
                self.concat_channels(rows, c1, c2, a, b, &mut y)?;
                Ok(bf::Operand::F32(y))
            }
            _ => bail!("concat_channels: a and b must share a precision"),
        }
    }
}
