//! Which SIMD instructions this CPU has, detected at run time. Every hot loop of the fast path
//! (the GEMM microkernels of src/fast/gemm.rs and our elementwise loops, compiled per level with
//! `#[target_feature]`) runs [`SimdLevel::active`]'s variant: the detected level, capped by
//! `DDPM_SIMD` (for A/B runs of one binary) or by [`SimdLevel::force`] (for tests).
//!
//! The highest level is the fastest measured on every machine kind measured so far: the AVX-512
//! GEMM kernels gave 1.6x the AVX2 ones' speed on a core with 512-bit FMA units (Zen 5 class,
//! issue #11) and 1.04x on a double-pumped one (Zen 4 class, docs/worklog.md); see src/fast/gemm.rs.

use std::sync::OnceLock;
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
    /// A level counts as present when the CPU has every feature its GEMM kernels need (pulp's
    /// x86-64-v4 set: AVX-512 F/BW/CD/DQ/VL; v3: AVX2, FMA, BMI1/2, LZCNT, ...), which covers what
    /// our own loops are compiled for (AVX-512F, or AVX2+FMA). Read once.
    pub fn detect() -> SimdLevel {
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use gemm_common::simd::{V3, V4};
                if V4::try_new().is_some() {
                    return SimdLevel::Avx512;
                }
                if V3::try_new().is_some() {
                    return SimdLevel::Avx2Fma;
                }
            }
            SimdLevel::Portable
        })
    }

    /// The level dispatched code runs: the detected one, capped by `DDPM_SIMD` and by a forced one.
    pub fn active() -> SimdLevel {
        let cap = SimdLevel::from_env().ok().copied().flatten();
        let forced = match FORCED.load(Ordering::Relaxed) {
            NOT_FORCED => None,
            forced => Some(SimdLevel::ALL[forced as usize]),
        };
        SimdLevel::resolve(SimdLevel::detect(), cap, forced)
    }

    /// The dispatch policy: the best level the CPU has (the fastest measured on every machine
    /// kind; see the module docs), capped by `DDPM_SIMD` and by a forced level.
    pub fn resolve(detected: SimdLevel, env_cap: Option<SimdLevel>, forced: Option<SimdLevel>) -> SimdLevel {
        [env_cap, forced].into_iter().flatten().fold(detected, SimdLevel::min)
    }

    /// The cap set by `DDPM_SIMD` (portable, avx2 or avx512), read once; an error names a bad
    /// value or a level this CPU does not have (the CLI refuses to start on it).
    pub fn from_env() -> Result<&'static Option<SimdLevel>, &'static str> {
        static ENV: OnceLock<Result<Option<SimdLevel>, String>> = OnceLock::new();
        let parsed = ENV.get_or_init(|| {
            let Ok(value) = std::env::var("DDPM_SIMD") else { return Ok(None) };
            let level =
                SimdLevel::parse(&value).ok_or_else(|| format!("DDPM_SIMD={value:?}: use portable, avx2 or avx512"))?;
            if level > SimdLevel::detect() {
                return Err(format!("DDPM_SIMD={value}: this CPU has only {}", SimdLevel::detect().name()));
            }
            Ok(Some(level))
        });
        parsed.as_ref().map_err(|e| e.as_str())
    }

    /// The level named `portable`, `avx2` or `avx512`.
    pub fn parse(name: &str) -> Option<SimdLevel> {
        match name {
            "portable" => Some(SimdLevel::Portable),
            "avx2" => Some(SimdLevel::Avx2Fma),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Avx512 => "AVX-512",
            SimdLevel::Avx2Fma => "AVX2+FMA",
            SimdLevel::Portable => "portable (no AVX2)",
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

    /// One line for `ddpm devices` and bench output: the level the kernels run (and what the CPU
    /// has, when that is more), the measured FMA width of AVX-512, bf16 support, the GEMM
    /// microkernels and the threads.
    pub fn describe() -> String {
        let (detected, active) = (SimdLevel::detect(), SimdLevel::active());
        let mut line = active.name().to_string();
        if active == SimdLevel::Avx512 {
            let width = match avx512_fma_width() {
                Some(512) => " (512-bit units)",
                Some(_) => " (256-bit units, double-pumped)",
                None => "",
            };
            line.push_str(width);
        }
        if active < detected {
            line = format!("{line} (capped; the CPU has {})", detected.name());
        }
        if SimdLevel::has_avx512_bf16() {
            // --precision bf16 multiplies with vdpbf16ps only at the AVX-512 level (src/fast/bf16.rs).
            let gain = vdpbf16ps_gain().unwrap_or(0.0);
            let used = if super::gemm_bf16::Bf16Kernel::native().is_none() {
                "not used at this level".to_string()
            } else if super::bf16::native_pays() {
                format!("bf16 products by vdpbf16ps, measured {gain:.2}x the FMA's rate")
            } else {
                format!("vdpbf16ps measured {gain:.2}x the FMA's rate: not used; bf16 operands, f32 products")
            };
            line.push_str(&format!(", AVX-512 BF16 ({used})"));
        }
        if super::amx::available() {
            let used = match (super::gemm_bf16::Bf16Kernel::amx().is_some(), super::amx::opted_in()) {
                (true, true) => "bf16 products",
                (true, false) => "off by default until checked on AMX hardware: DDPM_AMX=1",
                (false, _) => "not used at this level",
            };
            line.push_str(&format!(", AMX-BF16 (tdpbf16ps: {used})"));
        }
        let threads = rayon::current_num_threads();
        // What `ddpm` commands do between ops (src/fast/threads.rs), so A/B runs name it.
        let idle = match (threads > 1, super::threads::spin_enabled()) {
            (false, _) => "",
            (true, true) => ", polling between ops (DDPM_SPIN=0 parks them)",
            (true, false) => ", parked between ops (DDPM_SPIN=0)",
        };
        format!("{line}; GEMM: {}; {threads} threads{idle}", super::gemm::kernel_name(active))
    }
}

/// One core's multiply-add rates, in GMAC/s, measured once (register-only independent chains,
/// best of 7 runs; ~0.3 ms in all): what the SIMD and bf16 choices rest on, since CPUID says
/// nothing about how many units execute an instruction and model tables go stale.
#[derive(Clone, Copy, Debug)]
pub struct Peaks {
    /// `vfmadd231ps` zmm (16 MACs).
    pub fma512: f64,
    /// `vfmadd231ps` ymm (8 MACs).
    pub fma256: f64,
    /// `vdpbf16ps` zmm (32 MACs); None without AVX-512 BF16.
    pub dpbf16: Option<f64>,
}

/// [`Peaks`] where the CPU has AVX-512; None elsewhere.
pub fn avx512_peaks() -> Option<Peaks> {
    static PEAKS: OnceLock<Option<Peaks>> = OnceLock::new();
    *PEAKS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if SimdLevel::detect() == SimdLevel::Avx512 {
            use fma_width::{CHAINS, ITERS};
            let gmacs = |macs: usize, secs: f64| (ITERS * macs) as f64 / secs / 1e9;
            // SAFETY: the CPU has AVX-512F (and so AVX2 and FMA), and AVX-512 BF16 where asked.
            let fma512 = gmacs(CHAINS * 16, best_of_7(&|| unsafe { fma_width::chains512() }));
            let fma256 = gmacs(CHAINS * 8, best_of_7(&|| unsafe { fma_width::chains256() }));
            let dpbf16 = SimdLevel::has_avx512_bf16()
                .then(|| gmacs(2 * CHAINS * 32, best_of_7(&|| unsafe { fma_width::chains_dpbf16() })));
            return Some(Peaks { fma512, fma256, dpbf16 });
        }
        None
    })
}

