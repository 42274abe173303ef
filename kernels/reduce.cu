// Row reductions: for a [rows, cols] matrix, the sum and the sum of squares of each row, the
// building block of normalisation layers. One block per row; each thread strides over the row,
// then warp shuffles and shared memory combine the partial sums in a fixed order, so the result is
// the same bits on every run.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) row_sum_sumsq_f32(const float* __restrict__ x, float* __restrict__ sum,
                                                                   float* __restrict__ sumsq, unsigned cols) {
  __shared__ float scratch[32];
  const float* row = x + (size_t)blockIdx.x * cols;
  float s = 0.0f, ss = 0.0f;
  for (unsigned c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = __ldg(&row[c]);
    s += v;
    ss = fmaf(v, v, ss);
  }
  s = block_sum(s, scratch);
  ss = block_sum(ss, scratch);
  if (threadIdx.x == 0) {
    sum[blockIdx.x] = s;
    sumsq[blockIdx.x] = ss;
  }
}
