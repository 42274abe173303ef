//! The CUDA backend's layer ops: the shared argument checks (src/backend/checks.rs), then the
//! launchers in src/cuda.

use super::{Backend, Consumer, CudaBackend, Layers, ProductInput, checks, cuda_bf16 as bf, layers_separate};
use crate::cuda::{attention, conv, elementwise, embedding, group_norm, linear, resample};
use crate::gpu::Buffer;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::Result;

type V = Buffer<f32>;

impl Layers for CudaBackend {
    fn keep_product_weights(&self, weights: &[&V]) -> Result<()> {
        if self.bf16() { self.kept.keep(weights) } else { Ok(()) }
    }

    fn group_norm_fwd_operand(
        &self,
        sh: &GroupNormShape,
        consumer: Consumer,
        x: ProductInput<Self>,
        gamma: Option<&V>,
        beta: Option<&V>,
        silu: bool,
        mean: &mut V,
        rstd: &mut V,
    ) -> Result<bf::Operand> {
        self.norm_operand(sh, consumer, x, (gamma, beta), silu, mean, rstd)
    }
    fn group_norm_bwd_from(
        &self,
        sh: &GroupNormShape,
        x: ProductInput<Self>,
        gamma: Option<&V>,
        beta: Option<&V>,
        mean: &V,
        rstd: &V,
        silu: bool,
        dy: &V,
        dx: &mut V,
        dgamma: Option<&mut V>,
        dbeta: Option<&mut V>,
    ) -> Result<()> {
        self.norm_bwd_from(sh, x, (gamma, beta), (mean, rstd), silu, dy, dx, (dgamma, dbeta))
    }
    fn conv2d_fwd_to_norm(
        &self,
        sh: &Conv2dShape,
        x: &bf::Operand,
        w: &V,
        b: Option<&V>,
        emb: Option<&V>,
    ) -> Result<bf::Operand> {
        self.conv_to_norm(sh, x, w, b, emb)
    }
    fn upsample_nearest2x_fwd_operand(
        &self,
        sh: &ImageShape,
        x: &bf::Operand,
        consumer: Consumer,
    ) -> Result<bf::Operand> {
        let to_bf16 = self.bf16() && bf::fits_both_ways(consumer);
        match x {
            bf::Operand::Bf16(x) if to_bf16 => {
                let mut y = self.gpu.alloc(4 * sh.len())?;
                resample::upsample_nearest2x_fwd_bf16(sh, x, &mut y)?;
                Ok(bf::Operand::Bf16(y))
            }
            bf::Operand::F32(x) if to_bf16 => {
                let mut y = self.gpu.alloc(4 * sh.len())?;
                resample::upsample_nearest2x_fwd_to_bf16_f32(sh, x, &mut y)?;
                Ok(bf::Operand::Bf16(y))
            }
            _ => {
                let mut owned = None;
                let x = super::cuda_stream::as_f32(x, &mut owned)?;
                let mut y = self.alloc(4 * sh.len())?;
                self.upsample_nearest2x_fwd(sh, x, &mut y)?;
                Ok(bf::Operand::F32(y))
            }
        }
    }
    fn silu_fwd_operand(&self, x: &V, consumers: &[Consumer]) -> Result<bf::Operand> {
        let mut y = self.alloc(x.len())?;
        self.silu_fwd(x, &mut y)?;
        if self.bf16() && consumers.iter().all(|c| bf::fits_both_ways(*c)) {
            return Ok(bf::Operand::Bf16(bf::rounded(&y)?));
        }
        Ok(bf::Operand::F32(y))
    }
    fn conv2d_fwd_from(
        &self,
        sh: &Conv2dShape,
        x: &bf::Operand,
        w: &V,
        b: Option<&V>,
        emb: Option<&V>,
        residual: Option<&V>,
        y: &mut V,
    ) -> Result<()> {
        match x {
            bf::Operand::Bf16(x) if bf::conv_fwd_fits(sh) => {
                bf::conv2d_fwd_rounded(sh, x, &*self.weight_bf16(w)?, b, emb, residual, y)
            }
            // An f32 input, or a bf16 stream tensor into a convolution with no bf16 kernel.
            _ => self.conv2d_fwd_fused(sh, super::cuda_stream::as_f32(x, &mut None)?, w, b, emb, residual, y),
        }
    }
    fn conv2d_bwd_weight_from(
        &self,
        sh: &Conv2dShape,
        x: &bf::Operand,
        dy: &V,
        dw: &mut V,
        db: Option<&mut V>,
    ) -> Result<()> {
        match x {
            bf::Operand::Bf16(x) if bf::conv_bwd_fits(sh) => bf::conv2d_bwd_weight_rounded(sh, x, dy, dw, db),
            _ => self.conv2d_bwd_weight(sh, super::cuda_stream::as_f32(x, &mut None)?, dy, dw, db),
        }
    }
    fn linear_fwd_from(&self, sh: &LinearShape, x: &bf::Operand, w: &V, b: Option<&V>, y: &mut V) -> Result<()> {
        match x {
            bf::Operand::F32(x) => self.linear_fwd(sh, x, w, b, y),
            bf::Operand::Bf16(x) => bf::linear_fwd_rounded(sh, x, &*self.weight_bf16(w)?, b, y),
        }
    }
    fn linear_bwd_weight_from(
        &self,
        sh: &LinearShape,
        x: &bf::Operand,
        dy: &V,
        dw: &mut V,
        db: Option<&mut V>,
    ) -> Result<()> {
        match x {
            bf::Operand::F32(x) => self.linear_bwd_weight(sh, x, dy, dw, db),
            bf::Operand::Bf16(x) => bf::linear_bwd_weight_rounded(sh, x, dy, dw, db),
        }
    }

