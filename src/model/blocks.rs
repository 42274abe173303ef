//! The UNet's composite blocks, forward and backward, over the backend's layer ops: diffusers'
//! ResnetBlock2D (pre-norm, "default" time-embedding norm) and the spatial Attention block
//! (GroupNorm, q/k/v projections over the H*W tokens, softmax attention, output projection,
//! residual, rescale). Activations are NHWC, so an image's pixels are already its tokens.

use super::weights::Pair;
use crate::backend::{Consumer, Layers, ProductInput, Stream};
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::Result;

pub use super::time_embedding::{TimeEmbedding, TimeEmbeddingSaved};

/// Everything a block reads: the parameters and the backend.
pub struct Ctx<'a, B: Layers> {
    pub b: &'a B,
    pub params: &'a [B::Buf],
    pub groups: usize,
    pub eps: f32,
}

impl<B: Layers> Ctx<'_, B> {
    pub fn p(&self, i: usize) -> &B::Buf {
        &self.params[i]
    }
    pub fn alloc(&self, n: usize) -> Result<B::Buf> {
        self.b.alloc(n)
    }
    pub fn gn_shape(&self, batch: usize, hw: usize, channels: usize) -> GroupNormShape {
        GroupNormShape { batch, hw, channels, groups: self.groups, eps: self.eps }
    }
    /// GroupNorm with the parameters `p` (+ SiLU when `silu`): y and its statistics [mean, rstd].
    pub fn group_norm_fwd(
        &self,
        shape: &GroupNormShape,
        p: Pair,
        x: &B::Buf,
        silu: bool,
    ) -> Result<(B::Buf, [B::Buf; 2])> {
        let (mut y, mut mean, mut rstd) =
            (self.alloc(shape.len())?, self.alloc(shape.stats_len())?, self.alloc(shape.stats_len())?);
        self.b.group_norm_fwd(shape, x, Some(self.p(p.w)), Some(self.p(p.b)), silu, &mut y, &mut mean, &mut rstd)?;
        Ok((y, [mean, rstd]))
    }
    /// GroupNorm (+SiLU when `silu`) with the parameters `p` into the input of `consumer`, and
    /// its statistics (`Layers::group_norm_fwd_operand`), from an activation or a convolution's
    /// output made for it.
    pub fn group_norm_fwd_operand(
        &self,
        shape: &GroupNormShape,
        consumer: Consumer,
        p: Pair,
        x: ProductInput<B>,
        silu: bool,
    ) -> Result<(B::Operand, [B::Buf; 2])> {
        let (mut mean, mut rstd) = (self.alloc(shape.stats_len())?, self.alloc(shape.stats_len())?);
        let (w, b) = (Some(self.p(p.w)), Some(self.p(p.b)));
        let y = self.b.group_norm_fwd_operand(shape, consumer, x, w, b, silu, &mut mean, &mut rstd)?;
        Ok((y, [mean, rstd]))
    }
    /// dout / scale, the gradient of a block's output before its division by `scale`: dout
    /// itself at scale 1 (x / 1 is exact, so the pass is skipped), else a copy kept in `keep`.
    pub fn unscaled<'a>(&self, dout: &'a B::Buf, scale: f32, keep: &'a mut Option<B::Buf>) -> Result<&'a B::Buf> {
        if scale == 1.0 {
            return Ok(dout);
        }
        let mut d = self.alloc(B::len(dout))?;
        self.b.div_scalar(dout, scale, &mut d)?;
        Ok(keep.insert(d))
    }
    /// Its backward: dx, with the gradients of `p` written into `g`.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_bwd(
        &self,
        g: &mut Grads<B>,
        shape: &GroupNormShape,
        p: Pair,
        x: ProductInput<B>,
        stats: &[B::Buf; 2],
        silu: bool,
        dy: &B::Buf,
    ) -> Result<B::Buf> {
        let mut dx = self.alloc(shape.len())?;
        let (dgw, dgb) = g.pair(p);
        let (w, b) = (Some(self.p(p.w)), Some(self.p(p.b)));
        self.b.group_norm_bwd_from(shape, x, w, b, &stats[0], &stats[1], silu, dy, &mut dx, Some(dgw), Some(dgb))?;
        Ok(dx)
    }
}

/// Told which gradients (parameter indices) a backward step finished, with all the gradients.
pub type ReadyHook<'h, B> = dyn FnMut(&[usize], &[<B as crate::backend::Backend>::Buf]) -> Result<()> + 'h;

/// Parameter gradients, one buffer per parameter (written, not accumulated: each parameter is
/// used by one step of the pass, so its gradient is final when that step ends).
pub struct Grads<'a, B: Layers> {
    pub g: &'a mut [B::Buf],
    /// The gradients written since the last `settle`, and who is told of them.
    touched: Vec<usize>,
    ready: Option<&'a mut ReadyHook<'a, B>>,
}

