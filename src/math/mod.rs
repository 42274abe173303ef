//! Shared math: the definitions every backend, the data loader, the trainer and the sampler must
//! compute identically, kept apart from src/cpu (which holds only the CPU references of the ops).
//!
//! - [`philox`]: the counter-based generator behind all of the engine's noise (kernels/philox.cuh
//!   is the same arithmetic on the device);
//! - [`torch_rng`] (with [`cephes_f32`]): PyTorch's CPU generator, for noise that matches
//!   diffusers' pipelines;
//! - [`adamw`]: the constants of one AdamW step, computed once on the host for every backend.
//!
//! The length and shape checks are not here: they sit with the shapes they check, in
//! src/shapes.rs ([`crate::shapes::same_len`], [`crate::shapes::lengths`] and each shape's
//! `validate`), a leaf module that the launchers (src/cuda), the references and the backends all
//! import without depending on one another; the per-op argument checks of the layer ops built on
//! them are src/backend/checks.rs.

pub mod adamw;
pub mod cephes_f32;
pub mod philox;
pub mod torch_rng;
