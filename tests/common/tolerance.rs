//! The tolerance rule of the GroupNorm and Linear checks and their error reports: what
//! tests/common/group_norm_checks.rs and tests/common/linear_checks.rs share.

use ddpm::backend::Backend;
use ddpm::testing::{assert_close, rms, tol};

/// Tolerance of every comparison here: |got - want| <= ATOL_SCALE * rms(want) + F32_RTOL * |want|.
/// f32 rounding errors of these ops scale with the magnitude of the values they combine (sums of
/// products, normalised values), which the tensor's rms measures; 1e-5 of it leaves a wide
/// margin over the fixed-order f32 sums (a few ulps of the partial sums) while still failing any
/// wrong term. PyTorch's CPU math is not correctly rounded either, so the same rule serves both.
pub const ATOL_SCALE: f32 = 1e-5;

/// A tensor's typical magnitude: its root mean square.
/// The largest absolute error, the largest error relative to |want| (over nonzero want), and
/// the largest fraction of the allowed error any element used.
#[derive(Clone, Copy, Default, Debug)]
pub struct Errors {
    pub abs: f32,
    pub rel: f32,
    pub used: f32,
}

impl Errors {
    pub fn max(self, o: Errors) -> Errors {
        Errors { abs: self.abs.max(o.abs), rel: self.rel.max(o.rel), used: self.used.max(o.used) }
    }
}

/// Asserts every element within tolerance (see ATOL_SCALE) and returns the errors for the report.
#[track_caller]
pub fn check(what: &str, got: &[f32], want: &[f32]) -> Errors {
    check_at_scale(what, got, want, rms(want))
}

/// As [`check`], with atol = ATOL_SCALE * `scale` for a tensor whose own rms is not the scale of
/// its rounding errors (a mean of values near zero: its errors scale with the values averaged).
#[track_caller]
pub fn check_at_scale(what: &str, got: &[f32], want: &[f32], scale: f32) -> Errors {
    let atol = ATOL_SCALE * scale;
    assert_close(what, got, want, atol, tol::F32_RTOL);
    let mut e = Errors::default();
    for (&g, &w) in got.iter().zip(want) {
        let err = (g - w).abs();
        e.abs = e.abs.max(err);
        e.used = e.used.max(err / (atol + tol::F32_RTOL * w.abs()));
        if w != 0.0 {
            e.rel = e.rel.max(err / w.abs());
        }
    }
    e
}

/// Per-tensor errors, accumulated over cases, in first-seen order (for the report lines).
#[derive(Default)]
pub struct Report(pub Vec<(String, Errors)>);

impl Report {
    pub fn add(&mut self, name: &str, e: Errors) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, acc)) => *acc = acc.max(e),
            None => self.0.push((name.to_string(), e)),
        }
    }
    pub fn say(&self, title: &str) {
        for (name, e) in &self.0 {
            let used = 100.0 * e.used;
            super::say(&format!(
                "{title} {name}: largest abs error {:.3e}, rel {:.3e} ({used:.0}% of the tolerance)",
                e.abs, e.rel
            ));
        }
    }
}

pub fn nan<B: Backend>(b: &B, n: usize) -> B::Buf {
    b.upload(&vec![f32::NAN; n]).unwrap()
}

pub fn up<B: Backend>(b: &B, v: &[f32]) -> B::Buf {
    b.upload(v).unwrap()
}
