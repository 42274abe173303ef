//! The CPU backends' layer ops: the shared argument checks (src/backend/checks.rs), then the
//! implementations: the references in
//! src/cpu for f32 and f64 (whole-model gradient checks), and the fast path in src/fast for
//! f32 (the CPU execution path). One macro body serves all three; the op modules it calls are
//! whatever `conv`, `group_norm`, ... name where it is expanded.

use super::{Backend, Consumer, Layers, ProductInput, Stream, checks};
use crate::cpu::Real;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::Result;

fn s<T: Real, V: AsRef<[T]>>(v: Option<&V>) -> Option<&[T]> {
    v.map(|v| v.as_ref())
}
fn sm<T: Real, V: AsMut<[T]>>(v: Option<&mut V>) -> Option<&mut [T]> {
    v.map(|v| v.as_mut())
}

macro_rules! cpu_layers {
    ($backend:ty, $t:ty) => {
        cpu_layers!($backend, $t, Vec<$t>);
    };
    ($backend:ty, $t:ty, $v:ty) => {
        // An operand is the f32 (f64) buffer itself: the stream's ops are the plain ones.
        impl Stream for $backend {
            type Operand = $v;

            fn conv2d_fwd_to_stream(
                &self,
                sh: &Conv2dShape,
                x: ProductInput<Self>,
                w: &$v,
                b: Option<&$v>,
                residual: Option<&$v>,
            ) -> Result<$v> {
                let (ProductInput::F32(x) | ProductInput::Operand(x)) = x;
                let mut y = self.alloc(sh.y_len())?;
                self.conv2d_fwd_fused(sh, x, w, b, None, residual, &mut y)?;
                Ok(y)
            }
            fn add_scaled_operand(&self, x: &$v, h: &$v, divisor: f32) -> Result<$v> {
                let mut y = self.alloc(x.len())?;
                self.add_scaled(x, h, divisor, &mut y)?;
                Ok(y)
            }
            fn concat_channels_operand(&self, rows: usize, c1: usize, c2: usize, a: &$v, b: &$v) -> Result<$v> {
                let mut y = self.alloc(rows * (c1 + c2))?;
                self.concat_channels(rows, c1, c2, a, b, &mut y)?;
                Ok(y)
            }
        }

        impl Layers for $backend {
            fn group_norm_fwd_operand(
                &self,
                sh: &GroupNormShape,
                _consumer: Consumer,
                x: ProductInput<Self>,
                gamma: Option<&$v>,
                beta: Option<&$v>,
                silu: bool,
                mean: &mut $v,
                rstd: &mut $v,
            ) -> Result<$v> {
                let (ProductInput::F32(x) | ProductInput::Operand(x)) = x;
                let mut y = self.alloc(sh.len())?;
                self.group_norm_fwd(sh, x, gamma, beta, silu, &mut y, mean, rstd)?;
                Ok(y)
            }
            fn group_norm_bwd_from(
                &self,
                sh: &GroupNormShape,
                x: ProductInput<Self>,
                gamma: Option<&$v>,
                beta: Option<&$v>,
                mean: &$v,
                rstd: &$v,
                silu: bool,
                dy: &$v,
                dx: &mut $v,
                dgamma: Option<&mut $v>,
                dbeta: Option<&mut $v>,
            ) -> Result<()> {
                let (ProductInput::F32(x) | ProductInput::Operand(x)) = x;
                self.group_norm_bwd(sh, x, gamma, beta, mean, rstd, silu, dy, dx, dgamma, dbeta)
            }
            fn conv2d_fwd_to_norm(
                &self,
                sh: &Conv2dShape,
                x: &$v,
                w: &$v,
                b: Option<&$v>,
                emb: Option<&$v>,
            ) -> Result<$v> {
                let mut y = self.alloc(sh.y_len())?;
                self.conv2d_fwd_fused(sh, x, w, b, emb, None, &mut y)?;
                Ok(y)
            }
            fn upsample_nearest2x_fwd_operand(&self, sh: &ImageShape, x: &$v, _consumer: Consumer) -> Result<$v> {
                let mut y = self.alloc(4 * sh.len())?;
                self.upsample_nearest2x_fwd(sh, x, &mut y)?;
                Ok(y)
            }
            fn silu_fwd_operand(&self, x: &$v, _consumers: &[Consumer]) -> Result<$v> {
                let mut y = self.alloc(x.len())?;
                self.silu_fwd(x, &mut y)?;
                Ok(y)
            }
            fn conv2d_fwd_from(
                &self,
                sh: &Conv2dShape,
                x: &$v,
                w: &$v,
                b: Option<&$v>,
                emb: Option<&$v>,
                residual: Option<&$v>,
                y: &mut $v,
            ) -> Result<()> {
                self.conv2d_fwd_fused(sh, x, w, b, emb, residual, y)
            }
            fn conv2d_bwd_weight_from(
                &self,
                sh: &Conv2dShape,
                x: &$v,
                dy: &$v,
                dw: &mut $v,
                db: Option<&mut $v>,
            ) -> Result<()> {
                self.conv2d_bwd_weight(sh, x, dy, dw, db)
            }
            fn linear_fwd_from(&self, sh: &LinearShape, x: &$v, w: &$v, b: Option<&$v>, y: &mut $v) -> Result<()> {
                self.linear_fwd(sh, x, w, b, y)
            }
            fn linear_bwd_weight_from(
                &self,
                sh: &LinearShape,
                x: &$v,
                dy: &$v,
                dw: &mut $v,
                db: Option<&mut $v>,
            ) -> Result<()> {
                self.linear_bwd_weight(sh, x, dy, dw, db)
            }
            fn linear_fwd_to_attention(
                &self,
                sh: &LinearShape,
                _attn: &AttentionShape,
                x: &$v,
                w: [&$v; 3],
                b: [Option<&$v>; 3],
            ) -> Result<[$v; 3]> {
                let project = |i: usize| -> Result<$v> {
                    let mut y = self.alloc(sh.rows * sh.out_features)?;
                    self.linear_fwd(sh, x, w[i], b[i], &mut y)?;
                    Ok(y)
                };
                Ok([project(0)?, project(1)?, project(2)?])
            }
            fn attention_fwd_from(
                &self,
                sh: &AttentionShape,
                _proj: &LinearShape,
                [q, k, v]: [&$v; 3],
                lse: &mut $v,
            ) -> Result<$v> {
                let mut out = self.alloc(sh.len())?;
                self.attention_fwd(sh, q, k, v, &mut out, lse)?;
                Ok(out)
            }
            fn attention_bwd_from(
                &self,
                sh: &AttentionShape,
                [q, k, v]: [&$v; 3],
                out: &$v,
                lse: &$v,
                dout: &$v,
                dq: &mut $v,
                dk: &mut $v,
                dv: &mut $v,
            ) -> Result<()> {
                self.attention_bwd(sh, q, k, v, out, lse, dout, dq, dk, dv)
            }
            fn conv2d_fwd(&self, sh: &Conv2dShape, x: &$v, w: &$v, b: Option<&$v>, y: &mut $v) -> Result<()> {
                checks::conv2d_fwd::<Self>(sh, x, w, b, y)?;
                conv::conv2d_fwd(sh, x, w, s(b), y);
                Ok(())
            }
            fn conv2d_bwd_input(&self, sh: &Conv2dShape, dy: &$v, w: &$v, dx: &mut $v) -> Result<()> {
                checks::conv2d_bwd_input::<Self>(sh, dy, w, dx)?;
                conv::conv2d_bwd_input(sh, dy, w, dx);
                Ok(())
            }
            fn conv2d_bwd_weight(
                &self,
                sh: &Conv2dShape,
                x: &$v,
                dy: &$v,
                dw: &mut $v,
                db: Option<&mut $v>,
            ) -> Result<()> {
                checks::conv2d_bwd_weight::<Self>(sh, x, dy, dw, db.as_deref())?;
                conv::conv2d_bwd_weight(sh, x, dy, dw, sm(db));
                Ok(())
            }
            fn group_norm_fwd(
                &self,
                sh: &GroupNormShape,
                x: &$v,
                gamma: Option<&$v>,
                beta: Option<&$v>,
                silu: bool,
                y: &mut $v,
                mean: &mut $v,
                rstd: &mut $v,
            ) -> Result<()> {
                checks::group_norm_fwd::<Self>(sh, x, gamma, beta, y, mean, rstd)?;
                group_norm::group_norm_fwd(sh, x, s(gamma), s(beta), silu, y, mean, rstd);
                Ok(())
            }
            fn group_norm_bwd(
                &self,
                sh: &GroupNormShape,
                x: &$v,
                gamma: Option<&$v>,
                beta: Option<&$v>,
                mean: &$v,
                rstd: &$v,
                silu: bool,
                dy: &$v,
                dx: &mut $v,
                dgamma: Option<&mut $v>,
                dbeta: Option<&mut $v>,
            ) -> Result<()> {
                let grads = (dgamma.as_deref(), dbeta.as_deref());
                checks::group_norm_bwd::<Self>(sh, x, gamma, beta, mean, rstd, dy, dx, grads.0, grads.1)?;
                group_norm::group_norm_bwd(sh, x, s(gamma), s(beta), mean, rstd, silu, dy, dx, sm(dgamma), sm(dbeta));
                Ok(())
            }
            fn linear_fwd(&self, sh: &LinearShape, x: &$v, w: &$v, b: Option<&$v>, y: &mut $v) -> Result<()> {
                checks::linear_fwd::<Self>(sh, x, w, b, y)?;
                linear::linear_fwd(sh, x, w, s(b), y);
                Ok(())
            }
            fn linear_bwd_input(&self, sh: &LinearShape, dy: &$v, w: &$v, dx: &mut $v) -> Result<()> {
                checks::linear_bwd_input::<Self>(sh, dy, w, dx)?;
                linear::linear_bwd_input(sh, dy, w, dx);
                Ok(())
            }
            fn linear_bwd_weight(
                &self,
                sh: &LinearShape,
                x: &$v,
                dy: &$v,
                dw: &mut $v,
                db: Option<&mut $v>,
            ) -> Result<()> {
                checks::linear_bwd_weight::<Self>(sh, x, dy, dw, db.as_deref())?;
                linear::linear_bwd_weight(sh, x, dy, dw, sm(db));
                Ok(())
            }
            fn add_scaled(&self, a: &$v, b: &$v, divisor: f32, y: &mut $v) -> Result<()> {
                checks::add_scaled::<Self>(a, b, y)?;
                elementwise::add_scaled(a, b, divisor, y);
                Ok(())
            }
            fn div_scalar(&self, x: &$v, divisor: f32, y: &mut $v) -> Result<()> {
                checks::div_scalar::<Self>(x, y)?;
                elementwise::div_scalar(x, divisor, y);
                Ok(())
            }
            fn add_channel_bias(&self, sh: &ImageShape, x: &$v, v: &$v, y: &mut $v) -> Result<()> {
                checks::add_channel_bias::<Self>(sh, x, v, y)?;
                elementwise::add_channel_bias(sh, x, v, y);
                Ok(())
            }
            fn channel_sum(&self, sh: &ImageShape, dy: &$v, dv: &mut $v) -> Result<()> {
                checks::channel_sum::<Self>(sh, dy, dv)?;
                elementwise::channel_sum(sh, dy, dv);
                Ok(())
            }
            fn upsample_nearest2x_fwd(&self, sh: &ImageShape, x: &$v, y: &mut $v) -> Result<()> {
                checks::upsample_nearest2x_fwd::<Self>(sh, x, y)?;
                resample::upsample_nearest2x_fwd(sh, x, y);
                Ok(())
            }
            fn upsample_nearest2x_bwd(&self, sh: &ImageShape, dy: &$v, dx: &mut $v) -> Result<()> {
                checks::upsample_nearest2x_bwd::<Self>(sh, dy, dx)?;
                resample::upsample_nearest2x_bwd(sh, dy, dx);
                Ok(())
            }
            fn concat_channels(&self, rows: usize, c1: usize, c2: usize, a: &$v, b: &$v, y: &mut $v) -> Result<()> {
                checks::concat_channels::<Self>(rows, c1, c2, a, b, y)?;
                elementwise::concat_channels(rows, c1, c2, a, b, y);
                Ok(())
            }
            fn split_channels(
                &self,
                rows: usize,
                c1: usize,
                c2: usize,
                dy: &$v,
                da: &mut $v,
                db: &mut $v,
            ) -> Result<()> {
                checks::split_channels::<Self>(rows, c1, c2, dy, da, db)?;
                elementwise::split_channels(rows, c1, c2, dy, da, db);
                Ok(())
            }
            fn timestep_embedding(
                &self,
                t: &$v,
                dim: usize,
                flip_sin_to_cos: bool,
                freq_shift: f32,
                y: &mut $v,
            ) -> Result<()> {
                checks::timestep_embedding::<Self>(t, dim, y)?;
                embedding::timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, y);
                Ok(())
            }
            fn attention_fwd(
                &self,
                sh: &AttentionShape,
                q: &$v,
                k: &$v,
                v: &$v,
                out: &mut $v,
                lse: &mut $v,
            ) -> Result<()> {
                checks::attention_fwd::<Self>(sh, q, k, v, out, lse)?;
                attention::attention_fwd(sh, q, k, v, out, lse);
                Ok(())
            }
            fn attention_bwd(
                &self,
                sh: &AttentionShape,
                q: &$v,
                k: &$v,
                v: &$v,
                out: &$v,
                lse: &$v,
                dout: &$v,
                dq: &mut $v,
                dk: &mut $v,
                dv: &mut $v,
            ) -> Result<()> {
                checks::attention_bwd::<Self>(sh, [q, k, v, out, lse, dout], [dq, dk, dv])?;
                attention::attention_bwd(sh, q, k, v, out, lse, dout, dq, dk, dv);
                Ok(())
            }
        }
    };
}

mod reference {
    use super::*;
    use crate::backend::{CpuBackend, CpuF64Backend};
    use crate::cpu::{attention, conv, elementwise, embedding, group_norm, linear, resample};
    cpu_layers!(CpuBackend, f32);
    cpu_layers!(CpuF64Backend, f64);
}

mod fast {
    use super::*;
    use crate::backend::FastCpuBackend;
    use crate::cpu::embedding;
    use crate::fast::{attention, conv, elementwise, group_norm, linear, resample};
    cpu_layers!(FastCpuBackend, f32, crate::fast::pool::PooledVec);
}

mod fast_bf16 {
    use super::*;
    use crate::backend::FastCpuBf16Backend;
    use crate::cpu::embedding;
    use crate::fast::bf16::{attention, conv, linear};
    use crate::fast::{elementwise, group_norm, resample};
    cpu_layers!(FastCpuBf16Backend, f32, crate::fast::pool::PooledVec);
}
