//! diffusers' UNet2DModel (DDPM family) over the backend's ops: the structure built from a
//! config, the forward pass that records what the backward needs, and the backward pass that
//! writes a gradient for every parameter.
//!
//! Every intermediate activation lives in one list; each recorded step names its input and
//! output by index there, so skip connections are just indices and gradients accumulate per index
//! as the steps are replayed in reverse.

use super::blocks::{AttentionBlock, Ctx, Grads, ResnetBlock, TimeEmbedding};
use super::config::UNetConfig;
use super::params::ParamKind;
use super::structure::{attention_block, describe, resnet_block, stage_blocks};
use super::tape::{Step, Tape};
use super::weights::{Pair, ParamTable};
use crate::backend::{Consumer, Layers, ProductInput};
use crate::shapes::{Conv2dShape, ImageShape};
use anyhow::{Result, bail};

pub(super) struct Stage {
    pub(super) resnets: Vec<ResnetBlock>,
    pub(super) attentions: Vec<AttentionBlock>,
    /// The down- or upsampling convolution after the stage.
    pub(super) resample: Option<Pair>,
}

pub struct UNet {
    pub config: UNetConfig,
    pub table: ParamTable,
    pub(super) conv_in: Pair,
    pub(super) time: TimeEmbedding,
    pub(super) down: Vec<Stage>,
    pub(super) mid_resnets: [ResnetBlock; 2],
    pub(super) mid_attention: Option<AttentionBlock>,
    pub(super) up: Vec<Stage>,
    pub(super) norm_out: Pair,
    pub(super) conv_out: Pair,
}

impl UNet {
    pub fn new(config: UNetConfig) -> Result<Self> {
        config.validate()?;
        let t = ParamTable::new(&config);
        let d = describe(&config);
        let down = d.down.iter().map(|s| stage_blocks(&t, &config, s)).collect();
        let up = d.up.iter().map(|s| stage_blocks(&t, &config, s)).collect();
        let mid_resnets = [resnet_block(&t, &d.mid_resnets[0]), resnet_block(&t, &d.mid_resnets[1])];
        let mid_attention = d.mid_attention.as_ref().map(|a| attention_block(&t, &config, a));
        Ok(UNet {
            conv_in: t.pair("conv_in"),
            time: TimeEmbedding {
                channels: config.block_out_channels[0],
                dim: config.time_embed_dim(),
                flip_sin_to_cos: config.flip_sin_to_cos,
                freq_shift: config.freq_shift,
                linear_1: t.pair("time_embedding.linear_1"),
                linear_2: t.pair("time_embedding.linear_2"),
            },
            norm_out: t.pair("conv_norm_out"),
            conv_out: t.pair("conv_out"),
            down,
            mid_resnets,
            mid_attention,
            up,
            table: t,
            config,
        })
    }

    fn ctx<'a, B: Layers>(&self, b: &'a B, params: &'a [B::Buf]) -> Ctx<'a, B> {
        Ctx { b, params, groups: self.config.norm_num_groups, eps: self.config.norm_eps }
    }

    /// The training forward: eps_theta(x_t, t) for a batch (x NHWC [batch, size, size,
    /// in_channels], t as floats [batch]), recording what the backward needs.
    pub fn forward<B: Layers>(
        &self,
        b: &B,
        params: &[B::Buf],
        x: &B::Buf,
        t: &B::Buf,
        batch: usize,
    ) -> Result<Tape<B::Buf, B::Operand>> {
        self.run_forward(b, params, x, t, batch, true)
    }

    /// Inference: the model's output (predicted noise, NHWC) without keeping what a backward would
    /// need, so the saved normalisation outputs, statistics and attention tensors are freed as the
    /// pass goes. The same operations as [`UNet::forward`], so the same bits.
    pub fn predict<B: Layers>(&self, b: &B, params: &[B::Buf], x: &B::Buf, t: &B::Buf, batch: usize) -> Result<B::Buf> {
        let mut tape = self.run_forward(b, params, x, t, batch, false)?;
        Ok(tape.out.take().expect("a forward records its output"))
    }

    /// Declares the convolution and linear weights among `params` as written only by the optimizer
    /// from now on (`Layers::keep_product_weights`): a trainer's or a sampler's parameters.
    pub fn keep_product_weights<B: Layers>(&self, b: &B, params: &[B::Buf]) -> Result<()> {
        if params.len() != self.table.len() {
            bail!("the model has {} parameters, {} were given", self.table.len(), params.len());
        }
        let products = [ParamKind::ConvWeight, ParamKind::LinearWeight];
        let weights: Vec<&B::Buf> =
            params.iter().zip(&self.table.specs).filter(|(_, s)| products.contains(&s.kind)).map(|(p, _)| p).collect();
        b.keep_product_weights(&weights)
    }

