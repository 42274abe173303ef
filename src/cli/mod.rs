//! The `ddpm` subcommands.

pub mod bench;
pub mod demo;
pub mod device;
pub mod grads;
pub mod kernels;
pub mod sample;
pub mod train;