    fn linear_fwd_to_attention(
        &self,
        sh: &LinearShape,
        attn: &AttentionShape,
        x: &bf::Operand,
        w: [&V; 3],
        b: [Option<&V>; 3],
    ) -> Result<[bf::Operand; 3]> {
        if self.bf16() && bf::attention_fits(attn) && bf::linear_fwd_fits(sh) {
            let mut owned = None;
            let x = Self::bf16_input(ProductInput::Operand(x), &mut owned, |_| Ok(()))?;
            let [wq, wk, wv] = w.map(|w| self.weight_bf16(w));
            let y = bf::linear_fwd_to_bf16_x3(sh, x, [&*wq?, &*wk?, &*wv?], b)?;
            return Ok(y.map(bf::Operand::Bf16));
        }
        let project = |i: usize| -> Result<bf::Operand> {
            let mut y = self.alloc(sh.rows * sh.out_features)?;
            self.linear_fwd_from(sh, x, w[i], b[i], &mut y)?;
            Ok(bf::Operand::F32(y))
        };
        Ok([project(0)?, project(1)?, project(2)?])
    }
    fn attention_fwd_from(
        &self,
        sh: &AttentionShape,
        proj: &LinearShape,
        qkv: [&bf::Operand; 3],
        lse: &mut V,
    ) -> Result<bf::Operand> {
        self.attention_operand(sh, proj, qkv, lse)
    }
    fn attention_bwd_from(
        &self,
        sh: &AttentionShape,
        qkv: [&bf::Operand; 3],
        out: &bf::Operand,
        lse: &V,
        dout: &V,
        dq: &mut V,
        dk: &mut V,
        dv: &mut V,
    ) -> Result<()> {
        self.attention_bwd_operands(sh, qkv, out, lse, dout, [dq, dk, dv])
    }
    fn conv2d_bwd(
        &self,
        sh: &Conv2dShape,
        x: ProductInput<Self>,
        dy: &V,
        w: &V,
        dw: &mut V,
        db: Option<&mut V>,
        dx: Option<&mut V>,
    ) -> Result<()> {
        if !(self.bf16() && bf::conv_bwd_fits(sh)) {
            return layers_separate::conv2d_bwd_separately(self, sh, x, dy, w, dw, db, dx);
        }
        let mut owned = None;
        let x = Self::bf16_input(x, &mut owned, |x| checks::conv2d_bwd_weight::<Self>(sh, x, dy, dw, db.as_deref()))?;
        let w = match dx.as_deref() {
            Some(dx) => Some(checks::conv2d_bwd_input::<Self>(sh, dy, w, dx).and_then(|_| self.weight_bf16(w))?),
            None => None,
        };
        bf::conv2d_bwd_rounded(sh, x, dy, dw, db, dx.zip(w.as_deref()))
    }
    fn linear_bwd(
        &self,
        sh: &LinearShape,
        x: ProductInput<Self>,
        dy: &V,
        w: &V,
        dw: &mut V,
        db: Option<&mut V>,
        dx: Option<&mut V>,
    ) -> Result<()> {
        if !(self.bf16() && bf::linear_bwd_fits(sh)) {
            return layers_separate::linear_bwd_separately(self, sh, x, dy, w, dw, db, dx);
        }
        let mut owned = None;
        let x = Self::bf16_input(x, &mut owned, |x| checks::linear_bwd_weight::<Self>(sh, x, dy, dw, db.as_deref()))?;
        let w = match dx.as_deref() {
            Some(dx) => Some(checks::linear_bwd_input::<Self>(sh, dy, w, dx).and_then(|_| self.weight_bf16(w))?),
            None => None,
        };
        bf::linear_bwd_rounded(sh, x, dy, dw, db, dx.zip(w.as_deref()))
    }