/// The FMA width of this CPU's AVX-512, from [`avx512_peaks`]: 512 where a 512-bit FMA issues
/// as fast as a 256-bit one (full-width units), 256 where it takes about twice as long
/// (double-pumped, as on Zen 4, or one fused 512-bit port as on client Intel cores). None
/// without AVX-512.
pub fn avx512_fma_width() -> Option<u32> {
    // Full width: a zmm FMA's time under 1.5 ymm FMAs' (the rate of MACs over 2 / 1.5 times).
    avx512_peaks().map(|p| if p.fma512 > p.fma256 * 2.0 / 1.5 { 512 } else { 256 })
}

/// Multiply-adds per second of `vdpbf16ps` over `vfmadd231ps`' (zmm), from [`avx512_peaks`]:
/// what the packed bf16 kernel can gain over the f32 GEMMs at best (src/fast/bf16.rs chooses by
/// it). None without AVX-512 BF16. An AVX-512 BF16 Xeon with two FMA units measured 0.48 (one
/// vdpbf16ps every other cycle); a core issuing it as fast as an FMA would give 2.
pub fn vdpbf16ps_gain() -> Option<f64> {
    avx512_peaks().and_then(|p| p.dpbf16.map(|d| d / p.fma512))
}

/// The shortest of 7 runs of `f`, in seconds.
#[cfg(target_arch = "x86_64")]
fn best_of_7(f: &dyn Fn() -> f32) -> f64 {
    (0..7)
        .map(|_| {
            let t = std::time::Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(target_arch = "x86_64")]
mod fma_width {
    use std::arch::x86_64::*;

    /// 12 independent dependency chains: enough to fill two FMA pipes of 4-5 cycles latency, so
    /// the time measures issue throughput, not latency. (16 chains measured 25-35% less on an
    /// AVX-512 Xeon, at both widths.)
    pub const CHAINS: usize = 12;
    pub const ITERS: usize = 20_000;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains512() -> f32 {
        let (a, b) = (_mm512_set1_ps(std::hint::black_box(0.999)), _mm512_set1_ps(std::hint::black_box(0.001)));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// As [`chains512`] with `vdpbf16ps` and twice the chains (every pair word (1, 1): exact, so
    /// nothing overflows).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn chains_dpbf16() -> f32 {
        let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0x3f80_3f80))) };
        // Twice the FMA's chains: its latency may be longer, and the rate, not latency, is asked.
        let mut acc = [_mm512_setzero_ps(); 2 * CHAINS];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, a);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains256() -> f32 {
        let (a, b) = (_mm256_set1_ps(std::hint::black_box(0.999)), _mm256_set1_ps(std::hint::black_box(0.001)));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let mut total = 0.0;
        for v in acc {
            // SAFETY: `lanes` holds 8 f32s.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            total += lanes.iter().sum::<f32>();
        }
        total
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
