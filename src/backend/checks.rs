//! The argument checks of the layer ops, written once for every backend: each [`super::Layers`]
//! impl (the CPU references, the fast CPU path, CUDA) calls the check named as its op before it
//! runs anything, so a wrong size is the same clear error on the CPU and on a GPU (a kernel would
//! read out of bounds instead). The buffers are the backend's own; [`Backend::len`] sizes them.

use super::Backend;
pub use crate::shapes::lengths;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::{Result, bail};

/// A tensor as the op names it (the backward passes give dx, dw, dy) and its length.
type Named<'a> = (&'a str, usize);

fn named<'a, B: Backend + ?Sized>(name: &'a str, buf: &B::Buf) -> Named<'a> {
    (name, B::len(buf))
}

fn opt<'a, B: Backend + ?Sized>(name: &'a str, buf: Option<&B::Buf>) -> Option<Named<'a>> {
    buf.map(|b| named::<B>(name, b))
}

/// The shapes of the ops with a weight and an optional bias (conv2d, linear): the lengths of x,
/// w, y and the bias.
trait Weighted {
    fn validate(&self) -> Result<()>;
    fn lens(&self) -> [usize; 4];
}

impl Weighted for Conv2dShape {
    fn validate(&self) -> Result<()> {
        Conv2dShape::validate(self)
    }
    /// x [batch, in_h, in_w, in_c], w OHWI, y [batch, out_h, out_w, out_c], bias [out_c].
    fn lens(&self) -> [usize; 4] {
        [self.x_len(), self.w_len(), self.y_len(), self.out_c]
    }
}

impl Weighted for LinearShape {
    fn validate(&self) -> Result<()> {
        LinearShape::validate(self)
    }
    /// x [rows, in], w [out, in], y [rows, out], bias [out].
    fn lens(&self) -> [usize; 4] {
        let (rows, i, o) = (self.rows, self.in_features, self.out_features);
        [rows * i, o * i, rows * o, o]
    }
}

fn weighted(op: &str, s: &impl Weighted, x: Named, w: Named, b: Option<Named>, y: Named) -> Result<()> {
    s.validate()?;
    let [xl, wl, yl, bl] = s.lens();
    let mut v = vec![(x.0, x.1, xl), (w.0, w.1, wl), (y.0, y.1, yl)];
    v.extend(b.map(|(n, l)| (n, l, bl)));
    lengths(op, &v)
}

/// The forward and both backward checks of a weighted op, named as its Layers methods.
macro_rules! weighted_checks {
    ($shape:ty, $fwd:ident, $bwd_input:ident, $bwd_weight:ident) => {
        pub fn $fwd<B: Backend + ?Sized>(
            s: &$shape,
            x: &B::Buf,
            w: &B::Buf,
            b: Option<&B::Buf>,
            y: &B::Buf,
        ) -> Result<()> {
            let (x, w, y) = (named::<B>("x", x), named::<B>("w", w), named::<B>("y", y));
            weighted(stringify!($fwd), s, x, w, opt::<B>("bias", b), y)
        }

        pub fn $bwd_input<B: Backend + ?Sized>(s: &$shape, dy: &B::Buf, w: &B::Buf, dx: &B::Buf) -> Result<()> {
            let (dx, w, dy) = (named::<B>("dx", dx), named::<B>("w", w), named::<B>("dy", dy));
            weighted(stringify!($bwd_input), s, dx, w, None, dy)
        }

        pub fn $bwd_weight<B: Backend + ?Sized>(
            s: &$shape,
            x: &B::Buf,
            dy: &B::Buf,
            dw: &B::Buf,
            db: Option<&B::Buf>,
        ) -> Result<()> {
            let (x, dw, dy) = (named::<B>("x", x), named::<B>("dw", dw), named::<B>("dy", dy));
            weighted(stringify!($bwd_weight), s, x, dw, opt::<B>("db", db), dy)
        }
    };
}

weighted_checks!(Conv2dShape, conv2d_fwd, conv2d_bwd_input, conv2d_bwd_weight);
weighted_checks!(LinearShape, linear_fwd, linear_bwd_input, linear_bwd_weight);

/// The inputs both passes read: x, the optional affine parameters, the saved statistics, and
/// the pass's output (y) or incoming gradient (dy), which has x's length.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd<B: Backend + ?Sized>(
    s: &GroupNormShape,
    x: &B::Buf,
    gamma: Option<&B::Buf>,
    beta: Option<&B::Buf>,
    y: &B::Buf,
    mean: &B::Buf,
    rstd: &B::Buf,
) -> Result<()> {
    s.validate()?;
    let mut v = vec![
        ("x", B::len(x), s.len()),
        ("y", B::len(y), s.len()),
        ("mean", B::len(mean), s.stats_len()),
        ("rstd", B::len(rstd), s.stats_len()),
    ];
    v.extend(gamma.map(|g| ("gamma", B::len(g), s.channels)));
    v.extend(beta.map(|b| ("beta", B::len(b), s.channels)));
    lengths("group_norm", &v)
}

