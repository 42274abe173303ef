//! Reference of kernels/embedding.cu: diffusers' sinusoidal timestep embedding.
//! STUB: to be implemented.
#![allow(unused_variables)]

use super::Real;


pub fn timestep_embedding<T: Real>(t: &[T], dim: usize, flip_sin_to_cos: bool, freq_shift: f32, y: &mut [T]) {
    todo!("embedding reference")
}
