//! The CUDA backend's operands (src/backend/cuda_bf16.rs `Operand`): what decides, per layer, whether
//! a tensor that one op writes for another is stored in bf16 or in f32, and the ops that make and
//! read them where a GroupNorm is involved (`Layers::group_norm_fwd_operand`,
//! `group_norm_bwd_from`, `conv2d_fwd_to_norm`).

use super::cuda_weights::WeightBf16;
use super::{Backend, Consumer, CudaBackend, Layers, ProductInput, cuda_bf16 as bf};
use crate::cuda::group_norm::{self, GroupNormIn};
use crate::fast::bf16::Precision;
use crate::gpu::Buffer;
use crate::shapes::{Conv2dShape, GroupNormShape};
use anyhow::Result;
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
}