impl<'a, B: Layers> Grads<'a, B> {
    pub fn new(g: &'a mut [B::Buf]) -> Self {
        Grads { g, touched: Vec::new(), ready: None }
    }

    /// Gradients whose completion `ready` hears of, step by step.
    pub fn with_hook(g: &'a mut [B::Buf], ready: &'a mut ReadyHook<'a, B>) -> Self {
        Grads { g, touched: Vec::new(), ready: Some(ready) }
    }

    /// Ends a step of the backward pass: the hook learns which gradients it wrote.
    pub fn settle(&mut self) -> Result<()> {
        if let Some(hook) = self.ready.as_mut()
            && !self.touched.is_empty()
        {
            hook(&self.touched, self.g)?;
        }
        self.touched.clear();
        Ok(())
    }

    /// The weight and bias gradient buffers of a pair.
    pub fn pair(&mut self, p: Pair) -> (&mut B::Buf, &mut B::Buf) {
        assert_ne!(p.w, p.b);
        self.touched.extend([p.w, p.b]);
        let (lo, hi) = (p.w.min(p.b), p.w.max(p.b));
        let (a, b) = self.g.split_at_mut(hi);
        let (first, second) = (&mut a[lo], &mut b[0]);
        if p.w < p.b { (first, second) } else { (second, first) }
    }
}

#[derive(Clone, Debug)]
pub struct ResnetBlock {
    pub cin: usize,
    pub cout: usize,
    pub norm1: Pair,
    pub conv1: Pair,
    pub time_emb_proj: Pair,
    pub norm2: Pair,
    pub conv2: Pair,
    pub shortcut: Option<Pair>,
    pub output_scale: f32,
}

/// A ResnetBlock's saved tensors on backend `B`.
pub type SavedResnet<B> = ResnetSaved<<B as crate::backend::Backend>::Buf, <B as Stream>::Operand>;

/// What a ResnetBlock's backward needs from its forward (besides its input, which the caller
/// keeps: it is usually also a skip connection). h2, the first convolution's output, is stored as
/// norm2 reads it (bf16 where that convolution runs on bf16 operands).
pub struct ResnetSaved<Buf, In> {
    a1: In,
    stats1: [Buf; 2],
    h2: In,
    a2: In,
    stats2: [Buf; 2],
}

impl ResnetBlock {
    /// out = (shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x))) + proj(silu(temb)))))) / scale.
    /// `e` is silu(temb) [batch, temb_dim], computed once per forward for all blocks.
    pub fn forward<B: Layers>(
        &self,
        c: &Ctx<B>,
        s: &ImageShape,
        x: &B::Operand,
        e: &B::Operand,
        temb_dim: usize,
    ) -> Result<(B::Operand, SavedResnet<B>)> {
        let b = c.b;
        let hw = s.h * s.w;
        let out_img = ImageShape { c: self.cout, ..*s };
        let gn1 = c.gn_shape(s.batch, hw, self.cin);
        let conv1 = Conv2dShape::conv3x3(s.batch, s.h, s.w, self.cin, self.cout);
        let (a1, stats1) =
            c.group_norm_fwd_operand(&gn1, Consumer::Conv(&conv1), self.norm1, ProductInput::Operand(x), true)?;
        let proj = LinearShape { rows: s.batch, in_features: temb_dim, out_features: self.cout };
        let mut tp = c.alloc(s.batch * self.cout)?;
        b.linear_fwd_from(&proj, e, c.p(self.time_emb_proj.w), Some(c.p(self.time_emb_proj.b)), &mut tp)?;
        // h2 = conv1(a1) + proj(e), broadcast over pixels: one epilogue add where the backend fuses
        // it, stored as norm2 reads it.
        let h2 = b.conv2d_fwd_to_norm(&conv1, &a1, c.p(self.conv1.w), Some(c.p(self.conv1.b)), Some(&tp))?;
        let gn2 = c.gn_shape(s.batch, hw, self.cout);
        let conv2 = Conv2dShape::conv3x3(s.batch, s.h, s.w, self.cout, self.cout);
        let h2_in = ProductInput::Operand(&h2);
        let (a2, stats2) = c.group_norm_fwd_operand(&gn2, Consumer::Conv(&conv2), self.norm2, h2_in, true)?;
        // The shortcut and the sum are stored as the residual stream (`Stream`).
        let shortcut = match self.shortcut {
            Some(sc) => {
                let conv_sc = Conv2dShape::conv1x1(s.batch, s.h, s.w, self.cin, self.cout);
                Some(b.conv2d_fwd_to_stream(&conv_sc, ProductInput::Operand(x), c.p(sc.w), Some(c.p(sc.b)), None)?)
            }
            None => None,
        };
        let residual = shortcut.as_ref().unwrap_or(x);
        let (w2, b2) = (c.p(self.conv2.w), Some(c.p(self.conv2.b)));
        let out = if self.output_scale == 1.0 {
            // (residual + conv2) / 1 is the epilogue's conv2 + residual, bit for bit.
            b.conv2d_fwd_to_stream(&conv2, ProductInput::Operand(&a2), w2, b2, Some(residual))?
        } else {
            let mut h3 = c.alloc(out_img.len())?;
            b.conv2d_fwd_from(&conv2, &a2, w2, b2, None, None, &mut h3)?;
            b.add_scaled_operand(residual, &h3, self.output_scale)?
        };
        Ok((out, ResnetSaved { a1, stats1, h2, a2, stats2 }))
    }

