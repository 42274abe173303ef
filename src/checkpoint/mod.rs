//! Checkpoints: safetensors tensors, diffusers model folders and atomic writes.

pub mod model;
pub mod tensors;

pub use tensors::{Tensor, atomic_write, modernize_name, read_tensors, write_if_changed, write_tensors};
