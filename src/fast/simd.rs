//! Which SIMD instructions this CPU has, detected at run time. The `gemm` crate picks its own
//! microkernels the same way (AVX-512, AVX2+FMA, or portable code); our elementwise loops are
//! compiled per level with `#[target_feature]` and chosen by [`SimdLevel::active`]: the detected
//! level, or a lower one forced by [`SimdLevel::force`] so tests can run every compiled variant.

use std::sync::atomic::{AtomicU8, Ordering};

/// The level forced by [`SimdLevel::force`], as `level as u8`; `NOT_FORCED` when none is.
static FORCED: AtomicU8 = AtomicU8::new(NOT_FORCED);
const NOT_FORCED: u8 = u8::MAX;

/// The best instruction set the fast path can use here, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Portable,
    Avx2Fma,
    Avx512,
}

impl SimdLevel {
    pub fn detect() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return SimdLevel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return SimdLevel::Avx2Fma;
            }
        }
        SimdLevel::Portable
    }

    /// The level dispatched code runs: the detected one, capped by a forced one.
    pub fn active() -> SimdLevel {
        let detected = SimdLevel::detect();
        match FORCED.load(Ordering::Relaxed) {
            NOT_FORCED => detected,
            forced => detected.min(SimdLevel::ALL[forced as usize]),
        }
    }

    /// Caps the level dispatched code runs at `level` (never above the detected one), for the whole
    /// process; `None` lifts the cap. For tests: every variant computes the same bits (the bodies
    /// are plain Rust, compiled per instruction set without reassociation), so a test running
    /// alongside one that forces a level still sees its expected results.
    pub fn force(level: Option<SimdLevel>) {
        FORCED.store(level.map_or(NOT_FORCED, |l| l as u8), Ordering::Relaxed);
    }

    /// Every level, worst first; `ALL[level as usize] == level`.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Portable, SimdLevel::Avx2Fma, SimdLevel::Avx512];

    /// The levels this CPU can run, worst first.
    pub fn available() -> impl Iterator<Item = SimdLevel> {
        SimdLevel::ALL.into_iter().filter(|&l| l <= SimdLevel::detect())
    }

    /// Whether the CPU has the AVX-512 bf16 dot-product instructions (for the bf16 path).
    pub fn has_avx512_bf16() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// One line for `ddpm devices` and bench output.
    pub fn describe() -> String {
        let level = match SimdLevel::detect() {
            SimdLevel::Avx512 => "AVX-512",
            SimdLevel::Avx2Fma => "AVX2+FMA",
            SimdLevel::Portable => "portable (no AVX2)",
        };
        let bf16 = if SimdLevel::has_avx512_bf16() { ", AVX-512 BF16" } else { "" };
        format!("{level}{bf16}, {} threads", rayon::current_num_threads())
    }
}

/// Compiles `$body` (a block using only its arguments) three times, for AVX-512, AVX2+FMA and
/// portable code, and runs [`SimdLevel::active`]'s. The body is plain Rust: the compiler
/// vectorises it for each instruction set.
#[macro_export]
macro_rules! simd_dispatch {
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $body
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $body
                match $crate::fast::simd::SimdLevel::active() {
                    // SAFETY: the CPU has the features these functions were compiled for.
                    $crate::fast::simd::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::fast::simd::SimdLevel::Avx2Fma => return unsafe { avx2($($arg),*) },
                    $crate::fast::simd::SimdLevel::Portable => {}
                }
            }
            $body
        }
    };
}