    /// Returns dx; writes this block's parameter gradients and adds d(silu(temb)) into `de`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Layers>(
        &self,
        c: &Ctx<B>,
        g: &mut Grads<B>,
        s: &ImageShape,
        x: &B::Operand,
        saved: SavedResnet<B>,
        dout: &B::Buf,
        e: &B::Operand,
        de: &mut B::Buf,
        temb_dim: usize,
    ) -> Result<B::Buf> {
        let b = c.b;
        let hw = s.h * s.w;
        let out_img = ImageShape { c: self.cout, ..*s };
        let mut keep = None;
        let dsum = c.unscaled(dout, self.output_scale, &mut keep)?;
        // conv2
        let conv2 = Conv2dShape::conv3x3(s.batch, s.h, s.w, self.cout, self.cout);
        let (dw, db) = g.pair(self.conv2);
        let mut da2 = c.alloc(out_img.len())?;
        let a2 = ProductInput::Operand(&saved.a2);
        b.conv2d_bwd(&conv2, a2, dsum, c.p(self.conv2.w), dw, Some(db), Some(&mut da2))?;
        // norm2 (+ SiLU)
        let gn2 = c.gn_shape(s.batch, hw, self.cout);
        let h2 = ProductInput::Operand(&saved.h2);
        let dh2 = c.group_norm_bwd(g, &gn2, self.norm2, h2, &saved.stats2, true, &da2)?;
        // time embedding projection, broadcast over pixels
        let mut dtp = c.alloc(s.batch * self.cout)?;
        b.channel_sum(&out_img, &dh2, &mut dtp)?;
        let proj = LinearShape { rows: s.batch, in_features: temb_dim, out_features: self.cout };
        let (dpw, dpb) = g.pair(self.time_emb_proj);
        let mut de_part = c.alloc(s.batch * temb_dim)?;
        let w = c.p(self.time_emb_proj.w);
        b.linear_bwd(&proj, ProductInput::Operand(e), &dtp, w, dpw, Some(dpb), Some(&mut de_part))?;
        b.axpy(1.0, &de_part, de)?;
        // conv1 (its output gradient is dh2: h2 = h1 + broadcast)
        let conv1 = Conv2dShape::conv3x3(s.batch, s.h, s.w, self.cin, self.cout);
        let (dw, db) = g.pair(self.conv1);
        let mut da1 = c.alloc(s.len())?;
        let a1 = ProductInput::Operand(&saved.a1);
        b.conv2d_bwd(&conv1, a1, &dh2, c.p(self.conv1.w), dw, Some(db), Some(&mut da1))?;
        let gn1 = c.gn_shape(s.batch, hw, self.cin);
        let mut dx = c.group_norm_bwd(g, &gn1, self.norm1, ProductInput::Operand(x), &saved.stats1, true, &da1)?;
        // shortcut
        match self.shortcut {
            Some(sc) => {
                let conv_sc = Conv2dShape::conv1x1(s.batch, s.h, s.w, self.cin, self.cout);
                let (dw, db) = g.pair(sc);
                let mut dxs = c.alloc(s.len())?;
                b.conv2d_bwd(&conv_sc, ProductInput::Operand(x), dsum, c.p(sc.w), dw, Some(db), Some(&mut dxs))?;
                b.axpy(1.0, &dxs, &mut dx)?;
            }
            None => b.axpy(1.0, dsum, &mut dx)?,
        }
        Ok(dx)
    }
}

#[derive(Clone, Debug)]
pub struct AttentionBlock {
    pub channels: usize,
    pub heads: usize,
    pub norm: Pair,
    pub q: Pair,
    pub k: Pair,
    pub v: Pair,
    pub out: Pair,
    pub rescale: f32,
}

