//! ddpm: DDPM diffusion models on hand-written CUDA kernels, with a CPU emulator that runs the same
//! kernels where there is no GPU and a pure-Rust CPU backend that is the numerical reference.
//!
//! - [`gpu`]: the device runtime (CUDA or emulator), buffers, the caching pool, kernel launches.
//! - [`backend`]: the op-level seam model code is written against, with CPU and CUDA backends.
//! - [`cpu`]: the CPU reference of every op; [`cuda`]: the launchers of the matching kernels.
//! - [`math`]: what every backend computes alike: Philox, PyTorch's generator, AdamW's step
//!   constants; [`shapes`]: the ops' shapes and the buffer-length checks.
//! - [`layout`]: NCHW/OIHW (PyTorch) to NHWC/OHWI (ours) at the edges.
//! - [`testing`]: element-wise comparison used by tests and benches.
//! - [`workbench`]: kernel variants per op, checked against [`cpu`] and timed side by side
//!   (`ddpm kernels --check/--bench`, docs/kernels.md).

// `!(x > 0.0)` is how this crate rejects NaN along with non-positive values; clippy's suggested
// rewrite would let NaN through.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod diffusion;
pub mod dist;
pub mod fast;
pub mod finite;
pub mod fuzz;
pub mod gpu;
pub mod json_keys;
pub mod layout;
pub mod math;
pub mod model;
pub mod npy;
pub mod oneline;
pub mod sample;
pub mod shapes;
pub mod testing;
pub mod train;
pub mod workbench;
