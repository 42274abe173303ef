//! Element-wise comparison for tests and benches: every element must satisfy
//! |got - want| <= atol + rtol * |want|; a failure reports the count, the worst index and the
//! largest absolute and relative errors. NaN anywhere in `got` (e.g. an output the kernel never
//! wrote, left as the NaN poison) fails.

use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Tolerances per dtype, written once.
pub mod tol {
    /// f32 elementwise ops: a few ulps of rounding difference between host and device math.
    pub const F32_ATOL: f32 = 1e-6;
    pub const F32_RTOL: f32 = 1e-5;
}

#[derive(Debug)]
pub struct Mismatch {
    pub count: usize,
    pub worst_index: usize,
    pub got: f32,
    pub want: f32,
    pub max_abs: f32,
    pub max_rel: f32,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} elements out of tolerance; worst at index {}: got {} want {} (max abs err {:.3e}, max rel err {:.3e})",
            self.count, self.worst_index, self.got, self.want, self.max_abs, self.max_rel
        )
    }
}

pub fn compare(got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Result<(), Mismatch> {
    assert_eq!(got.len(), want.len(), "compare: lengths differ");
    let mut count = 0;
    let (mut worst, mut worst_excess) = (0, -1.0f32);
    let (mut max_abs, mut max_rel) = (0f32, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let allowed = atol + rtol * w.abs();
        let excess = if err.is_nan() { f32::INFINITY } else { err - allowed };
        if !(err <= allowed) {
            count += 1;
        }
        if excess > worst_excess {
            worst_excess = excess;
            worst = i;
        }
        max_abs = max_abs.max(if err.is_nan() { f32::INFINITY } else { err });
        if w != 0.0 {
            max_rel = max_rel.max(err / w.abs());
        }
    }
    if count == 0 {
        return Ok(());
    }
    Err(Mismatch { count, worst_index: worst, got: got[worst], want: want[worst], max_abs, max_rel })
}

/// Panics with the mismatch report, naming `what`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    if let Err(m) = compare(got, want, atol, rtol) {
        panic!("{what}: {m}");
    }
}

/// Fresh uniform values in [lo, hi), never all zero.
pub fn random_vec(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A generator seeded from the test name, so every test sees different but reproducible data.
pub fn rng_for(name: &str) -> StdRng {
    let seed = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    StdRng::seed_from_u64(seed)
}

/// The one line a GPU test or bench prints when it cannot open a CUDA device.
pub fn no_device_line(e: &anyhow::Error) -> String {
    let reason = format!("{e:#}");
    format!("skipped: no CUDA device ({})", reason.trim_start_matches("no CUDA device: "))
}

/// Whether a CUDA device is required (`DDPM_REQUIRE_GPU=1`, which scripts/gpu-check sets).
pub fn gpu_required() -> bool {
    std::env::var("DDPM_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The CUDA device for a GPU test or bench, or the "skipped: no CUDA device (...)" line to print
/// instead. The skip only where the machine has no device to open (no driver, no GPU) and
/// `DDPM_REQUIRE_GPU=1` is not set; an error where a device exists but does not open (a module
/// that does not load, no code for this GPU) or where one is required and none opens: a first run
/// on a GPU machine must not pass by skipping.
pub fn cuda_or_skip_line() -> anyhow::Result<Result<crate::gpu::Gpu, String>> {
    match crate::gpu::Gpu::cuda(0) {
        Ok(gpu) => Ok(Ok(gpu)),
        Err(e) if e.downcast_ref::<crate::gpu::NoCudaDevice>().is_some() && !gpu_required() => {
            Ok(Err(no_device_line(&e)))
        }
        Err(e) => Err(e.context(if gpu_required() {
            "DDPM_REQUIRE_GPU=1 and the CUDA device did not open"
        } else {
            "a CUDA device is present but did not open"
        })),
    }
}

/// As [`cuda_or_skip_line`], printing the skip line (to stderr itself: the test harness captures
/// `eprintln!`) and returning `None` when skipping.
pub fn cuda_or_skip() -> anyhow::Result<Option<crate::gpu::Gpu>> {
    Ok(match cuda_or_skip_line()? {
        Ok(gpu) => Some(gpu),
        Err(line) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{line}");
            None
        }
    })
}

/// Step of the f64 gradient checks' central differences: small enough that the truncation error
/// (h^2 times the third derivative) is far below the tolerance, large enough that f64 rounding
/// (1e-16 / h) is too.
pub const GRAD_CHECK_STEP: f64 = 1e-6;

/// d loss / d (the element `elem` selects in `state`) by central differences with step `h`; the
/// element is restored afterwards.
pub fn central_difference<T: ?Sized>(
    state: &mut T,
    h: f64,
    elem: impl Fn(&mut T) -> &mut f64,
    loss: impl Fn(&T) -> f64,
) -> f64 {
    let v = *elem(state);
    *elem(state) = v + h;
    let plus = loss(state);
    *elem(state) = v - h;
    let minus = loss(state);
    *elem(state) = v;
    (plus - minus) / (2.0 * h)
}

/// The gradient checks' rule, written once: |analytic - numeric| <= 1e-6 + 1e-5 * |numeric|.
#[track_caller]
pub fn assert_gradient(what: impl std::fmt::Display, analytic: f64, numeric: f64) {
    assert!((analytic - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs(), "{what}: analytic {analytic} numeric {numeric}");
}

/// Root mean square of `v` (in f64): the typical magnitude fixture tolerances scale with.
pub fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / v.len().max(1) as f64).sqrt() as f32
}
