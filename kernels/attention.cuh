// Multi-head softmax attention, fused in the manner of FlashAttention-2 (Dao 2023): the tokens x
// tokens score matrix never reaches global memory. q, k, v, out are [batch, tokens, heads * d];
// one block works on one tile of T rows of one (image, head) and streams the other operand's
// tiles through shared memory.
//
// - attention_fwd_f32: a block owns T queries; per key tile it computes the scores, folds them
//   into a running row max and sum (online softmax), rescales its output accumulator and adds
//   P V. It writes out and lse = max + log(sum) per query row.
// - attention_bwd_delta_f32: D = rowsum(dout * out), one warp per row.
// - attention_bwd_dkdv_f32: a block owns T keys and loops over every query tile, recomputing
//   P = exp(S - lse) and accumulating dV = P^T dO and dK = scale * dS^T Q, dS = P * (dO V^T - D).
// - attention_bwd_dq_f32: a block owns T queries and loops over every key tile: dQ = scale * dS K.
// Each gradient element is owned by one thread for the whole kernel and summed in a fixed order,
// so the backward is deterministic without atomics.
//
// T (the launcher's `tile`) is 8, 16, 32 or 64 with T * d <= ATT_THREADS * ATT_ACC: the T x d
// accumulators live in registers, ATT_ACC per thread, and every product loop is register-blocked
// (see Tile). Shared memory holds the T x d operand tiles, rows `lds` >= d floats apart (the
// launcher picks lds so that the rows the lanes of a warp read at once fall in distinct banks),
// and one T x T tile of scores.
//
// This header holds what the forward (attention.cu) and the backward (attention_bwd.cu) share:
// the launch constants, the tile geometry and the register-blocked tile products.
#pragma once
#include "common.cuh"

constexpr unsigned ATT_THREADS = 256;
constexpr unsigned ATT_WARPS = ATT_THREADS / 32;
constexpr unsigned ATT_ACC = 16;
// The tile kernels declare __launch_bounds__(ATT_THREADS, 2): two blocks per SM cap registers at
// 128, room for the 16 or 32 accumulators (given only the block size, ptxas aims for more blocks
// and spills), and their shared memory (at most 81.5 KiB) lets two blocks share an SM.

namespace attn {

// Where one (image, head) lives in a [batch, tokens, heads * d] tensor.
struct Head {
  size_t base;      // offset of (image, token 0, head, feature 0)
  size_t row;       // elements between consecutive tokens: heads * d
  unsigned tokens;  // rows in the head
  unsigned d;       // head_dim
};

// Decodes blockIdx.x as (image, head, tile of T rows); returns the tile's first row.
__device__ __forceinline__ unsigned block_tile(unsigned tokens, unsigned heads, unsigned d, unsigned T, Head& hd,
                                               unsigned& stats_base) {
  const unsigned n_tiles = (tokens + T - 1) / T;
  const unsigned bh = blockIdx.x / n_tiles, b = bh / heads, h = bh % heads;
  hd.row = (size_t)heads * d;
  hd.base = (size_t)b * tokens * hd.row + (size_t)h * d;
  hd.tokens = tokens;
  hd.d = d;
  stats_base = bh * tokens;  // lse and D are [batch, heads, tokens]
  return (blockIdx.x % n_tiles) * T;
}

// Rows [t0, t0 + T) of a head into shared [T][lds]. Rows past the last token are zero, so every
// dot product over the tile stays finite; their results are masked or never written.
__device__ __forceinline__ void load_rows(float* dst, unsigned lds, const float* __restrict__ src, const Head& hd,
                                          unsigned t0, unsigned T) {
  for (unsigned i = threadIdx.x; i < T * hd.d; i += ATT_THREADS) {
    const unsigned r = i / hd.d, x = i % hd.d;
    dst[r * lds + x] = t0 + r < hd.tokens ? __ldg(&src[hd.base + (size_t)(t0 + r) * hd.row + x]) : 0.0f;
  }
}

// Compile-time tile size, for dispatching on the launcher's T (see with_tile).
template <unsigned N>
struct TileSize {
  static constexpr unsigned value = N;
};

// Calls f(TileSize<T>{}) for the launcher's T, so every loop over a tile has compile-time
// bounds and the accumulators stay in registers.
template <class F>
__device__ __forceinline__ void with_tile(unsigned T, F f) {
  switch (T) {
    case 8: f(TileSize<8>{}); break;
    case 16: f(TileSize<16>{}); break;
    case 32: f(TileSize<32>{}); break;
    case 64: f(TileSize<64>{}); break;
    default: __trap();  // the launcher only picks the sizes above
  }
}

// How a tile of T rows (T = 8, 16, 32, 64) is split over the block: warp w owns rows w, w + 8,
// ... (ROWS of them). In a [T][d] accumulator lane l owns features l, l + 32, ... (FEATS of
// them, those below d), ROWS * FEATS = ATT_ACC registers. In a [T][T] tile of dots lane l owns
// columns l % LANES + LANES * j (COLS of them); when T < 32, the SPLIT = 32 / T lanes that share
// a column each sum every SPLIT-th term of the dot, then combine with an xor butterfly. Each
// thread reuses every value it loads from shared memory ROWS, COLS or FEATS times.
template <unsigned T>
struct Tile {
  static constexpr unsigned ROWS = T / ATT_WARPS;
  static constexpr unsigned FEATS = ATT_ACC / ROWS;
  static constexpr unsigned LANES = T < 32 ? T : 32;
  static constexpr unsigned COLS = T / LANES;
  static constexpr unsigned SPLIT = 32 / LANES;
  // The lanes' features cover every head_dim the launcher pairs with T (T * d <= 4096).
  static_assert(T % ATT_WARPS == 0 && T <= 64 && FEATS * 32 * T == ATT_THREADS * ATT_ACC, "tile shape");

