// Linear layers, y = x W^T + b with W stored [out, in] (torch.nn.Linear), forward and backward.
// All three products are one tiled GEMM, C[M, N] = A[M, K] B[K, N] (+ bias[n]), instantiated for
// the operand layouts each needs:
//   forward       y  = x  W^T : A = x  [rows, in]   row-major, B(k, n) = W[n, k]  (B_T)
//   bwd_input     dx = dy W   : A = dy [rows, out]  row-major, B = W [out, in]     row-major
//   bwd_weight    dW = dy^T x : A(m, k) = dy[k, m]  (A_T),     B = x [rows, in]    row-major
// Each block computes a 64x64 tile of C; 256 threads, each owning a 4x4 set of outputs strided
// by 16 rows and 16 columns, so shared-memory reads of B are conflict-free and the final stores
// coalesce. Tiles of A and B (16 deep in k) are staged in shared memory with the loads mapped so
// consecutive threads read consecutive addresses of whichever layout the operand has. Every
// output is one fmaf chain over k in increasing order: deterministic, no atomics.
#include "common.cuh"

constexpr unsigned LIN_BM = 64, LIN_BN = 64, LIN_BK = 16, LIN_THREADS = 256;
constexpr unsigned LIN_T = 16;             // threads per tile row and column
constexpr unsigned LIN_TM = LIN_BM / LIN_T, LIN_TN = LIN_BN / LIN_T;

