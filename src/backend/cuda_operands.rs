//! The CUDA backend's operands (src/backend/cuda_bf16.rs `Operand`): what decides, per layer, whether
//! a tensor that one op writes for another is stored in bf16 or in f32, and the ops that make and
//! read them where a GroupNorm or attention's output is involved (`Layers::group_norm_fwd_operand`,
//! `group_norm_bwd_from`, `conv2d_fwd_to_norm`, `attention_fwd_from`, `attention_bwd_from`).

use super::cuda_weights::WeightBf16;
use super::{Backend, Consumer, CudaBackend, Layers, ProductInput, cuda_bf16 as bf};
use crate::cuda::attention_bf16::attention_fwd_bf16;
use crate::cuda::group_norm::{self, GroupNormIn};
use crate::fast::bf16::Precision;
use crate::gpu::Buffer;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, LinearShape};
use anyhow::{Result, bail};
use half::bf16;

type V = Buffer<f32>;
type Pair<'a, T> = (Option<&'a T>, Option<&'a T>);

impl CudaBackend {
    pub(super) fn bf16(&self) -> bool {
        self.precision == Precision::Bf16
    }

    /// A product's weight in bf16: the kept copy, or rounded now.
    pub(super) fn weight_bf16(&self, w: &V) -> Result<WeightBf16> {
        WeightBf16::of(&self.kept, w)
    }

