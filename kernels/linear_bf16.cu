// Linear layer forward and backward on the tensor cores (issue #15), on the GEMM core of
// kernels/gemm_bf16.cuh: 64x64 block tile, 4 warps of 32x32, BK 32, 3-stage cp.async pipeline,
// ldmatrix.x4. Forward: y[M][N] = x[M][K] W[N][K]^T + b, x and W in bf16, y and b in f32. Both
// operands are contiguous along k, so both tiles are K_CONTIG. (The backward is further down.)
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

__device__ __forceinline__ void linear_store(float* y, size_t i, float v) { y[i] = v; }
__device__ __forceinline__ void linear_store(__nv_bfloat16* y, size_t i, float v) { y[i] = __float2bfloat16_rn(v); }

// One 64x64 tile of y, stored as f32 or as that f32 value rounded once to bf16 (nearest even).
template <typename T>
__device__ __forceinline__ void linear_fwd_tile(unsigned short* smem, const unsigned short* __restrict__ x,
                                                const unsigned short* __restrict__ w, const float* __restrict__ b,
                                                T* __restrict__ y, unsigned M, unsigned K, unsigned N) {
  const unsigned tiles_n = (N + gbf16::TILE - 1) / gbf16::TILE;
  const unsigned m0 = (blockIdx.x / tiles_n) * gbf16::TILE, n0 = (blockIdx.x % tiles_n) * gbf16::TILE;
  float acc[2][4][4] = {};
  const LinearBf16Loader load{x, w, m0, n0, M, N, K};
  gbf16_mainloop<gbf16::K_CONTIG, gbf16::K_CONTIG>(acc, smem, load, (K + gbf16::BK - 1) / gbf16::BK);
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    const unsigned row = m0 + r, col = n0 + c;
    if (row < M && col < N) linear_store(y, (size_t)row * N + col, b ? __fadd_rn(v, b[col]) : v);
  });
}

extern "C" __global__ void __launch_bounds__(128)
    linear_fwd_bf16(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ y, unsigned M, unsigned K, unsigned N) {
  DYNAMIC_SHARED(unsigned short, smem);
  linear_fwd_tile(smem, x, w, b, y, M, K, N);
}

// The forward into bf16: what attention's bf16 kernels read (an attention block's q, k and v),
// so no rounding pass follows the projection; the f32 kernel's values rounded, bit for bit.
extern "C" __global__ void __launch_bounds__(128)
    linear_fwd_bf16_to_bf16(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
                            const float* __restrict__ b, __nv_bfloat16* __restrict__ y, unsigned M, unsigned K,
                            unsigned N) {
  DYNAMIC_SHARED(unsigned short, smem);
  linear_fwd_tile(smem, x, w, b, y, M, K, N);
}

// An attention block's q, k and v projections in one launch (issue #17: at batch 1 each is 4-16
// blocks, far from filling a GPU): blockIdx.y picks the projection, and each runs exactly
// linear_fwd_bf16_to_bf16's tiles, so the bits are those of three launches.
extern "C" __global__ void __launch_bounds__(128)
    linear_fwd_bf16_to_bf16_x3(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w0,
                               const unsigned short* __restrict__ w1, const unsigned short* __restrict__ w2,
                               const float* __restrict__ b0, const float* __restrict__ b1, const float* __restrict__ b2,
                               __nv_bfloat16* __restrict__ y0, __nv_bfloat16* __restrict__ y1,
                               __nv_bfloat16* __restrict__ y2, unsigned M, unsigned K, unsigned N) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned p = blockIdx.y;
  linear_fwd_tile(smem, x, p == 0 ? w0 : p == 1 ? w1 : w2, p == 0 ? b0 : p == 1 ? b1 : b2,
                  p == 0 ? y0 : p == 1 ? y1 : y2, M, K, N);
}

// ---- Backward --------------------------------------------------------------------------------
// Both gradients are GEMMs on the same core, with MN_CONTIG tiles wherever the operand is
// contiguous along the output dimension rather than along the sum:
//   dx[M][K] = dy[M][N] W[N][K]:  m = rows, n = in, k = out; A = dy (K_CONTIG), B = W viewed
//             [k = out][n = in] (MN_CONTIG: a chunk is 8 consecutive `in` of one `out` row).
//   dW[N][K] = dy^T x:            m = out, n = in, k = rows; A = dy^T (MN_CONTIG: 8 consecutive
//             out of one row), B = x (MN_CONTIG: 8 consecutive in of one row).
// So in_features and out_features must be multiples of 8 (the launchers check); rows need not be:
// rows past M are zero-filled slices of k, which add exact zeros.
//
// db[N] = sum over rows of dy is an extra GEMM column of the weight gradient: B gets in + 1
// columns, the last all ones, so db[o] is the "dW" of a ones input column. Chosen over a separate
// column-sum kernel because db then goes through the same mma arithmetic and the same fixed k
// order as dW (the host model of the tests replays both with one function), it needs no second
// launch, and it is deterministic without atomics. Its cost: when in % 64 == 0 the ones column
// opens one more tile column of blocks (on a GPU these usually fill otherwise idle SMs; on the
// emulator they are real work). The ones chunk ([1, 0 x 7] for rows < M, zeros past M) is not a
// cp.async: cp.async cannot produce a constant, so the thread stores it into shared memory
// directly. That is safe where load() runs: the stage it refills was last read before the
// __syncthreads that precedes the call, and is next read after the next one.

