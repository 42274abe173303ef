//! The DDPM UNet exactly as diffusers' UNet2DModel builds it: configuration, parameters, and the
//! forward and backward passes written against the backend's ops.

pub mod blocks;
pub mod config;
pub mod convs;
mod flops;
pub mod params;
pub mod structure;
pub mod tape;
pub mod time_embedding;
pub mod unet;
pub mod weights;

pub use config::UNetConfig;
pub use params::{ParamKind, ParamSpec, parameter_count, parameter_specs};
