//! Buffer-length checks of the layer ops, shared by both backends so a wrong size is the same
//! clear error on the CPU and on a GPU (a kernel would read out of bounds instead).

pub use crate::shapes::lengths;
use crate::shapes::{AttentionShape, Conv2dShape, GroupNormShape, ImageShape, LinearShape};
use anyhow::{Result, bail};

fn opt(name: &'static str, got: Option<usize>, want: usize) -> Option<(&'static str, usize, usize)> {
    got.map(|g| (name, g, want))
}

/// Names the tensors as the op does (the backward passes give dx, dw, dy).
pub type Named<'a> = (&'a str, usize);

pub fn conv2d(op: &str, s: &Conv2dShape, x: Named, w: Named, b: Option<Named>, y: Named) -> Result<()> {
    s.validate()?;
    let mut v = vec![(x.0, x.1, s.x_len()), (w.0, w.1, s.w_len()), (y.0, y.1, s.y_len())];
    v.extend(b.map(|(n, l)| (n, l, s.out_c)));
    lengths(op, &v)
}

pub fn group_norm(
    s: &GroupNormShape,
    x: usize,
    gamma: Option<usize>,
    beta: Option<usize>,
    y: usize,
    stats: [usize; 2],
) -> Result<()> {
    s.validate()?;
    let mut v = vec![
        ("x", x, s.len()),
        ("y", y, s.len()),
        ("mean", stats[0], s.stats_len()),
        ("rstd", stats[1], s.stats_len()),
    ];
    v.extend(opt("gamma", gamma, s.channels));
    v.extend(opt("beta", beta, s.channels));
    lengths("group_norm", &v)
}

pub fn linear(op: &str, s: &LinearShape, x: Named, w: Named, b: Option<Named>, y: Named) -> Result<()> {
    s.validate()?;
    let mut v = vec![
        (x.0, x.1, s.rows * s.in_features),
        (w.0, w.1, s.out_features * s.in_features),
        (y.0, y.1, s.rows * s.out_features),
    ];
    v.extend(b.map(|(n, l)| (n, l, s.out_features)));
    lengths(op, &v)
}

pub fn image(op: &str, s: &ImageShape, what: &[(&str, usize, usize)]) -> Result<()> {
    if s.is_empty() {
        bail!("{op}: empty shape {s:?}");
    }
    lengths(op, what)
}

pub fn attention(op: &str, s: &AttentionShape, tensors: &[(&str, usize)], lse: usize) -> Result<()> {
    s.validate()?;
    let mut v: Vec<_> = tensors.iter().map(|&(n, l)| (n, l, s.len())).collect();
    v.push(("lse", lse, s.lse_len()));
    lengths(op, &v)
}
