//! Reference of kernels/reduce.cu.

/// For each row of a row-major [rows, cols] matrix: the sum and the sum of squares. Accumulates in
/// f64, so the reference is the exact answer rounded once, whatever order a kernel adds in.
pub fn row_sum_sumsq(x: &[f32], cols: usize, sum: &mut [f32], sumsq: &mut [f32]) {
    for ((row, s), ss) in x.chunks_exact(cols).zip(sum.iter_mut()).zip(sumsq.iter_mut()) {
        let (a, b) = row.iter().fold((0f64, 0f64), |(a, b), &v| (a + v as f64, b + (v as f64) * (v as f64)));
        *s = a as f32;
        *ss = b as f32;
    }
}
