// Linear layer forward on the tensor cores: y[M][N] = x[M][K] W[N][K]^T + b, x and W in bf16, y and
// b in f32 (issue #15; the first kernel on kernels/tensor_core.cuh, and the GEMM core the
// convolutions will share).
//
// Block: 128 threads = 4 warps in a 2x2 grid over a 64x64 output tile; each warp owns 32x32, i.e.
// 2 (m16) x 4 (n8) mma tiles and 32 f32 accumulators per lane. K advances in slices of BK = 32
// (two k16 steps) through a STAGES-deep cp.async pipeline: while slice s is multiplied, slices
// s+1 .. s+STAGES-1 are in flight. Shared memory rows are LDS = 40 bf16 (80 bytes) apart: 16-byte
// aligned for ldmatrix and cp.async, and the 8 rows one ldmatrix phase reads fall in distinct
// 16-byte bank groups (80 / 16 = 5, odd, so rows 0..7 map to 8 different groups mod 8).
//
// Bounds: rows of x past M and rows of W past N are zero-filled by cp.async (src_bytes 0), so
// their products are 0 and never stored. K must be a multiple of 8 (16-byte rows; the launcher
// checks), a partial last slice is zero-filled the same way.
//
// Order of the sum, fixed (deterministic, and what the host model in tests/linear_bf16.rs
// replays): for each output, k16 steps in increasing k, each one mma accumulating into the f32
// result of the previous; then + bias in f32.
#include "tensor_core.cuh"

namespace lbf16 {
constexpr unsigned THREADS = 128, TILE = 64, BK = 32, STAGES = 3, LDS = 40;
constexpr unsigned STAGE_ELEMS = 2 * TILE * LDS;  // x tile then W tile
}  // namespace lbf16

// One slice [k0, k0 + BK) of the block's x rows and W rows into stage `st`: 64 rows x 4 chunks of
// 16 bytes for each operand, 2 chunks per thread per operand.
__device__ __forceinline__ void lbf16_load_slice(unsigned short* st, const unsigned short* __restrict__ x,
                                                 const unsigned short* __restrict__ w, unsigned m0, unsigned n0,
                                                 unsigned k0, unsigned M, unsigned N, unsigned K) {
  for (unsigned c = threadIdx.x; c < 2 * lbf16::TILE * 4; c += lbf16::THREADS) {
    const unsigned which = c / (lbf16::TILE * 4), row = (c / 4) % lbf16::TILE, kc = (c % 4) * 8;
    const unsigned limit = which ? N : M, r = (which ? n0 : m0) + row;
    const unsigned short* src = which ? w : x;
    const unsigned k = k0 + kc;
    const bool inside = r < limit && k < K;
    const unsigned bytes = inside ? 2 * min(8u, K - k) : 0;
    // A zero-filled chunk still needs a valid source address: the operand's first element.
    cp_async<16>(st + which * lbf16::TILE * lbf16::LDS + row * lbf16::LDS + kc, inside ? src + (size_t)r * K + k : src, bytes);
  }
}

extern "C" __global__ void __launch_bounds__(128)
    linear_fwd_bf16(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ y, unsigned M, unsigned K, unsigned N) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned tiles_n = (N + lbf16::TILE - 1) / lbf16::TILE;
  const unsigned m0 = (blockIdx.x / tiles_n) * lbf16::TILE, n0 = (blockIdx.x % tiles_n) * lbf16::TILE;
  const unsigned l = threadIdx.x % 32, warp = threadIdx.x / 32, wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  float acc[2][4][4] = {};
  const unsigned slices = (K + lbf16::BK - 1) / lbf16::BK;
  for (unsigned s = 0; s < lbf16::STAGES - 1; ++s) {
    if (s < slices) lbf16_load_slice(smem + s * lbf16::STAGE_ELEMS, x, w, m0, n0, s * lbf16::BK, M, N, K);
    cp_async_commit();  // an empty group past the last slice keeps the wait count uniform
  }
  for (unsigned s = 0; s < slices; ++s) {
    cp_async_wait<lbf16::STAGES - 2>();  // slice s has landed (this thread's part) ...
    __syncthreads();              // ... and every thread's; and slice s-1's readers are done
    const unsigned next = s + lbf16::STAGES - 1;
    if (next < slices) lbf16_load_slice(smem + (next % lbf16::STAGES) * lbf16::STAGE_ELEMS, x, w, m0, n0, next * lbf16::BK, M, N, K);
    cp_async_commit();
    const unsigned short* sx = smem + (s % lbf16::STAGES) * lbf16::STAGE_ELEMS;
    const unsigned short* sw = sx + lbf16::TILE * lbf16::LDS;
    for (unsigned kk = 0; kk < lbf16::BK; kk += 16) {
      uint32_t a[2][4], bf[4][2];
      for (unsigned mi = 0; mi < 2; ++mi)
        ldmatrix<4, false>(a[mi], sx + (wm + 16 * mi + (l & 7) + 8 * ((l >> 3) & 1)) * lbf16::LDS + kk + 8 * (l >> 4));
      for (unsigned nj = 0; nj < 4; nj += 2) {  // two n8 tiles per ldmatrix.x4 of W rows [n][k]
        uint32_t r[4];
        ldmatrix<4, false>(r, sw + (wn + 8 * nj + (l & 7) + 8 * (l >> 4)) * lbf16::LDS + kk + 8 * ((l >> 3) & 1));
        bf[nj][0] = r[0], bf[nj][1] = r[1], bf[nj + 1][0] = r[2], bf[nj + 1][1] = r[3];
      }
      for (unsigned mi = 0; mi < 2; ++mi)
        for (unsigned nj = 0; nj < 4; ++nj) mma_bf16_16816(acc[mi][nj], a[mi], bf[nj], acc[mi][nj]);
    }
  }
  cp_async_wait<0>();  // only empty groups can remain; no copy is left pending at exit
  const unsigned g = l >> 2, t = l & 3;
  for (unsigned mi = 0; mi < 2; ++mi)
    for (unsigned nj = 0; nj < 4; ++nj)
      for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = m0 + wm + 16 * mi + g + 8 * (i >> 1), col = n0 + wn + 8 * nj + 2 * t + (i & 1);
        if (row < M && col < N) y[(size_t)row * N + col] = b ? __fadd_rn(acc[mi][nj][i], b[col]) : acc[mi][nj][i];
      }
}
