//! The `ddpm` subcommands.

pub mod demo;
pub mod device;
pub mod grads;
pub mod sample;
pub mod train;