/// An AttentionBlock's saved tensors on backend `B`.
pub type SavedAttention<B> = AttentionSaved<<B as crate::backend::Backend>::Buf, <B as Stream>::Operand>;

/// What an AttentionBlock's backward needs: the normalised input (as its projections read it),
/// the statistics, q, k, v (as attention reads them), the attention output (as the output
/// projection reads it) and its log-sum-exp.
pub struct AttentionSaved<Buf, In> {
    n: In,
    stats: [Buf; 2],
    q: In,
    k: In,
    v: In,
    o: In,
    lse: Buf,
}

impl AttentionBlock {
    fn shapes(&self, s: &ImageShape) -> (AttentionShape, LinearShape) {
        let tokens = s.h * s.w;
        let attn = AttentionShape { batch: s.batch, tokens, heads: self.heads, head_dim: self.channels / self.heads };
        (attn, LinearShape { rows: s.batch * tokens, in_features: self.channels, out_features: self.channels })
    }

    /// out = (to_out(attention(to_q(n), to_k(n), to_v(n))) + x) / rescale, n = GroupNorm(x).
    pub fn forward<B: Layers>(
        &self,
        c: &Ctx<B>,
        s: &ImageShape,
        x: &B::Operand,
    ) -> Result<(B::Operand, SavedAttention<B>)> {
        let b = c.b;
        let (attn, lin) = self.shapes(s);
        let gn = c.gn_shape(s.batch, s.h * s.w, self.channels);
        // One GroupNorm output read by three projections: rounded to bf16 once, where they take it.
        let (n, stats) =
            c.group_norm_fwd_operand(&gn, Consumer::Linear(&lin), self.norm, ProductInput::Operand(x), false)?;
        // q, k and v in the precision attention reads them (bf16 from the projections' epilogue).
        let qkv = [self.q, self.k, self.v];
        let [q, k, v] =
            b.linear_fwd_to_attention(&lin, &attn, &n, qkv.map(|p| c.p(p.w)), qkv.map(|p| Some(c.p(p.b))))?;
        // o in the precision the output projection reads it (bf16 from attention's store).
        let mut lse = c.alloc(attn.lse_len())?;
        let o = b.attention_fwd_from(&attn, &lin, [&q, &k, &v], &mut lse)?;
        let mut p = c.alloc(s.len())?;
        b.linear_fwd_from(&lin, &o, c.p(self.out.w), Some(c.p(self.out.b)), &mut p)?;
        // (x + p) / rescale: f32 addition commutes, so diffusers' (p + x) bit for bit.
        let out = b.add_scaled_operand(x, &p, self.rescale)?;
        Ok((out, AttentionSaved { n, stats, q, k, v, o, lse }))
    }

    pub fn backward<B: Layers>(
        &self,
        c: &Ctx<B>,
        g: &mut Grads<B>,
        s: &ImageShape,
        x: &B::Operand,
        saved: SavedAttention<B>,
        dout: &B::Buf,
    ) -> Result<B::Buf> {
        let b = c.b;
        let (attn, lin) = self.shapes(s);
        let mut keep = None;
        let dsum = c.unscaled(dout, self.rescale, &mut keep)?;
        let (dw, db) = g.pair(self.out);
        let mut d_o = c.alloc(s.len())?;
        b.linear_bwd(&lin, ProductInput::Operand(&saved.o), dsum, c.p(self.out.w), dw, Some(db), Some(&mut d_o))?;
        let (mut dq, mut dk, mut dv) = (c.alloc(s.len())?, c.alloc(s.len())?, c.alloc(s.len())?);
        let qkv = [&saved.q, &saved.k, &saved.v];
        b.attention_bwd_from(&attn, qkv, &saved.o, &saved.lse, &d_o, &mut dq, &mut dk, &mut dv)?;
        let mut dn = c.alloc(s.len())?;
        let mut part = c.alloc(s.len())?;
        for (i, (p, dy)) in [(self.q, &dq), (self.k, &dk), (self.v, &dv)].into_iter().enumerate() {
            let (dw, db) = g.pair(p);
            let dx = if i == 0 { &mut dn } else { &mut part };
            b.linear_bwd(&lin, ProductInput::Operand(&saved.n), dy, c.p(p.w), dw, Some(db), Some(dx))?;
            if i > 0 {
                b.axpy(1.0, &part, &mut dn)?;
            }
        }
        let gn = c.gn_shape(s.batch, s.h * s.w, self.channels);
        let mut dx = c.group_norm_bwd(g, &gn, self.norm, ProductInput::Operand(x), &saved.stats, false, &dn)?;
        b.axpy(1.0, dsum, &mut dx)?;
        Ok(dx)
    }
}
