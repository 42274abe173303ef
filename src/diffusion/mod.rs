//! The diffusion process on the host: noise schedules, scheduler configuration, inference
//! timesteps and the per-step scalars of DDPM and DDIM sampling. The element-wise math runs in
//! kernels/diffusion.cu (CUDA backend) or src/cpu/diffusion.rs (CPU backend).

pub mod config;
pub mod ddim;
pub mod ddpm;
pub mod schedule;
pub mod timesteps;

pub use config::{PredictionType, SchedulerConfig, TimestepSpacing, VarianceType};
pub use ddim::{DdimScheduler, DdimStep};
pub use ddpm::{DdpmScheduler, DdpmStep};
pub use schedule::{BetaSchedule, NoiseSchedule};
