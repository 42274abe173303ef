//! Fast elementwise and data-movement ops: SiLU, residual adds, channel bias and sums,
//! upsampling, channel concat/split, axpy and fill (references: src/cpu/{silu,resample,
//! elementwise}.rs). (Placeholder bodies run the references until the parallel versions land.)

use crate::cpu::{elementwise, resample, silu};
use crate::shapes::ImageShape;

pub fn fill(out: &mut [f32], value: f32) {
    elementwise::fill(out, value)
}
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    elementwise::axpy(a, x, y)
}
pub fn silu_fwd(x: &[f32], y: &mut [f32]) {
    silu::silu_fwd(x, y)
}
pub fn silu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    silu::silu_bwd(x, dy, dx)
}
pub fn add_scaled(a: &[f32], b: &[f32], divisor: f32, y: &mut [f32]) {
    resample::add_scaled(a, b, divisor, y)
}
pub fn div_scalar(x: &[f32], divisor: f32, y: &mut [f32]) {
    resample::div_scalar(x, divisor, y)
}
pub fn add_channel_bias(s: &ImageShape, x: &[f32], v: &[f32], y: &mut [f32]) {
    resample::add_channel_bias(s, x, v, y)
}
pub fn channel_sum(s: &ImageShape, dy: &[f32], dv: &mut [f32]) {
    resample::channel_sum(s, dy, dv)
}
pub fn upsample_nearest2x_fwd(s: &ImageShape, x: &[f32], y: &mut [f32]) {
    resample::upsample_nearest2x_fwd(s, x, y)
}
pub fn upsample_nearest2x_bwd(s: &ImageShape, dy: &[f32], dx: &mut [f32]) {
    resample::upsample_nearest2x_bwd(s, dy, dx)
}
pub fn concat_channels(rows: usize, c1: usize, c2: usize, a: &[f32], b: &[f32], y: &mut [f32]) {
    resample::concat_channels(rows, c1, c2, a, b, y)
}
pub fn split_channels(rows: usize, c1: usize, c2: usize, dy: &[f32], da: &mut [f32], db: &mut [f32]) {
    resample::split_channels(rows, c1, c2, dy, da, db)
}
