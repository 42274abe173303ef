//! The diffusion process on the host: noise schedules, scheduler configuration, inference
//! timesteps and the per-step scalars of DDPM and DDIM sampling. The element-wise math runs in
//! kernels/diffusion.cu (CUDA backend) or src/cpu/diffusion.rs (CPU backend).

pub mod checks;
pub mod config;
pub mod ddim;
pub mod ddpm;
pub mod schedule;
pub mod solver;
pub mod step_table;
pub mod timesteps;

pub use config::{ConfigClass, PredictionType, SchedulerConfig, TimestepSpacing, VarianceType};
pub use ddim::{DdimScheduler, DdimStep};
pub use ddpm::{DdpmScheduler, DdpmStep};
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use step_table::{Step, StepTable};

/// A stream of the counter-based generator: element i of it is drawn from (seed, offset, i).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhiloxStream {
    pub seed: u64,
    pub offset: u64,
}

/// Where a kernel's Gaussian noise comes from: generated in place from a Philox stream (the
/// engine's default: nothing stored), or given explicitly (torch-compatible sampling draws it on
/// the host; tests pass diffusers' own noise).
#[derive(Clone, Copy, Debug)]
pub enum Noise<T> {
    Philox(PhiloxStream),
    Given(T),
}

/// sqrt(abar_t) and sqrt(1 - abar_t) for every t, resident on a backend for the noising kernel.
pub struct ScheduleTables<B> {
    pub sqrt_abar: B,
    pub sqrt_one_minus_abar: B,
    pub len: usize,
}
