//! The `ddpm` subcommands.

pub mod device;
pub mod grads;
pub mod train;