    fn run_forward<B: Layers>(
        &self,
        b: &B,
        params: &[B::Buf],
        x: &B::Buf,
        t: &B::Buf,
        batch: usize,
        record: bool,
    ) -> Result<Tape<B::Buf, B::Operand>> {
        let c = &self.config;
        let size = c.sample_size;
        if params.len() != self.table.len() {
            bail!("the model has {} parameters, {} were given", self.table.len(), params.len());
        }
        if B::len(x) != batch * size * size * c.in_channels || B::len(t) != batch {
            bail!("input must be [{batch}, {size}, {size}, {}] with {batch} timesteps", c.in_channels);
        }
        let cx = self.ctx(b, params);
        let resnets = self.down.iter().chain(&self.up).flat_map(|s| &s.resnets).chain(&self.mid_resnets);
        let time = self.time.forward(&cx, t, batch, &resnets.map(|r| r.cout).collect::<Vec<_>>())?;
        let mut tape = Tape { batch, record, centred: None, acts: Vec::new(), out: None, steps: Vec::new(), time };
        let mut s = ImageShape { batch, h: size, w: size, c: c.in_channels };
        let mut cur = self.input_fwd(&cx, &mut tape, &mut s, x)?;
        let mut skips = vec![cur];
        for stage in &self.down {
            cur = self.down_stage_fwd(&cx, &mut tape, stage, &mut s, cur, &mut skips)?;
        }
        cur = self.resnet_fwd(&cx, &mut tape, &self.mid_resnets[0], &mut s, cur)?;
        if let Some(a) = &self.mid_attention {
            cur = self.attention_fwd(&cx, &mut tape, a, &s, cur)?;
        }
        cur = self.resnet_fwd(&cx, &mut tape, &self.mid_resnets[1], &mut s, cur)?;
        for stage in &self.up {
            cur = self.up_stage_fwd(&cx, &mut tape, stage, &mut s, cur, &mut skips)?;
        }
        let gn = cx.gn_shape(batch, s.h * s.w, s.c);
        let conv_out = Conv2dShape::conv3x3(batch, s.h, s.w, s.c, c.out_channels);
        let x = ProductInput::Operand(&tape.acts[cur]);
        let (a, stats) = cx.group_norm_fwd_operand(&gn, Consumer::Conv(&conv_out), self.norm_out, x, true)?;
        cur =
            self.push(&mut tape, a, |output| Step::NormSilu { p: self.norm_out, shape: gn, input: cur, output, stats });
        // The output, f32 for the loss, at index acts.len().
        let mut y = cx.alloc(conv_out.y_len())?;
        let (w, bias) = (cx.p(self.conv_out.w), Some(cx.p(self.conv_out.b)));
        b.conv2d_fwd_from(&conv_out, &tape.acts[cur], w, bias, None, None, &mut y)?;
        if record {
            let output = tape.acts.len();
            tape.steps.push(Step::Conv { p: self.conv_out, shape: conv_out, input: Some(cur), output });
        }
        tape.out = Some(y);
        Ok(tape)
    }

    /// The input stage: centring (2x - 1, as diffusers, when the config asks; no gradient flows
    /// to the model input) and conv_in. Returns conv_in's output on the tape.
    fn input_fwd<B: Layers>(
        &self,
        cx: &Ctx<B>,
        tape: &mut Tape<B::Buf, B::Operand>,
        s: &mut ImageShape,
        x: &B::Buf,
    ) -> Result<usize> {
        let b = cx.b;
        if self.config.center_input_sample {
            let mut centred = b.alloc(B::len(x))?;
            b.add_scaled(x, x, 1.0, &mut centred)?;
            let mut ones = b.alloc(B::len(x))?;
            b.fill(&mut ones, 1.0)?;
            b.axpy(-1.0, &ones, &mut centred)?;
            tape.centred = Some(centred);
        }
        let c0 = self.config.block_out_channels[0];
        let conv_in = Conv2dShape::conv3x3(s.batch, s.h, s.w, s.c, c0);
        let input = ProductInput::F32(tape.centred.as_ref().unwrap_or(x));
        let h = b.conv2d_fwd_to_stream(&conv_in, input, cx.p(self.conv_in.w), Some(cx.p(self.conv_in.b)), None)?;
        s.c = c0;
        Ok(self.push(tape, h, |output| Step::Conv { p: self.conv_in, shape: conv_in, input: None, output }))
    }