    fn conv2d_fwd(&self, sh: &Conv2dShape, x: &V, w: &V, b: Option<&V>, y: &mut V) -> Result<()> {
        checks::conv2d_fwd::<Self>(sh, x, w, b, y)?;
        if self.bf16() && bf::conv_fwd_fits(sh) {
            return bf::conv2d_fwd(sh, x, &*self.weight_bf16(w)?, b, y);
        }
        conv::conv2d_fwd_f32(sh, x, w, b, y)
    }
    fn conv2d_fwd_fused(
        &self,
        sh: &Conv2dShape,
        x: &V,
        w: &V,
        b: Option<&V>,
        emb: Option<&V>,
        residual: Option<&V>,
        y: &mut V,
    ) -> Result<()> {
        if self.bf16() && bf::conv_fwd_fits(sh) {
            checks::conv2d_fwd::<Self>(sh, x, w, b, y)?;
            return bf::conv2d_fwd_fused(sh, x, &*self.weight_bf16(w)?, b, emb, residual, y);
        }
        super::layers_separate::conv2d_fwd_then_adds(self, sh, x, w, b, emb, residual, y)
    }
    fn conv2d_bwd_input(&self, sh: &Conv2dShape, dy: &V, w: &V, dx: &mut V) -> Result<()> {
        checks::conv2d_bwd_input::<Self>(sh, dy, w, dx)?;
        if self.bf16() && bf::conv_bwd_fits(sh) {
            return bf::conv2d_bwd_input(sh, dy, &*self.weight_bf16(w)?, dx);
        }
        conv::conv2d_bwd_input_f32(sh, dy, w, dx)
    }
    fn conv2d_bwd_weight(&self, sh: &Conv2dShape, x: &V, dy: &V, dw: &mut V, db: Option<&mut V>) -> Result<()> {
        checks::conv2d_bwd_weight::<Self>(sh, x, dy, dw, db.as_deref())?;
        if self.bf16() && bf::conv_bwd_fits(sh) {
            return bf::conv2d_bwd_weight(sh, x, dy, dw, db);
        }
        conv::conv2d_bwd_weight_f32(sh, x, dy, dw, db)
    }
    fn group_norm_fwd(
        &self,
        sh: &GroupNormShape,
        x: &V,
        gamma: Option<&V>,
        beta: Option<&V>,
        silu: bool,
        y: &mut V,
        mean: &mut V,
        rstd: &mut V,
    ) -> Result<()> {
        checks::group_norm_fwd::<Self>(sh, x, gamma, beta, y, mean, rstd)?;
        group_norm::group_norm_fwd(sh, x, gamma, beta, silu, y, mean, rstd)
    }
    fn group_norm_bwd(
        &self,
        sh: &GroupNormShape,
        x: &V,
        gamma: Option<&V>,
        beta: Option<&V>,
        mean: &V,
        rstd: &V,
        silu: bool,
        dy: &V,
        dx: &mut V,
        dgamma: Option<&mut V>,
        dbeta: Option<&mut V>,
    ) -> Result<()> {
        let grads = (dgamma.as_deref(), dbeta.as_deref());
        checks::group_norm_bwd::<Self>(sh, x, gamma, beta, mean, rstd, dy, dx, grads.0, grads.1)?;
        group_norm::group_norm_bwd(sh, x, gamma, beta, mean, rstd, silu, dy, dx, dgamma, dbeta)
    }
    fn linear_fwd(&self, sh: &LinearShape, x: &V, w: &V, b: Option<&V>, y: &mut V) -> Result<()> {
        checks::linear_fwd::<Self>(sh, x, w, b, y)?;
        if self.bf16() && bf::linear_fwd_fits(sh) {
            return bf::linear_fwd(sh, x, &*self.weight_bf16(w)?, b, y);
        }
        linear::linear_fwd_f32(sh, x, w, b, y)
    }
    fn linear_bwd_input(&self, sh: &LinearShape, dy: &V, w: &V, dx: &mut V) -> Result<()> {
        checks::linear_bwd_input::<Self>(sh, dy, w, dx)?;
        if self.bf16() && bf::linear_bwd_fits(sh) {
            return bf::linear_bwd_input(sh, dy, &*self.weight_bf16(w)?, dx);
        }
        linear::linear_bwd_input_f32(sh, dy, w, dx)
    }
    fn linear_bwd_weight(&self, sh: &LinearShape, x: &V, dy: &V, dw: &mut V, db: Option<&mut V>) -> Result<()> {
        checks::linear_bwd_weight::<Self>(sh, x, dy, dw, db.as_deref())?;
        if self.bf16() && bf::linear_bwd_fits(sh) {
            return bf::linear_bwd_weight(sh, x, dy, dw, db);
        }
        linear::linear_bwd_weight_f32(sh, x, dy, dw, db)
    }
    fn add_scaled(&self, a: &V, b: &V, divisor: f32, y: &mut V) -> Result<()> {
        checks::add_scaled::<Self>(a, b, y)?;
        elementwise::add_scaled_f32(a, b, divisor, y)
    }
    fn div_scalar(&self, x: &V, divisor: f32, y: &mut V) -> Result<()> {
        checks::div_scalar::<Self>(x, y)?;
        elementwise::div_scalar_f32(x, divisor, y)
    }
    fn add_channel_bias(&self, sh: &ImageShape, x: &V, v: &V, y: &mut V) -> Result<()> {
        checks::add_channel_bias::<Self>(sh, x, v, y)?;
        elementwise::add_channel_bias_f32(sh, x, v, y)
    }
    fn channel_sum(&self, sh: &ImageShape, dy: &V, dv: &mut V) -> Result<()> {
        checks::channel_sum::<Self>(sh, dy, dv)?;
        elementwise::channel_sum_f32(sh, dy, dv)
    }
    fn upsample_nearest2x_fwd(&self, sh: &ImageShape, x: &V, y: &mut V) -> Result<()> {
        checks::upsample_nearest2x_fwd::<Self>(sh, x, y)?;
        resample::upsample_nearest2x_fwd_f32(sh, x, y)
    }
    fn upsample_nearest2x_bwd(&self, sh: &ImageShape, dy: &V, dx: &mut V) -> Result<()> {
        checks::upsample_nearest2x_bwd::<Self>(sh, dy, dx)?;
        resample::upsample_nearest2x_bwd_f32(sh, dy, dx)
    }
    fn concat_channels(&self, rows: usize, c1: usize, c2: usize, a: &V, b: &V, y: &mut V) -> Result<()> {
        checks::concat_channels::<Self>(rows, c1, c2, a, b, y)?;
        elementwise::concat_channels_f32(rows, c1, c2, a, b, y)
    }
    fn split_channels(&self, rows: usize, c1: usize, c2: usize, dy: &V, da: &mut V, db: &mut V) -> Result<()> {
        checks::split_channels::<Self>(rows, c1, c2, dy, da, db)?;
        elementwise::split_channels_f32(rows, c1, c2, dy, da, db)
    }
    fn timestep_embedding(&self, t: &V, dim: usize, flip_sin_to_cos: bool, freq_shift: f32, y: &mut V) -> Result<()> {
        checks::timestep_embedding::<Self>(t, dim, y)?;
        embedding::timestep_embedding_f32(t, dim, flip_sin_to_cos, freq_shift, y)
    }
    fn attention_fwd(&self, sh: &AttentionShape, q: &V, k: &V, v: &V, out: &mut V, lse: &mut V) -> Result<()> {
        checks::attention_fwd::<Self>(sh, q, k, v, out, lse)?;
        if self.bf16() && bf::attention_fits(sh) {
            return bf::attention_fwd(sh, q, k, v, out, lse);
        }
        attention::attention_fwd_f32(sh, q, k, v, out, lse)
    }
    fn attention_bwd(
        &self,
        sh: &AttentionShape,
        q: &V,
        k: &V,
        v: &V,
        out: &V,
        lse: &V,
        dout: &V,
        dq: &mut V,
        dk: &mut V,
        dv: &mut V,
    ) -> Result<()> {
        checks::attention_bwd::<Self>(sh, [q, k, v, out, lse, dout], [dq, dk, dv])?;
        if self.bf16() && bf::attention_fits(sh) {
            return bf::attention_bwd(sh, [q, k, v, out, lse, dout], dq, dk, dv);
        }
        attention::attention_bwd_f32(sh, q, k, v, out, lse, dout, dq, dk, dv)
    }
}