    /// A product's input in bf16 for its backward: the operand's rounded copy, or an f32 input
    /// (checked by `check` first) rounded now into `owned`.
    pub(super) fn bf16_input<'a>(
        x: ProductInput<'a, Self>,
        owned: &'a mut Option<Buffer<bf16>>,
        check: impl FnOnce(&V) -> Result<()>,
    ) -> Result<&'a Buffer<bf16>> {
        match x {
            ProductInput::Operand(bf::Operand::Bf16(x)) => Ok(x),
            ProductInput::F32(x) | ProductInput::Operand(bf::Operand::F32(x)) => {
                check(x)?;
                Ok(owned.insert(bf::rounded(x)?))
            }
        }
    }

    /// `Layers::group_norm_fwd_operand`: from an f32 or a bf16 input (the launcher checks every
    /// length), into bf16 where the consumer takes bf16 operands both ways, else f32.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_operand(
        &self,
        sh: &GroupNormShape,
        consumer: Consumer,
        x: ProductInput<Self>,
        (gamma, beta): Pair<V>,
        silu: bool,
        mean: &mut V,
        rstd: &mut V,
    ) -> Result<bf::Operand> {
        let to_bf16 = self.bf16() && bf::fits_both_ways(consumer);
        fn norm<X: GroupNormIn>(
            b: &CudaBackend,
            (sh, x, gamma, beta, silu): (&GroupNormShape, &Buffer<X>, Option<&V>, Option<&V>, bool),
            to_bf16: bool,
            mean: &mut V,
            rstd: &mut V,
        ) -> Result<bf::Operand> {
            if to_bf16 {
                let mut y = b.gpu.alloc::<bf16>(sh.len())?;
                group_norm::group_norm_fwd(sh, x, gamma, beta, silu, &mut y, mean, rstd)?;
                return Ok(bf::Operand::Bf16(y));
            }
            let mut y = b.alloc(sh.len())?;
            group_norm::group_norm_fwd(sh, x, gamma, beta, silu, &mut y, mean, rstd)?;
            Ok(bf::Operand::F32(y))
        }
        match x {
            ProductInput::F32(x) | ProductInput::Operand(bf::Operand::F32(x)) => {
                norm(self, (sh, x, gamma, beta, silu), to_bf16, mean, rstd)
            }
            ProductInput::Operand(bf::Operand::Bf16(x)) => norm(self, (sh, x, gamma, beta, silu), to_bf16, mean, rstd),
        }
    }

    /// `Layers::group_norm_bwd_from`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_bwd_from(
        &self,
        sh: &GroupNormShape,
        x: ProductInput<Self>,
        (gamma, beta): Pair<V>,
        (mean, rstd): (&V, &V),
        silu: bool,
        dy: &V,
        dx: &mut V,
        (dgamma, dbeta): (Option<&mut V>, Option<&mut V>),
    ) -> Result<()> {
        match x {
            ProductInput::F32(x) | ProductInput::Operand(bf::Operand::F32(x)) => {
                self.group_norm_bwd(sh, x, gamma, beta, mean, rstd, silu, dy, dx, dgamma, dbeta)
            }
            ProductInput::Operand(bf::Operand::Bf16(x)) => {
                group_norm::group_norm_bwd(sh, x, gamma, beta, mean, rstd, silu, dy, dx, dgamma, dbeta)
            }
        }
    }

    /// `Layers::conv2d_fwd_to_norm`: bf16 wherever the convolution runs on the tensor cores.
    pub(super) fn conv_to_norm(
        &self,
        sh: &Conv2dShape,
        x: &bf::Operand,
        w: &V,
        b: Option<&V>,
        emb: Option<&V>,
    ) -> Result<bf::Operand> {
        if self.bf16() && bf::conv_fwd_fits(sh) {
            let mut owned = None;
            let x = Self::bf16_input(ProductInput::Operand(x), &mut owned, |_| Ok(()))?;
            return Ok(bf::Operand::Bf16(bf::conv2d_fwd_to_bf16(sh, x, &*self.weight_bf16(w)?, b, emb)?));
        }
        let mut y = self.alloc(sh.y_len())?;
        self.conv2d_fwd_from(sh, x, w, b, emb, None, &mut y)?;
        Ok(bf::Operand::F32(y))
    }

    /// `Layers::attention_fwd_from`: bf16 output where q, k and v are bf16 and the output
    /// projection `proj` takes bf16 operands both ways.
    pub(super) fn attention_operand(
        &self,
        sh: &AttentionShape,
        proj: &LinearShape,
        qkv: [&bf::Operand; 3],
        lse: &mut V,
    ) -> Result<bf::Operand> {
        use bf::Operand::{Bf16, F32};
        match qkv {
            [Bf16(q), Bf16(k), Bf16(v)] if bf::fits_both_ways(Consumer::Linear(proj)) => {
                let mut out = self.gpu.alloc::<bf16>(sh.len())?;
                attention_fwd_bf16(sh, q, k, v, &mut out, lse)?;
                Ok(Bf16(out))
            }
            [Bf16(q), Bf16(k), Bf16(v)] => {
                let mut out = self.alloc(sh.len())?;
                attention_fwd_bf16(sh, q, k, v, &mut out, lse)?;
                Ok(F32(out))
            }
            [F32(q), F32(k), F32(v)] => {
                let mut out = self.alloc(sh.len())?;
                self.attention_fwd(sh, q, k, v, &mut out, lse)?;
                Ok(F32(out))
            }
            _ => bail!("attention_fwd: q, k and v must share a precision"),
        }
    }

    /// `Layers::attention_bwd_from`.
    pub(super) fn attention_bwd_operands(
        &self,
        sh: &AttentionShape,
        qkv: [&bf::Operand; 3],
        out: &bf::Operand,
        lse: &V,
        dout: &V,
        [dq, dk, dv]: [&mut V; 3],
    ) -> Result<()> {
        use bf::Operand::{Bf16, F32};
        match (qkv, out) {
            ([Bf16(q), Bf16(k), Bf16(v)], F32(o)) => bf::attention_bwd_rounded(sh, [q, k, v], o, lse, dout, dq, dk, dv),
            ([Bf16(q), Bf16(k), Bf16(v)], Bf16(o)) => {
                bf::attention_bwd_rounded(sh, [q, k, v], o, lse, dout, dq, dk, dv)
            }
            ([F32(q), F32(k), F32(v)], F32(o)) => self.attention_bwd(sh, q, k, v, o, lse, dout, dq, dk, dv),
            _ => bail!("attention_bwd: q, k and v must share a precision, and a bf16 output needs bf16 q, k and v"),
        }
    }
}