    /// One down stage: its resnets (each followed by its attention, if any) and the downsampling
    /// conv, every output pushed onto `skips` for the up path.
    fn down_stage_fwd<B: Layers>(
        &self,
        cx: &Ctx<B>,
        tape: &mut Tape<B::Buf, B::Operand>,
        stage: &Stage,
        s: &mut ImageShape,
        mut cur: usize,
        skips: &mut Vec<usize>,
    ) -> Result<usize> {
        for (j, r) in stage.resnets.iter().enumerate() {
            cur = self.resnet_fwd(cx, tape, r, s, cur)?;
            if let Some(a) = stage.attentions.get(j) {
                cur = self.attention_fwd(cx, tape, a, s, cur)?;
            }
            skips.push(cur);
        }
        if let Some(p) = stage.resample {
            let shape = Conv2dShape::downsample(s.batch, s.h, s.w, s.c, s.c, self.config.downsample_padding);
            cur = self.conv_fwd(cx, tape, p, shape, cur)?;
            s.h = shape.out_h();
            s.w = shape.out_w();
            skips.push(cur);
        }
        Ok(cur)
    }

    /// One up stage: each resnet takes the concatenation of the current tensor and a skip (then
    /// its attention, if any); then nearest 2x upsampling and a conv.
    fn up_stage_fwd<B: Layers>(
        &self,
        cx: &Ctx<B>,
        tape: &mut Tape<B::Buf, B::Operand>,
        stage: &Stage,
        s: &mut ImageShape,
        mut cur: usize,
        skips: &mut Vec<usize>,
    ) -> Result<usize> {
        let b = cx.b;
        for (j, r) in stage.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip per up resnet");
            let (rows, c1) = (s.batch * s.h * s.w, s.c);
            let c2 = r.cin - c1;
            let cat = b.concat_channels_operand(rows, c1, c2, &tape.acts[cur], &tape.acts[skip])?;
            cur = self.push(tape, cat, |output| Step::Concat { a: cur, b: skip, rows, c1, c2, output });
            s.c = r.cin;
            cur = self.resnet_fwd(cx, tape, r, s, cur)?;
            if let Some(a) = stage.attentions.get(j) {
                cur = self.attention_fwd(cx, tape, a, s, cur)?;
            }
        }
        if let Some(p) = stage.resample {
            // The upsampled image, which only the convolution reads, in the precision it reads it.
            let shape = *s;
            (s.h, s.w) = (2 * s.h, 2 * s.w);
            let conv = Conv2dShape::conv3x3(s.batch, s.h, s.w, s.c, s.c);
            let up = b.upsample_nearest2x_fwd_operand(&shape, &tape.acts[cur], Consumer::Conv(&conv))?;
            let y = b.conv2d_fwd_to_stream(&conv, ProductInput::Operand(&up), cx.p(p.w), Some(cx.p(p.b)), None)?;
            cur = self.push(tape, y, |output| Step::Upsampler { p, shape, conv, input: cur, output, up });
        }
        Ok(cur)
    }

    fn push<Buf, In>(&self, tape: &mut Tape<Buf, In>, act: In, step: impl FnOnce(usize) -> Step<Buf, In>) -> usize {
        tape.acts.push(act);
        let output = tape.acts.len() - 1;
        if tape.record {
            tape.steps.push(step(output));
        }
        output
    }

    fn conv_fwd<B: Layers>(
        &self,
        cx: &Ctx<B>,
        tape: &mut Tape<B::Buf, B::Operand>,
        p: Pair,
        shape: Conv2dShape,
        input: usize,
    ) -> Result<usize> {
        let x = ProductInput::Operand(&tape.acts[input]);
        let y = cx.b.conv2d_fwd_to_stream(&shape, x, cx.p(p.w), Some(cx.p(p.b)), None)?;
        Ok(self.push(tape, y, |output| Step::Conv { p, shape, input: Some(input), output }))
    }

    fn resnet_fwd<B: Layers>(
        &self,
        cx: &Ctx<B>,
        tape: &mut Tape<B::Buf, B::Operand>,
        r: &ResnetBlock,
        s: &mut ImageShape,
        input: usize,
    ) -> Result<usize> {
        let shape = *s;
        let (out, saved) =
            r.forward(cx, &shape, &tape.acts[input], &tape.time.silu_emb, self.config.time_embed_dim())?;
        s.c = r.cout;
        Ok(self.push(tape, out, |output| Step::Resnet { block: r.clone(), shape, input, output, saved }))
    }

    fn attention_fwd<B: Layers>(
        &self,
        cx: &Ctx<B>,
        tape: &mut Tape<B::Buf, B::Operand>,
        a: &AttentionBlock,
        s: &ImageShape,
        input: usize,
    ) -> Result<usize> {
        let (out, saved) = a.forward(cx, s, &tape.acts[input])?;
        Ok(self.push(tape, out, |output| Step::Attention { block: a.clone(), shape: *s, input, output, saved }))
    }

    /// Writes the gradient of every parameter into `grads` (one buffer per parameter, shaped
    /// like it), given the forward's input `x`, its tape and d loss / d output.
    pub fn backward<B: Layers>(
        &self,
        b: &B,
        params: &[B::Buf],
        x: &B::Buf,
        tape: Tape<B::Buf, B::Operand>,
        dout: B::Buf,
        grads: &mut [B::Buf],
    ) -> Result<()> {
        self.backward_with(b, params, x, tape, dout, Grads::new(grads))
    }

    /// `backward`, telling `g`'s hook after each step which gradients that step finished (the
    /// data-parallel loop starts summing them over the ranks while the rest still runs).
    pub fn backward_with<B: Layers>(
        &self,
        b: &B,
        params: &[B::Buf],
        x: &B::Buf,
        tape: Tape<B::Buf, B::Operand>,
        dout: B::Buf,
        mut g: Grads<B>,
    ) -> Result<()> {
        let cx = self.ctx(b, params);
        let temb = self.config.time_embed_dim();
        let mut de = b.alloc(tape.batch * temb)?;
        b.fill(&mut de, 0.0)?;
        if !tape.record {
            bail!("backward needs the tape of a training forward (UNet::forward), not UNet::predict");
        }
        let Tape { batch, centred, acts, steps, time, .. } = tape;
        let e = &time.silu_emb;
        let model_input = centred.as_ref().unwrap_or(x);
        // One gradient per activation, and the output's (index acts.len()) last.
        let mut d: Vec<Option<B::Buf>> = (0..acts.len()).map(|_| None).collect();
        d.push(Some(dout));
        // Gradients into an activation add up over its consumers (skip connections have two).
        let add = |d: &mut Vec<Option<B::Buf>>, i: usize, grad: B::Buf| -> Result<()> {
            match &mut d[i] {
                Some(acc) => b.axpy(1.0, &grad, acc),
                slot @ None => {
                    *slot = Some(grad);
                    Ok(())
                }
            }
        };
        for step in steps.into_iter().rev() {
            let dy = d[step.output()].take().expect("gradient reaches every output");
            match step {
                Step::Conv { p, shape, input, .. } => {
                    let (dw, db) = g.pair(p);
                    let x = input.map_or(ProductInput::F32(model_input), |i| ProductInput::Operand(&acts[i]));
                    // The model's input needs no gradient.
                    let mut dx = input.map(|_| b.alloc(shape.x_len())).transpose()?;
                    b.conv2d_bwd(&shape, x, &dy, cx.p(p.w), dw, Some(db), dx.as_mut())?;
                    if let (Some(i), Some(dx)) = (input, dx) {
                        add(&mut d, i, dx)?;
                    }
                }
                Step::Resnet { block, shape, input, saved, .. } => {
                    let dx = block.backward(&cx, &mut g, &shape, &acts[input], saved, &dy, e, &mut de, temb)?;
                    add(&mut d, input, dx)?;
                }
                Step::Attention { block, shape, input, saved, .. } => {
                    let dx = block.backward(&cx, &mut g, &shape, &acts[input], saved, &dy)?;
                    add(&mut d, input, dx)?;
                }
                Step::Concat { a, b: skip, rows, c1, c2, .. } => {
                    let (mut da, mut db) = (b.alloc(rows * c1)?, b.alloc(rows * c2)?);
                    b.split_channels(rows, c1, c2, &dy, &mut da, &mut db)?;
                    add(&mut d, a, da)?;
                    add(&mut d, skip, db)?;
                }
                Step::Upsampler { p, shape, conv, input, up, .. } => {
                    let ((dw, db), mut dup) = (g.pair(p), b.alloc(conv.x_len())?);
                    b.conv2d_bwd(&conv, ProductInput::Operand(&up), &dy, cx.p(p.w), dw, Some(db), Some(&mut dup))?;
                    let mut dx = b.alloc(shape.len())?;
                    b.upsample_nearest2x_bwd(&shape, &dup, &mut dx)?;
                    add(&mut d, input, dx)?;
                }
                Step::NormSilu { p, shape, input, stats, .. } => {
                    let x = ProductInput::Operand(&acts[input]);
                    let dx = cx.group_norm_bwd(&mut g, &shape, p, x, &stats, true, &dy)?;
                    add(&mut d, input, dx)?;
                }
            }
            g.settle()?;
        }
        // The time embedding MLP, from d silu(emb) that every resnet added into `de`.
        self.time.backward(&cx, &mut g, &time, &de, batch)?;
        g.settle()
    }
}