// Slice s of dy's rows (A, K_CONTIG) and W's rows seen as [k][n] (B, MN_CONTIG).
struct LinearBwdInputBf16Loader {
  const unsigned short* __restrict__ dy;
  const unsigned short* __restrict__ w;
  unsigned m0, n0, rows, in, out;
  __device__ __forceinline__ void operator()(unsigned short* stage, unsigned s) const {
    for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
      const GbfChunk a = gbf16_chunk<gbf16::K_CONTIG>(stage, j), b = gbf16_chunk<gbf16::MN_CONTIG>(stage + gbf16::SLOT, j);
      const unsigned ka = s * gbf16::BK + a.k, ra = m0 + a.row, kb = s * gbf16::BK + b.k, nb = n0 + b.row;
      const bool in_a = ra < rows && ka < out, in_b = kb < out && nb < in;
      cp_async<16>(a.dst, in_a ? dy + (size_t)ra * out + ka : dy, in_a ? 16 : 0);
      cp_async<16>(b.dst, in_b ? w + (size_t)kb * in + nb : w, in_b ? 16 : 0);
    }
  }
};

extern "C" __global__ void __launch_bounds__(128)
    linear_bwd_input_bf16(const unsigned short* __restrict__ dy, const unsigned short* __restrict__ w,
                          float* __restrict__ dx, unsigned rows, unsigned in, unsigned out) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned tiles_n = (in + gbf16::TILE - 1) / gbf16::TILE;
  const unsigned m0 = (blockIdx.x / tiles_n) * gbf16::TILE, n0 = (blockIdx.x % tiles_n) * gbf16::TILE;
  float acc[2][4][4] = {};
  const LinearBwdInputBf16Loader load{dy, w, m0, n0, rows, in, out};
  gbf16_mainloop<gbf16::K_CONTIG, gbf16::MN_CONTIG>(acc, smem, load, (out + gbf16::BK - 1) / gbf16::BK);
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    const unsigned row = m0 + r, col = n0 + c;
    if (row < rows && col < in) dx[(size_t)row * in + col] = v;
  });
}

// Slice s (rows s BK ..) of dy^T (A) and x (B), both MN_CONTIG; with `ones`, column `in` of B is
// the ones column of db (in % 8 == 0, so it starts a chunk of its own).
struct LinearBwdWeightBf16Loader {
  const unsigned short* __restrict__ x;
  const unsigned short* __restrict__ dy;
  unsigned m0, n0, rows, in, out;
  bool ones;
  __device__ __forceinline__ void operator()(unsigned short* stage, unsigned s) const {
    for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
      const GbfChunk a = gbf16_chunk<gbf16::MN_CONTIG>(stage, j), b = gbf16_chunk<gbf16::MN_CONTIG>(stage + gbf16::SLOT, j);
      const unsigned ra = s * gbf16::BK + a.k, ma = m0 + a.row, rb = s * gbf16::BK + b.k, nb = n0 + b.row;
      const bool in_a = ra < rows && ma < out, in_b = rb < rows && nb < in;
      cp_async<16>(a.dst, in_a ? dy + (size_t)ra * out + ma : dy, in_a ? 16 : 0);
      if (ones && nb == in) {
        for (unsigned e = 0; e < 8; ++e) b.dst[e] = e == 0 && rb < rows ? 0x3f80 : 0;  // bf16 1.0, zeros
      } else {
        cp_async<16>(b.dst, in_b ? x + (size_t)rb * in + nb : x, in_b ? 16 : 0);
      }
    }
  }
};

// Split-K over rows (issue #17): an attention projection's weight gradient at batch 128 (256 x 257
// outputs, 32,768 rows) makes 20 output tiles, 20 blocks on 132 SMs each running 1,024 slices.
// With splits > 1 (the launcher's choice, from the shape alone) block b takes split b / tiles of
// the row slices, and the tile's last split adds the partial sums in split order
// (gbf16_last_split, as the convolutions' split-K): deterministic, no second launch.
struct LinearWgradStore {
  float* __restrict__ dw;
  float* __restrict__ db;
  unsigned in, out;
  __device__ __forceinline__ void operator()(unsigned o, unsigned i, float v) const {
    if (o >= out) return;
    if (i < in)
      dw[(size_t)o * in + i] = v;
    else if (i == in && db)
      db[o] = v;
  }
};

extern "C" __global__ void __launch_bounds__(128)
    linear_bwd_weight_bf16(const unsigned short* __restrict__ x, const unsigned short* __restrict__ dy,
                           float* __restrict__ dw, float* __restrict__ db, unsigned splits, float* __restrict__ partial,
                           unsigned* __restrict__ counters, unsigned rows, unsigned in, unsigned out) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned cols = in + (db ? 1 : 0), tiles_n = (cols + gbf16::TILE - 1) / gbf16::TILE;
  const unsigned tiles = tiles_n * ((out + gbf16::TILE - 1) / gbf16::TILE);
  const unsigned split = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const unsigned m0 = (tile / tiles_n) * gbf16::TILE, n0 = (tile % tiles_n) * gbf16::TILE;
  float acc[2][4][4] = {};
  const LinearBwdWeightBf16Loader load{x, dy, m0, n0, rows, in, out, db != nullptr};
  const GbfSplit share = gbf16_split((rows + gbf16::BK - 1) / gbf16::BK, splits, split);
  gbf16_mainloop<gbf16::MN_CONTIG, gbf16::MN_CONTIG>(acc, smem, load, share.first, share.count);
  const LinearWgradStore store{dw, db, in, out};
  if (splits > 1) {
    gbf16_store_partial(acc, partial, split, m0, n0, out, cols);
    if (gbf16_last_split(counters + tile, splits, reinterpret_cast<unsigned*>(smem)))
      gbf16_add_splits<gbf16::TILE>(partial, splits, m0, n0, out, cols, store);
    return;
  }
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) { store(m0 + r, n0 + c, v); });
}