/// The forward's inputs (dy standing where y stood), then the gradients' lengths.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd<B: Backend + ?Sized>(
    s: &GroupNormShape,
    x: &B::Buf,
    gamma: Option<&B::Buf>,
    beta: Option<&B::Buf>,
    mean: &B::Buf,
    rstd: &B::Buf,
    dy: &B::Buf,
    dx: &B::Buf,
    dgamma: Option<&B::Buf>,
    dbeta: Option<&B::Buf>,
) -> Result<()> {
    group_norm_fwd::<B>(s, x, gamma, beta, dy, mean, rstd)?;
    let mut grads = vec![("dx", B::len(dx), s.len())];
    grads.extend(dgamma.map(|g| ("dgamma", B::len(g), s.channels)));
    grads.extend(dbeta.map(|b| ("dbeta", B::len(b), s.channels)));
    lengths("group_norm_bwd", &grads)
}

pub fn add_scaled<B: Backend + ?Sized>(a: &B::Buf, b: &B::Buf, y: &B::Buf) -> Result<()> {
    let n = B::len(a);
    lengths("add_scaled", &[("b", B::len(b), n), ("y", B::len(y), n)])
}

pub fn div_scalar<B: Backend + ?Sized>(x: &B::Buf, y: &B::Buf) -> Result<()> {
    lengths("div_scalar", &[("y", B::len(y), B::len(x))])
}

/// A non-empty image shape, then the lengths.
fn image(op: &str, s: &ImageShape, what: &[(&str, usize, usize)]) -> Result<()> {
    if s.is_empty() {
        bail!("{op}: empty shape {s:?}");
    }
    lengths(op, what)
}

pub fn add_channel_bias<B: Backend + ?Sized>(s: &ImageShape, x: &B::Buf, v: &B::Buf, y: &B::Buf) -> Result<()> {
    let (n, per_image) = (s.len(), s.batch * s.c);
    image("add_channel_bias", s, &[("x", B::len(x), n), ("v", B::len(v), per_image), ("y", B::len(y), n)])
}

pub fn channel_sum<B: Backend + ?Sized>(s: &ImageShape, dy: &B::Buf, dv: &B::Buf) -> Result<()> {
    image("channel_sum", s, &[("dy", B::len(dy), s.len()), ("dv", B::len(dv), s.batch * s.c)])
}

/// `s` is the input's shape; the output has four times its elements.
pub fn upsample_nearest2x_fwd<B: Backend + ?Sized>(s: &ImageShape, x: &B::Buf, y: &B::Buf) -> Result<()> {
    image("upsample_nearest2x_fwd", s, &[("x", B::len(x), s.len()), ("y", B::len(y), 4 * s.len())])
}

pub fn upsample_nearest2x_bwd<B: Backend + ?Sized>(s: &ImageShape, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
    image("upsample_nearest2x_bwd", s, &[("dy", B::len(dy), 4 * s.len()), ("dx", B::len(dx), s.len())])
}

/// `parts` [rows, c1] and [rows, c2] against `whole` [rows, c1 + c2], named as the op names them.
fn channels(op: &str, rows: usize, c: [usize; 2], parts: [Named; 2], whole: Named) -> Result<()> {
    let [(a, la), (b, lb)] = parts;
    lengths(op, &[(a, la, rows * c[0]), (b, lb, rows * c[1]), (whole.0, whole.1, rows * (c[0] + c[1]))])
}

pub fn concat_channels<B: Backend + ?Sized>(
    rows: usize,
    c1: usize,
    c2: usize,
    a: &B::Buf,
    b: &B::Buf,
    y: &B::Buf,
) -> Result<()> {
    channels("concat_channels", rows, [c1, c2], [named::<B>("a", a), named::<B>("b", b)], named::<B>("y", y))
}

pub fn split_channels<B: Backend + ?Sized>(
    rows: usize,
    c1: usize,
    c2: usize,
    dy: &B::Buf,
    da: &B::Buf,
    db: &B::Buf,
) -> Result<()> {
    channels("split_channels", rows, [c1, c2], [named::<B>("da", da), named::<B>("db", db)], named::<B>("dy", dy))
}

pub fn timestep_embedding<B: Backend + ?Sized>(t: &B::Buf, dim: usize, y: &B::Buf) -> Result<()> {
    lengths("timestep_embedding", &[("y", B::len(y), B::len(t) * dim)])
}

/// Every tensor has the shape's length, the saved log-sum-exp one per query row.
fn attention(op: &str, s: &AttentionShape, tensors: &[Named], lse: usize) -> Result<()> {
    s.validate()?;
    let mut v: Vec<_> = tensors.iter().map(|&(n, l)| (n, l, s.len())).collect();
    v.push(("lse", lse, s.lse_len()));
    lengths(op, &v)
}

pub fn attention_fwd<B: Backend + ?Sized>(
    s: &AttentionShape,
    q: &B::Buf,
    k: &B::Buf,
    v: &B::Buf,
    out: &B::Buf,
    lse: &B::Buf,
) -> Result<()> {
    let t = [named::<B>("q", q), named::<B>("k", k), named::<B>("v", v), named::<B>("out", out)];
    attention("attention_fwd", s, &t, B::len(lse))
}

/// q, k, v, out, lse, dout, then dq, dk, dv.
pub fn attention_bwd<B: Backend + ?Sized>(s: &AttentionShape, inputs: [&B::Buf; 6], grads: [&B::Buf; 3]) -> Result<()> {
    let [q, k, v, out, lse, dout] = inputs;
    let [dq, dk, dv] = grads;
    let t = [
        named::<B>("q", q),
        named::<B>("k", k),
        named::<B>("v", v),
        named::<B>("out", out),
        named::<B>("dout", dout),
        named::<B>("dq", dq),
        named::<B>("dk", dk),
        named::<B>("dv", dv),
    ];
    attention("attention_bwd", s, &t, B::len(lse))
}
