//! The CUDA backend's layer ops: length checks, then the launchers in src/cuda.

use super::{CudaBackend, Layers, checks};
use crate::cuda::{attention, conv, elementwise, embedding, group_norm, linear, resample};
use crate::gpu::Buffer;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::Result;

type V = Buffer<f32>;

fn len(v: &Option<&mut V>) -> Option<usize> {
    v.as_ref().map(|v| v.len())
}

impl Layers for CudaBackend {
    fn conv2d_fwd(&self, sh: &Conv2dShape, x: &V, w: &V, b: Option<&V>, y: &mut V) -> Result<()> {
        checks::conv2d("conv2d_fwd", sh, ("x", x.len()), ("w", w.len()), b.map(|b| ("bias", b.len())), ("y", y.len()))?;
        conv::conv2d_fwd_f32(sh, x, w, b, y)?;
        Ok(())
    }
    fn conv2d_bwd_input(&self, sh: &Conv2dShape, dy: &V, w: &V, dx: &mut V) -> Result<()> {
        checks::conv2d("conv2d_bwd_input", sh, ("dx", dx.len()), ("w", w.len()), None, ("dy", dy.len()))?;
        conv::conv2d_bwd_input_f32(sh, dy, w, dx)?;
        Ok(())
    }
    fn conv2d_bwd_weight(&self, sh: &Conv2dShape, x: &V, dy: &V, dw: &mut V, db: Option<&mut V>) -> Result<()> {
        checks::conv2d(
            "conv2d_bwd_weight",
            sh,
            ("x", x.len()),
            ("dw", dw.len()),
            len(&db).map(|l| ("db", l)),
            ("dy", dy.len()),
        )?;
        conv::conv2d_bwd_weight_f32(sh, x, dy, dw, db)?;
        Ok(())
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
        checks::group_norm(
            sh,
            x.len(),
            gamma.map(|g| g.len()),
            beta.map(|b| b.len()),
            y.len(),
            [mean.len(), rstd.len()],
        )?;
        group_norm::group_norm_fwd_f32(sh, x, gamma, beta, silu, y, mean, rstd)?;
        Ok(())
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
        group_norm::group_norm_bwd_f32(sh, x, gamma, beta, mean, rstd, silu, dy, dx, dgamma, dbeta)?;
        Ok(())
    }
    fn linear_fwd(&self, sh: &LinearShape, x: &V, w: &V, b: Option<&V>, y: &mut V) -> Result<()> {
        checks::linear("linear_fwd", sh, ("x", x.len()), ("w", w.len()), b.map(|b| ("bias", b.len())), ("y", y.len()))?;
        linear::linear_fwd_f32(sh, x, w, b, y)?;
        Ok(())
    }
    fn linear_bwd_input(&self, sh: &LinearShape, dy: &V, w: &V, dx: &mut V) -> Result<()> {
        checks::linear("linear_bwd_input", sh, ("dx", dx.len()), ("w", w.len()), None, ("dy", dy.len()))?;
        linear::linear_bwd_input_f32(sh, dy, w, dx)?;
        Ok(())
    }
    fn linear_bwd_weight(&self, sh: &LinearShape, x: &V, dy: &V, dw: &mut V, db: Option<&mut V>) -> Result<()> {
        checks::linear(
            "linear_bwd_weight",
            sh,
            ("x", x.len()),
            ("dw", dw.len()),
            len(&db).map(|l| ("db", l)),
            ("dy", dy.len()),
        )?;
        linear::linear_bwd_weight_f32(sh, x, dy, dw, db)?;
        Ok(())
    }
    fn add_scaled(&self, a: &V, b: &V, divisor: f32, y: &mut V) -> Result<()> {
        checks::lengths("add_scaled", &[("b", b.len(), a.len()), ("y", y.len(), a.len())])?;
        elementwise::add_scaled_f32(a, b, divisor, y)?;
        Ok(())
    }
    fn div_scalar(&self, x: &V, divisor: f32, y: &mut V) -> Result<()> {
        checks::lengths("div_scalar", &[("y", y.len(), x.len())])?;
        elementwise::div_scalar_f32(x, divisor, y)?;
        Ok(())
    }
    fn add_channel_bias(&self, sh: &ImageShape, x: &V, v: &V, y: &mut V) -> Result<()> {
        checks::image(
            "add_channel_bias",
            sh,
            &[("x", x.len(), sh.len()), ("v", v.len(), sh.batch * sh.c), ("y", y.len(), sh.len())],
        )?;
        elementwise::add_channel_bias_f32(sh, x, v, y)?;
        Ok(())
    }
    fn channel_sum(&self, sh: &ImageShape, dy: &V, dv: &mut V) -> Result<()> {
        checks::image("channel_sum", sh, &[("dy", dy.len(), sh.len()), ("dv", dv.len(), sh.batch * sh.c)])?;
        elementwise::channel_sum_f32(sh, dy, dv)?;
        Ok(())
    }
    fn upsample_nearest2x_fwd(&self, sh: &ImageShape, x: &V, y: &mut V) -> Result<()> {
        checks::image("upsample_nearest2x_fwd", sh, &[("x", x.len(), sh.len()), ("y", y.len(), 4 * sh.len())])?;
        resample::upsample_nearest2x_fwd_f32(sh, x, y)?;
        Ok(())
    }
    fn upsample_nearest2x_bwd(&self, sh: &ImageShape, dy: &V, dx: &mut V) -> Result<()> {
        checks::image("upsample_nearest2x_bwd", sh, &[("dy", dy.len(), 4 * sh.len()), ("dx", dx.len(), sh.len())])?;
        resample::upsample_nearest2x_bwd_f32(sh, dy, dx)?;
        Ok(())
    }
    fn concat_channels(&self, rows: usize, c1: usize, c2: usize, a: &V, b: &V, y: &mut V) -> Result<()> {
        checks::lengths(
            "concat_channels",
            &[("a", a.len(), rows * c1), ("b", b.len(), rows * c2), ("y", y.len(), rows * (c1 + c2))],
        )?;
        elementwise::concat_channels_f32(rows, c1, c2, a, b, y)?;
        Ok(())
    }
    fn split_channels(&self, rows: usize, c1: usize, c2: usize, dy: &V, da: &mut V, db: &mut V) -> Result<()> {
        checks::lengths(
            "split_channels",
            &[("da", da.len(), rows * c1), ("db", db.len(), rows * c2), ("dy", dy.len(), rows * (c1 + c2))],
        )?;
        elementwise::split_channels_f32(rows, c1, c2, dy, da, db)?;
        Ok(())
    }
    fn timestep_embedding(&self, t: &V, dim: usize, flip_sin_to_cos: bool, freq_shift: f32, y: &mut V) -> Result<()> {
        checks::lengths("timestep_embedding", &[("y", y.len(), t.len() * dim)])?;
        embedding::timestep_embedding_f32(t, dim, flip_sin_to_cos, freq_shift, y)?;
        Ok(())
    }
    fn attention_fwd(&self, sh: &AttentionShape, q: &V, k: &V, v: &V, out: &mut V, lse: &mut V) -> Result<()> {
        checks::attention(
            "attention_fwd",
            sh,
            &[("q", q.len()), ("k", k.len()), ("v", v.len()), ("out", out.len())],
            lse.len(),
        )?;
        attention::attention_fwd_f32(sh, q, k, v, out, lse)?;
        Ok(())
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
        attention::attention_bwd_f32(sh, q, k, v, out, lse, dout, dq, dk, dv)?;
        Ok(())
    }
}