// A(m, k) is a[m * K + k], or a[k * M + m] when A_T; B(k, n) is b[k * N + n], or b[n * K + k] when B_T.
// Needs blockDim.x == LIN_THREADS (the launcher's only configuration).
template <bool A_T, bool B_T>
__device__ __forceinline__ void linear_gemm(const float* __restrict__ a, const float* __restrict__ b,
                                            const float* __restrict__ bias, float* __restrict__ c, unsigned M,
                                            unsigned N, unsigned K) {
  // +1 column: the k-contiguous loads write a column of the tile; the padding spreads it over banks.
  __shared__ float a_tile[LIN_BK][LIN_BM + 1];
  __shared__ float b_tile[LIN_BK][LIN_BN + 1];
  const unsigned tx = threadIdx.x % LIN_T, ty = threadIdx.x / LIN_T;
  const unsigned tiles_n = (N + LIN_BN - 1) / LIN_BN, tiles = tiles_n * ((M + LIN_BM - 1) / LIN_BM);
  for (unsigned tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const unsigned m0 = tile / tiles_n * LIN_BM, n0 = tile % tiles_n * LIN_BN;
    float acc[LIN_TM][LIN_TN];
#pragma unroll
    for (unsigned i = 0; i < LIN_TM; ++i)
#pragma unroll
      for (unsigned j = 0; j < LIN_TN; ++j) acc[i][j] = 0.0f;
    for (unsigned k0 = 0; k0 < K; k0 += LIN_BK) {
      // Out-of-range entries load as zero, so partial tiles need no special case in the product.
#pragma unroll
      for (unsigned step = 0; step < LIN_BM * LIN_BK / LIN_THREADS; ++step) {
        const unsigned l = threadIdx.x + step * LIN_THREADS;
        const unsigned mm = A_T ? l % LIN_BM : l / LIN_BK, kk = A_T ? l / LIN_BM : l % LIN_BK;
        const unsigned m = m0 + mm, k = k0 + kk;
        a_tile[kk][mm] = m < M && k < K ? a[A_T ? (size_t)k * M + m : (size_t)m * K + k] : 0.0f;
      }
#pragma unroll
      for (unsigned step = 0; step < LIN_BN * LIN_BK / LIN_THREADS; ++step) {
        const unsigned l = threadIdx.x + step * LIN_THREADS;
        const unsigned nn = B_T ? l / LIN_BK : l % LIN_BN, kk = B_T ? l % LIN_BK : l / LIN_BN;
        const unsigned n = n0 + nn, k = k0 + kk;
        b_tile[kk][nn] = n < N && k < K ? b[B_T ? (size_t)n * K + k : (size_t)k * N + n] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (unsigned kk = 0; kk < LIN_BK; ++kk) {
        float av[LIN_TM], bv[LIN_TN];
#pragma unroll
        for (unsigned i = 0; i < LIN_TM; ++i) av[i] = a_tile[kk][ty + i * LIN_T];
#pragma unroll
        for (unsigned j = 0; j < LIN_TN; ++j) bv[j] = b_tile[kk][tx + j * LIN_T];
#pragma unroll
        for (unsigned i = 0; i < LIN_TM; ++i)
#pragma unroll
          for (unsigned j = 0; j < LIN_TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();  // the next k-step overwrites the tiles
    }
#pragma unroll
    for (unsigned i = 0; i < LIN_TM; ++i) {
      const unsigned m = m0 + ty + i * LIN_T;
#pragma unroll
      for (unsigned j = 0; j < LIN_TN; ++j) {
        const unsigned n = n0 + tx + j * LIN_T;
        if (m < M && n < N) c[(size_t)m * N + n] = bias ? acc[i][j] + bias[n] : acc[i][j];
      }
    }
  }
}

// y[rows, out] = x[rows, in] W[out, in]^T + b; b may be null.
extern "C" __global__ void __launch_bounds__(LIN_THREADS) linear_fwd_f32(const float* __restrict__ x,
                                                                        const float* __restrict__ w,
                                                                        const float* __restrict__ b,
                                                                        float* __restrict__ y, unsigned rows,
                                                                        unsigned in, unsigned out) {
  linear_gemm<false, true>(x, w, b, y, rows, out, in);
}

// dx[rows, in] = dy[rows, out] W[out, in].
extern "C" __global__ void __launch_bounds__(LIN_THREADS) linear_bwd_input_f32(const float* __restrict__ dy,
                                                                              const float* __restrict__ w,
                                                                              float* __restrict__ dx, unsigned rows,
                                                                              unsigned in, unsigned out) {
  linear_gemm<false, false>(dy, w, nullptr, dx, rows, in, out);
}

// dW[out, in] = dy[rows, out]^T x[rows, in]: the sum over rows is the GEMM's k loop, in row order.
extern "C" __global__ void __launch_bounds__(LIN_THREADS) linear_bwd_weight_f32(const float* __restrict__ x,
                                                                               const float* __restrict__ dy,
                                                                               float* __restrict__ dw, unsigned rows,
                                                                               unsigned in, unsigned out) {
  linear_gemm<true, false>(dy, x, nullptr, dw, out, in, rows);
}

constexpr unsigned LIN_BIAS_ROWS = 8;  // a block: 32 column lanes x 8 row strides

// db[o] = sum_r dy[r, o]: lanes read 32 consecutive columns of a row (coalesced), each of the 8
// row-threads strides over the rows, then row 0 adds the 8 partial sums in order.
extern "C" __global__ void __launch_bounds__(256) linear_bwd_bias_f32(const float* __restrict__ dy,
                                                                     float* __restrict__ db, unsigned rows,
                                                                     unsigned out) {
  __shared__ float part[LIN_BIAS_ROWS][33];
  const unsigned lane = threadIdx.x % 32, row = threadIdx.x / 32;
  for (unsigned tile = blockIdx.x; tile < (out + 31) / 32; tile += gridDim.x) {
    const unsigned o = tile * 32 + lane;
    float s = 0.0f;
    if (o < out)
      for (unsigned r = row; r < rows; r += LIN_BIAS_ROWS) s += dy[(size_t)r * out + o];
    part[row][lane] = s;
    __syncthreads();
    if (row == 0 && o < out) {
      float t = 0.0f;
      for (unsigned k = 0; k < LIN_BIAS_ROWS; ++k) t += part[k][lane];
      db[o] = t;
    }
    __syncthreads();  // the next tile overwrites part
  }
}
