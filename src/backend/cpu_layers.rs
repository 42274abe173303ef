//! The CPU backends' layer ops: length checks, then the implementations: the references in
//! src/cpu for f32 and f64 (whole-model gradient checks), and the fast path in src/fast for
//! f32 (the CPU execution path). One macro body serves all three; the op modules it calls are
//! whatever `conv`, `group_norm`, ... name where it is expanded.

use super::{Layers, checks};
use crate::cpu::Real;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::Result;

fn s<T: Real, V: AsRef<[T]>>(v: Option<&V>) -> Option<&[T]> {
    v.map(|v| v.as_ref())
}
fn sm<T: Real, V: AsMut<[T]>>(v: Option<&mut V>) -> Option<&mut [T]> {
    v.map(|v| v.as_mut())
}
fn len<T: Real, V: AsRef<[T]>>(v: &Option<&mut V>) -> Option<usize> {
    v.as_ref().map(|v| (**v).as_ref().len())
}

macro_rules! cpu_layers {
    ($backend:ty, $t:ty) => {
        cpu_layers!($backend, $t, Vec<$t>);
    };
    ($backend:ty, $t:ty, $v:ty) => {
        impl Layers for $backend {
            fn conv2d_fwd(&self, sh: &Conv2dShape, x: &$v, w: &$v, b: Option<&$v>, y: &mut $v) -> Result<()> {
                checks::conv2d(
                    "conv2d_fwd",
                    sh,
                    ("x", x.len()),
                    ("w", w.len()),
                    b.map(|b| ("bias", b.len())),
                    ("y", y.len()),
                )?;
                conv::conv2d_fwd(sh, x, w, s(b), y);
                Ok(())
            }
            fn conv2d_bwd_input(&self, sh: &Conv2dShape, dy: &$v, w: &$v, dx: &mut $v) -> Result<()> {
                checks::conv2d("conv2d_bwd_input", sh, ("dx", dx.len()), ("w", w.len()), None, ("dy", dy.len()))?;
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
                checks::conv2d(
                    "conv2d_bwd_weight",
                    sh,
                    ("x", x.len()),
                    ("dw", dw.len()),
                    len(&db).map(|l| ("db", l)),
                    ("dy", dy.len()),
                )?;
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
                checks::group_norm(
                    sh,
                    x.len(),
                    gamma.map(|g| g.len()),
                    beta.map(|b| b.len()),
                    y.len(),
                    [mean.len(), rstd.len()],
                )?;
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
                checks::group_norm(
                    sh,
                    x.len(),
                    gamma.map(|g| g.len()),
                    beta.map(|b| b.len()),
                    dy.len(),
                    [mean.len(), rstd.len()],
                )?;
                let mut grads = vec![("dx", dx.len(), sh.len())];
                grads.extend(len(&dgamma).map(|l| ("dgamma", l, sh.channels)));
                grads.extend(len(&dbeta).map(|l| ("dbeta", l, sh.channels)));
                checks::lengths("group_norm_bwd", &grads)?;
                group_norm::group_norm_bwd(sh, x, s(gamma), s(beta), mean, rstd, silu, dy, dx, sm(dgamma), sm(dbeta));
                Ok(())
            }
            fn linear_fwd(&self, sh: &LinearShape, x: &$v, w: &$v, b: Option<&$v>, y: &mut $v) -> Result<()> {
                checks::linear(
                    "linear_fwd",
                    sh,
                    ("x", x.len()),
                    ("w", w.len()),
                    b.map(|b| ("bias", b.len())),
                    ("y", y.len()),
                )?;
                linear::linear_fwd(sh, x, w, s(b), y);
                Ok(())
            }
            fn linear_bwd_input(&self, sh: &LinearShape, dy: &$v, w: &$v, dx: &mut $v) -> Result<()> {
                checks::linear("linear_bwd_input", sh, ("dx", dx.len()), ("w", w.len()), None, ("dy", dy.len()))?;
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
                checks::linear(
                    "linear_bwd_weight",
                    sh,
                    ("x", x.len()),
                    ("dw", dw.len()),
                    len(&db).map(|l| ("db", l)),
                    ("dy", dy.len()),
                )?;
                linear::linear_bwd_weight(sh, x, dy, dw, sm(db));
                Ok(())
            }
            fn add_scaled(&self, a: &$v, b: &$v, divisor: f32, y: &mut $v) -> Result<()> {
                checks::lengths("add_scaled", &[("b", b.len(), a.len()), ("y", y.len(), a.len())])?;
                elementwise::add_scaled(a, b, divisor, y);
                Ok(())
            }
            fn div_scalar(&self, x: &$v, divisor: f32, y: &mut $v) -> Result<()> {
                checks::lengths("div_scalar", &[("y", y.len(), x.len())])?;
                elementwise::div_scalar(x, divisor, y);
                Ok(())
            }
            fn add_channel_bias(&self, sh: &ImageShape, x: &$v, v: &$v, y: &mut $v) -> Result<()> {
                checks::image(
                    "add_channel_bias",
                    sh,
                    &[("x", x.len(), sh.len()), ("v", v.len(), sh.batch * sh.c), ("y", y.len(), sh.len())],
                )?;
                elementwise::add_channel_bias(sh, x, v, y);
                Ok(())
            }
            fn channel_sum(&self, sh: &ImageShape, dy: &$v, dv: &mut $v) -> Result<()> {
                checks::image("channel_sum", sh, &[("dy", dy.len(), sh.len()), ("dv", dv.len(), sh.batch * sh.c)])?;
                elementwise::channel_sum(sh, dy, dv);
                Ok(())
            }
            fn upsample_nearest2x_fwd(&self, sh: &ImageShape, x: &$v, y: &mut $v) -> Result<()> {
                checks::image("upsample_nearest2x_fwd", sh, &[("x", x.len(), sh.len()), ("y", y.len(), 4 * sh.len())])?;
                resample::upsample_nearest2x_fwd(sh, x, y);
                Ok(())
            }
            fn upsample_nearest2x_bwd(&self, sh: &ImageShape, dy: &$v, dx: &mut $v) -> Result<()> {
                checks::image(
                    "upsample_nearest2x_bwd",
                    sh,
                    &[("dy", dy.len(), 4 * sh.len()), ("dx", dx.len(), sh.len())],
                )?;
                resample::upsample_nearest2x_bwd(sh, dy, dx);
                Ok(())
            }
            fn concat_channels(&self, rows: usize, c1: usize, c2: usize, a: &$v, b: &$v, y: &mut $v) -> Result<()> {
                checks::lengths(
                    "concat_channels",
                    &[("a", a.len(), rows * c1), ("b", b.len(), rows * c2), ("y", y.len(), rows * (c1 + c2))],
                )?;
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
                checks::lengths(
                    "split_channels",
                    &[("da", da.len(), rows * c1), ("db", db.len(), rows * c2), ("dy", dy.len(), rows * (c1 + c2))],
                )?;
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
                checks::lengths("timestep_embedding", &[("y", y.len(), t.len() * dim)])?;
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
                checks::attention(
                    "attention_fwd",
                    sh,
                    &[("q", q.len()), ("k", k.len()), ("v", v.len()), ("out", out.len())],
                    lse.len(),
                )?;
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
                let t = [
                    ("q", q.len()),
                    ("k", k.len()),
                    ("v", v.len()),
                    ("out", out.len()),
                    ("dout", dout.len()),
                    ("dq", dq.len()),
                    ("dk", dk.len()),
                    ("dv", dv.len()),
                ];
                checks::attention("attention_bwd", sh, &t, lse.len())?;
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