  // epilogue(r, c, dot) for every element of the T x T tile, dot = a[r] . b[c] over d features.
  // The split lanes' partial sums and the butterfly have a fixed order, and every lane reaches
  // the shuffles, whatever d.
  template <class Epilogue>
  static __device__ __forceinline__ void dots(const float* a, const float* b, unsigned lds, unsigned d,
                                              Epilogue epilogue) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned col = lane % LANES, part = lane / LANES;
    float acc[ROWS][COLS] = {};
    for (unsigned x = part; x < d; x += SPLIT) {
      float av[ROWS], bv[COLS];
#pragma unroll
      for (unsigned i = 0; i < ROWS; ++i) av[i] = a[(warp + i * ATT_WARPS) * lds + x];
#pragma unroll
      for (unsigned j = 0; j < COLS; ++j) bv[j] = b[(col + j * LANES) * lds + x];
#pragma unroll
      for (unsigned i = 0; i < ROWS; ++i)
#pragma unroll
        for (unsigned j = 0; j < COLS; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
#pragma unroll
    for (unsigned i = 0; i < ROWS; ++i)
#pragma unroll
      for (unsigned j = 0; j < COLS; ++j) {
        float dot = acc[i][j];
        for (unsigned o = LANES; o < 32; o <<= 1) dot += __shfl_xor_sync(FULL_MASK, dot, o);
        if (part == 0) epilogue(warp + i * ATT_WARPS, col + j * LANES, dot);
      }
  }

  // acc[i * FEATS + f] (row warp + 8i, feature lane + 32f) += sum over j < T of
  // w(row, j) * m[j][feature], w(row, j) = w[row * w_row + j * w_j] (so w may be read
  // transposed), after scaling the old value by rescale[row] when given.
  static __device__ __forceinline__ void accumulate(float (&acc)[ATT_ACC], const float* rescale, const float* w,
                                                    unsigned w_row, unsigned w_j, const float* m, unsigned lds,
                                                    unsigned d) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (rescale) {
#pragma unroll
      for (unsigned i = 0; i < ROWS; ++i) {
        const float factor = rescale[warp + i * ATT_WARPS];
#pragma unroll
        for (unsigned f = 0; f < FEATS; ++f) acc[i * FEATS + f] *= factor;
      }
    }
    for (unsigned j = 0; j < T; ++j) {
      float wv[ROWS], mv[FEATS];
#pragma unroll
      for (unsigned i = 0; i < ROWS; ++i) wv[i] = w[(warp + i * ATT_WARPS) * w_row + j * w_j];
#pragma unroll
      for (unsigned f = 0; f < FEATS; ++f) mv[f] = lane + 32 * f < d ? m[j * lds + lane + 32 * f] : 0.0f;
#pragma unroll
      for (unsigned i = 0; i < ROWS; ++i)
#pragma unroll
        for (unsigned f = 0; f < FEATS; ++f) acc[i * FEATS + f] = fmaf(wv[i], mv[f], acc[i * FEATS + f]);
    }
  }

  // Writes the accumulator to rows [t0, t0 + T) of a head (rows past the last token dropped):
  // acc / div[row] when div is given, else factor * acc.
  static __device__ __forceinline__ void store(float* __restrict__ dst, const Head& hd, unsigned t0,
                                               const float (&acc)[ATT_ACC], float factor, const float* div) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (unsigned i = 0; i < ROWS; ++i) {
      const unsigned r = warp + i * ATT_WARPS;
      if (t0 + r >= hd.tokens) continue;
      float* row = dst + hd.base + (size_t)(t0 + r) * hd.row;
#pragma unroll
      for (unsigned f = 0; f < FEATS; ++f) {
        const unsigned x = lane + 32 * f;
        if (x < hd.d) row[x] = div ? acc[i * FEATS + f] / div[r] : factor * acc[i * FEATS + f];
      }
    }
  }
};

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
  return v;
}

}  // namespace attn
