// Linear layer forward on the tensor cores: y[M][N] = x[M][K] W[N][K]^T + b, x and W in bf16, y and
// b in f32 (issue #15), on the GEMM core of kernels/gemm_bf16.cuh: 64x64 block tile, 4 warps of
// 32x32, BK 32, 3-stage cp.async pipeline, ldmatrix.x4. Both operands are contiguous along k, so
// both tiles are K_CONTIG.
//
// Bounds: rows of x past M and rows of W past N are zero-filled by cp.async (src_bytes 0), so
// their products are 0 and never stored. K must be a multiple of 8 (16-byte rows; the launcher
// checks); a partial last slice is zero-filled the same way.
//
// Order of the sum: the core's (k16 steps in increasing k), then + bias in f32.
#include "gemm_bf16.cuh"

// Slice s of the block's x rows (A) and W rows (B).
struct LinearBf16Loader {
  const unsigned short* __restrict__ x;
  const unsigned short* __restrict__ w;
  unsigned m0, n0, M, N, K;
  __device__ __forceinline__ void operator()(unsigned short* stage, unsigned s) const {
    for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
      const GbfChunk a = gbf16_chunk<gbf16::K_CONTIG>(stage, j), b = gbf16_chunk<gbf16::K_CONTIG>(stage + gbf16::SLOT, j);
      const unsigned k = s * gbf16::BK + a.k, ra = m0 + a.row, rb = n0 + b.row;
      // A zero-filled chunk still needs a valid source address: the operand's first element.
      const bool in_a = ra < M && k < K, in_b = rb < N && k < K;
      cp_async<16>(a.dst, in_a ? x + (size_t)ra * K + k : x, in_a ? 16 : 0);
      cp_async<16>(b.dst, in_b ? w + (size_t)rb * K + k : w, in_b ? 16 : 0);
    }
  }
};

extern "C" __global__ void __launch_bounds__(128)
    linear_fwd_bf16(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ y, unsigned M, unsigned K, unsigned N) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned tiles_n = (N + gbf16::TILE - 1) / gbf16::TILE;
  const unsigned m0 = (blockIdx.x / tiles_n) * gbf16::TILE, n0 = (blockIdx.x % tiles_n) * gbf16::TILE;
  float acc[2][4][4] = {};
  const LinearBf16Loader load{x, w, m0, n0, M, N, K};
  gbf16_mainloop<gbf16::K_CONTIG, gbf16::K_CONTIG>(acc, smem, load, (K + gbf16::BK - 1) / gbf16::BK);
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    const unsigned row = m0 + r, col = n0 + c;
    if (row < M && col < N) y[(size_t)row * N + col] = b ? __fadd_rn(v, b[col]) : v;
  });
}
