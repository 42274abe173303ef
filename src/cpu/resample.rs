//! Reference of kernels/resample.cu: residual adds, per-image channel broadcast, nearest 2x upsampling, channel concatenation.
//! STUB: to be implemented.
#![allow(unused_variables)]

use super::Real;
use crate::shapes::ImageShape;

pub fn add_scaled<T: Real>(a: &[T], b: &[T], divisor: f32, y: &mut [T]) {
    todo!("resample reference")
}

pub fn div_scalar<T: Real>(x: &[T], divisor: f32, y: &mut [T]) {
    todo!("resample reference")
}

pub fn add_channel_bias<T: Real>(s: &ImageShape, x: &[T], v: &[T], y: &mut [T]) {
    todo!("resample reference")
}

pub fn channel_sum<T: Real>(s: &ImageShape, dy: &[T], dv: &mut [T]) {
    todo!("resample reference")
}

pub fn upsample_nearest2x_fwd<T: Real>(s: &ImageShape, x: &[T], y: &mut [T]) {
    todo!("resample reference")
}

pub fn upsample_nearest2x_bwd<T: Real>(s: &ImageShape, dy: &[T], dx: &mut [T]) {
    todo!("resample reference")
}

pub fn concat_channels<T: Real>(rows: usize, c1: usize, c2: usize, a: &[T], b: &[T], y: &mut [T]) {
    todo!("resample reference")
}

pub fn split_channels<T: Real>(rows: usize, c1: usize, c2: usize, dy: &[T], da: &mut [T], db: &mut [T]) {
    todo!("resample reference")
}
