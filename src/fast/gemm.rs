//! Matrix products on the `gemm` crate's parts: its cache-blocked, rayon-parallel driver
//! (gemm-common) with gemm-f32's SIMD microkernels (AVX-512, AVX2+FMA, portable), the family
//! chosen per call from [`SimdLevel::active`] so one binary runs its fastest kernels on each
//! machine and tests can force every family. About 100 GFLOP/s per core with AVX2 (2048^3
//! sgemm, measured); hand-writing that is not where our advantage lies; the convolution and
//! attention around it are.
//!
//! Operands are strided views, so transposes and the shifted windows of an NHWC image are
//! views, not copies. The sum over k runs in one fixed order per output (gemm splits the work
//! over rows and columns, never over k), so results are deterministic.

use super::simd::SimdLevel;

/// A matrix view: element (r, c) at `data[offset + r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major [rows, cols] matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }
    /// A row-major matrix whose rows are `row_stride` apart, starting at `offset`.
    pub fn strided(data: &'a [f32], offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        Mat { data, offset, rows, cols, row_stride, col_stride: 1 }
    }
    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }
    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "gemm: {what} view reaches element {last} of {}", self.data.len());
        }
    }
}

/// A mutable matrix view, as [`Mat`].
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a> MatMut<'a> {
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, offset: 0, rows, cols, row_stride: cols }
    }
    pub fn strided(data: &'a mut [f32], offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        MatMut { data, offset, rows, cols, row_stride }
    }
}

/// Threads for one product: all of rayon's (for a product that is the whole op) or one (for
/// products issued from inside a parallel loop, which already occupies the cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
}

/// [m x k] * [k x n] into [m x n]: the dimensions every product (f32 or bf16) must agree on.
pub(super) fn check_product(op: &str, lhs: [usize; 2], rhs: [usize; 2], dst: [usize; 2]) {
    let ([m, k], [k2, n]) = (lhs, rhs);
    assert!(m == dst[0] && n == dst[1] && k == k2, "{op}: [{m}x{k}] * [{k2}x{n}] into [{}x{}]", dst[0], dst[1]);
}

/// dst = lhs * rhs, or dst += lhs * rhs when `accumulate`.
pub fn matmul(dst: MatMut, lhs: Mat, rhs: Mat, accumulate: bool, threads: Threads) {
    check_product("gemm", [lhs.rows, lhs.cols], [rhs.rows, rhs.cols], [dst.rows, dst.cols]);
    lhs.check("lhs");
    rhs.check("rhs");
    if dst.rows > 0 && dst.cols > 0 {
        let last = dst.offset + (dst.rows - 1) * dst.row_stride + dst.cols - 1;
        assert!(last < dst.data.len(), "gemm: dst view reaches element {last} of {}", dst.data.len());
    } else {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                dst.data[dst.offset + r * dst.row_stride..][..dst.cols].fill(0.0);
            }
        }
        return;
    }
    let work = dst.rows * dst.cols * lhs.cols;
    let parallelism = match threads {
        // Below ~1 MFLOP the threads cost more than they save.
        Threads::All if work >= 1 << 19 && rayon::current_num_threads() > 1 => {
            gemm_common::Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => gemm_common::Parallelism::None,
    };
    let kernel = kernel_for(SimdLevel::active());
    // The microkernels want a column-major destination; ours is row-major, so compute the
    // transpose (dst^T = rhs^T lhs^T) as the gemm crate's own entry point does.
    let (m, n, k) = (dst.cols, dst.rows, lhs.cols);
    // SAFETY: every element each view can reach was bounds-checked above; dst is borrowed
    // mutably, so it aliases neither input; `kernel_for` returned a kernel this CPU can run.
    unsafe {
        kernel(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(dst.offset),
            dst.row_stride as isize,
            1,
            accumulate,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.row_stride as isize,
            rhs.col_stride as isize,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.row_stride as isize,
            lhs.col_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// gemm-common's driver for one microkernel family: (m, n, k, dst, dst_cs, dst_rs, read_dst,
/// lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, alpha, beta, conj x3, parallelism).
type GemmFn = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    f32,
    f32,
    bool,
    bool,
    bool,
    gemm_common::Parallelism,
);

/// Instantiates gemm-common's generic driver with one of gemm-f32's microkernel families (what
/// gemm-f32 does internally, behind one dispatch decided once per process; here the level is
/// ours to choose per call, so tests and A/B runs can force it). `$lanes` is the f32 lanes of
/// one register: the family's N.
macro_rules! gemm_family {
    ($name:ident, $module:ident, $simd:ty, $lanes:expr) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut f32,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const f32,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const f32,
            rhs_cs: isize,
            rhs_rs: isize,
            alpha: f32,
            beta: f32,
            conj_dst: bool,
            conj_lhs: bool,
            conj_rhs: bool,
            parallelism: gemm_common::Parallelism,
        ) {
            use gemm_common::simd::MixedSimd;
            use gemm_f32::microkernel::$module::f32 as ukr;
            // SAFETY (of the caller): the CPU has the features of `$simd` (checked by
            // `try_new`, which only fails when it lacks them) and the pointers cover the views.
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    f32,
                    { $lanes },
                    { ukr::MR_DIV_N * $lanes },
                    { ukr::NR },
                    { ukr::MR_DIV_N },
                    { ukr::H_M },
                    { ukr::H_N },
                >(
                    <$simd as MixedSimd<f32, f32, f32, f32>>::try_new().expect("gemm: kernel level above the CPU's"),
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    alpha,
                    beta,
                    conj_dst,
                    conj_lhs,
                    conj_rhs,
                    |a, b, c| a * b + c,
                    &ukr::UKR,
                    &ukr::H_UKR,
                    false,
                    parallelism,
                )
            }
        }
    };
}

gemm_family!(gemm_portable, scalar, gemm_common::simd::Scalar, 1);
#[cfg(target_arch = "x86_64")]
gemm_family!(gemm_avx2, fma, gemm_common::simd::V3, 8);
#[cfg(target_arch = "x86_64")]
gemm_family!(gemm_avx512, avx512f, gemm_common::simd::V4, 16);

/// The microkernel family for a level. AVX-512 wherever the CPU has it: 1.6x the AVX2 kernels'
/// speed on full-width (Zen 5 class) cores (issue #11's whole-model runs) and 4% faster on
/// double-pumped (Zen 4) cores (2048^3 sgemm, docs/worklog.md), so the fastest path on both kinds.
fn kernel_for(level: SimdLevel) -> GemmFn {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => gemm_avx512,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2Fma => gemm_avx2,
        _ => gemm_portable,
    }
}

/// The name of the GEMM microkernels `level` runs (for `ddpm devices` and tests).
pub fn kernel_name(level: SimdLevel) -> &'static str {
    match level {
        SimdLevel::Avx512 => "gemm-f32 avx512f (16 lanes)",
        SimdLevel::Avx2Fma => "gemm-f32 fma (8 lanes)",
        SimdLevel::Portable => "gemm-f32 scalar",
    }
}
