//! Shapes of the layer ops. Activations are NHWC (channels innermost), so an image batch is
//! [batch, height, width, channels] and a token batch [batch, tokens, features]. Convolution
//! weights are OHWI, [out_c, kh, kw, in_c]; linear weights are PyTorch's [out, in].
//!
//! The buffer-length checks live here too, beside the shapes whose sizes they enforce: this is a
//! leaf module, so the launchers (src/cuda), the references and every backend share them without
//! depending on one another, and a wrong size is the same error on every backend.

use anyhow::{Result, bail};

/// The buffers must hold the same number of elements: "{op}: {name} has {len} elements but
/// {first} has {n}", naming the first that differs from the first listed.
pub fn same_len(op: &str, what: &[(&str, usize)]) -> Result<()> {
    let (first, n) = what[0];
    for &(name, len) in &what[1..] {
        if len != n {
            bail!("{op}: {name} has {len} elements but {first} has {n}");
        }
    }
    Ok(())
}

/// Each (name, actual length, expected length) must agree.
pub fn lengths(op: &str, what: &[(&str, usize, usize)]) -> Result<()> {
    for &(name, got, want) in what {
        if got != want {
            bail!("{op}: {name} has {got} elements, the shape needs {want}");
        }
    }
    Ok(())
}

/// Zero padding on each side of the input, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn same(p: usize) -> Self {
        Padding { top: p, bottom: p, left: p, right: p }
    }
}

/// A 2-D convolution over an NHWC batch with square kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: Padding,
}

impl Conv2dShape {
    /// 3x3, stride 1, padding 1: the UNet's main convolution.
    pub fn conv3x3(batch: usize, h: usize, w: usize, in_c: usize, out_c: usize) -> Self {
        Conv2dShape { batch, in_h: h, in_w: w, in_c, out_c, kernel: 3, stride: 1, pad: Padding::same(1) }
    }
    /// 1x1 (ResNet shortcuts).
    pub fn conv1x1(batch: usize, h: usize, w: usize, in_c: usize, out_c: usize) -> Self {
        Conv2dShape { batch, in_h: h, in_w: w, in_c, out_c, kernel: 1, stride: 1, pad: Padding::default() }
    }
    /// diffusers' Downsample2D convolution: 3x3, stride 2. `downsample_padding` 1 pads every side
    /// by one; 0 pads only right and bottom by one (then convolves with padding 0).
    pub fn downsample(batch: usize, h: usize, w: usize, in_c: usize, out_c: usize, downsample_padding: usize) -> Self {
        let pad = if downsample_padding == 0 {
            Padding { top: 0, bottom: 1, left: 0, right: 1 }
        } else {
            Padding::same(downsample_padding)
        };
        Conv2dShape { batch, in_h: h, in_w: w, in_c, out_c, kernel: 3, stride: 2, pad }
    }
    pub fn out_h(&self) -> usize {
        (self.in_h + self.pad.top + self.pad.bottom - self.kernel) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.in_w + self.pad.left + self.pad.right - self.kernel) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }
    pub fn y_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.out_c
    }
    pub fn w_len(&self) -> usize {
        self.out_c * self.kernel * self.kernel * self.in_c
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        self.y_len() * self.kernel * self.kernel * self.in_c
    }
    pub fn validate(&self) -> Result<()> {
        let padded_h = self.in_h + self.pad.top + self.pad.bottom;
        let padded_w = self.in_w + self.pad.left + self.pad.right;
        if self.batch == 0 || self.in_c == 0 || self.out_c == 0 || self.kernel == 0 || self.stride == 0 {
            bail!("conv2d: empty shape {self:?}");
        }
        if padded_h < self.kernel || padded_w < self.kernel {
            bail!("conv2d: a {}x{} kernel does not fit a padded {padded_h}x{padded_w} input", self.kernel, self.kernel);
        }
        Ok(())
    }
}

/// GroupNorm over an NHWC batch: statistics per (image, group), channels split into `groups`
/// contiguous groups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub batch: usize,
    /// Pixels (or tokens) per image.
    pub hw: usize,
    pub channels: usize,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNormShape {
    pub fn len(&self) -> usize {
        self.batch * self.hw * self.channels
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Entries of the saved mean / rstd: one per (image, group).
    pub fn stats_len(&self) -> usize {
        self.batch * self.groups
    }
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.hw == 0 || self.channels == 0 || self.groups == 0 {
            bail!("group_norm: empty shape {self:?}");
        }
        if !self.channels.is_multiple_of(self.groups) {
            bail!("group_norm: {} channels do not split into {} groups", self.channels, self.groups);
        }
        if !(self.eps > 0.0) {
            bail!("group_norm: eps must be positive, got {}", self.eps);
        }
        Ok(())
    }
}

/// y[rows, out] = x[rows, in] W^T + b, W stored [out, in].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearShape {
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 || self.in_features == 0 || self.out_features == 0 {
            bail!("linear: empty shape {self:?}");
        }
        Ok(())
    }
}

/// Multi-head attention over token batches: q, k, v and the output are [batch, tokens,
/// heads * head_dim], head h occupying features [h * head_dim, (h + 1) * head_dim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn len(&self) -> usize {
        self.batch * self.tokens * self.heads * self.head_dim
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Entries of the saved row statistics (log-sum-exp per query row): [batch, heads, tokens].
    pub fn lse_len(&self) -> usize {
        self.batch * self.heads * self.tokens
    }
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.tokens == 0 || self.heads == 0 || self.head_dim == 0 {
            bail!("attention: empty shape {self:?}");
        }
        Ok(())
    }
}

/// An NHWC image batch's dimensions, for the shape-only ops (upsampling, concatenation,
/// per-image channel broadcast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.batch * self.h * self.w * self.c
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
