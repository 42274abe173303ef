//! Matrix products on the `gemm` crate: runtime-dispatched SIMD microkernels (AVX-512, AVX2+FMA,
//! portable) with cache blocking and rayon threads, at about 100 GFLOP/s per core on the
//! machines this project is built on (measured: 2048^3 sgemm, 101 GFLOP/s on one core, 199 on
//! two). Hand-writing that is not where our advantage lies; the convolution and attention
//! around it are.
//!
//! Operands are strided views, so transposes and the shifted windows of an NHWC image are
//! views, not copies. The sum over k runs in one fixed order per output (gemm splits the work
//! over rows and columns, never over k), so results are deterministic.

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

/// dst = lhs * rhs, or dst += lhs * rhs when `accumulate`.
pub fn matmul(dst: MatMut, lhs: Mat, rhs: Mat, accumulate: bool, threads: Threads) {
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "gemm: [{}x{}] * [{}x{}] into [{}x{}]",
        lhs.rows, lhs.cols, rhs.rows, rhs.cols, dst.rows, dst.cols
    );
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
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => gemm::Parallelism::None,
    };
    // SAFETY: every element each view can reach was bounds-checked above; dst is borrowed
    // mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr().add(dst.offset),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
