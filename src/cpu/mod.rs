//! The CPU reference: the readable statement of each op's math, in plain Rust. It is the oracle
//! every kernel is tested against and the CPU backend's execution path. Files mirror kernels/.

pub mod cephes_f32;
pub mod diffusion;
pub mod elementwise;
pub mod philox;
pub mod reduce;
pub mod silu;
pub mod torch_rng;

/// The float types the references are written for: f32 (what the kernels compute) and f64 (what
/// gradient checks differentiate).
pub trait Real: Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self> + std::ops::Neg<Output = Self> + PartialOrd {
    const ONE: Self;
    fn exp(self) -> Self;
}
impl Real for f32 {
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f32::exp(self)
    }
}
impl Real for f64 {
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f64::exp(self)
    }
}
