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

// Warp w owns rows w, w + 8, ... of the tile. Turns the dots in s into p = exp(dot * scale - m)
// for the `valid` real keys (0 past them), m the row's new running max, and leaves in rescale the
// factor exp(m_old - m) by which the row's sum and output accumulator shrink. The tile holds at
// least one real key, so m is finite; on the first tile m_old = -inf and the factor is 0.
__device__ __forceinline__ void online_softmax(float* s, float* row_max, float* row_sum, float* rescale, unsigned T,
                                               unsigned valid, float scale) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (unsigned r = warp; r < T; r += ATT_THREADS / 32) {
    float* row = s + r * T;
    float m = -INFINITY;
    for (unsigned c = lane; c < valid; c += 32) m = fmaxf(m, row[c] * scale);
    m = fmaxf(row_max[r], warp_max(m));
    float sum = 0.0f;
    for (unsigned c = lane; c < T; c += 32) {
      const float p = c < valid ? expf(row[c] * scale - m) : 0.0f;
      row[c] = p;
      sum += p;
    }
    sum = warp_sum(sum);  // also orders every lane's read of row_max[r] before lane 0 writes it
    if (lane == 0) {
      const float factor = expf(row_max[r] - m);
      rescale[r] = factor;
      row_sum[r] = row_sum[r] * factor + sum;
      row_max[r] = m;
    }
  }
}

// lse and D of rows [t0, t0 + T) into shared memory, zero past the last token.
__device__ __forceinline__ void load_stats(float* lse_s, float* delta_s, const float* __restrict__ lse,
                                           const float* __restrict__ delta, unsigned stats_base, unsigned t0,
                                           unsigned T, unsigned tokens) {
  for (unsigned r = threadIdx.x; r < T; r += ATT_THREADS) {
    const bool real = t0 + r < tokens;
    lse_s[r] = real ? lse[stats_base + t0 + r] : 0.0f;
    delta_s[r] = real ? delta[stats_base + t0 + r] : 0.0f;
  }
}

// The forward of one block: T queries against every key tile. Shared memory (floats): the q
// and k/v tiles [T][lds], scores [T][T], running max, sum and rescale [T].
template <unsigned T>
__device__ __forceinline__ void fwd(const float* __restrict__ q, const float* __restrict__ k,
                                    const float* __restrict__ v, float* __restrict__ out, float* __restrict__ lse,
                                    unsigned tokens, unsigned heads, unsigned d, unsigned lds, float scale) {
  DYNAMIC_SHARED(float, smem);
  float* q_s = smem;
  float* kv_s = q_s + T * lds;  // K for the scores, then V for P V
  float* s_s = kv_s + T * lds;
  float* row_max = s_s + T * T;
  float* row_sum = row_max + T;
  float* rescale = row_sum + T;
  Head hd;
  unsigned stats_base;
  const unsigned q0 = block_tile(tokens, heads, d, T, hd, stats_base);

  load_rows(q_s, lds, q, hd, q0, T);
  for (unsigned r = threadIdx.x; r < T; r += ATT_THREADS) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
  }
  float acc[ATT_ACC] = {};
  for (unsigned k0 = 0; k0 < tokens; k0 += T) {
    __syncthreads();  // the previous tile's V and rescale are no longer read
    load_rows(kv_s, lds, k, hd, k0, T);
    __syncthreads();
    Tile<T>::dots(q_s, kv_s, lds, d, [&](unsigned r, unsigned c, float dot) { s_s[r * T + c] = dot; });
    __syncthreads();
    load_rows(kv_s, lds, v, hd, k0, T);
    online_softmax(s_s, row_max, row_sum, rescale, T, min(T, tokens - k0), scale);
    __syncthreads();
    Tile<T>::accumulate(acc, rescale, s_s, T, 1, kv_s, lds, d);
  }
  Tile<T>::store(out, hd, q0, acc, 1.0f, row_sum);
  for (unsigned r = threadIdx.x; r < T; r += ATT_THREADS)
    if (q0 + r < tokens) lse[stats_base + q0 + r] = row_max[r] + logf(row_sum[r]);
}

// P = exp(S - lse) as the epilogue of the score dots, zero outside the real queries and keys.
// (The zero padding rows of Q, dO, K and V would cancel those terms anyway; the mask keeps P the
// true probabilities rather than relying on it.)
struct Probabilities {
  float* p;
  const float* lse;
  unsigned T, q0, k0, tokens;
  float scale;
  __device__ __forceinline__ void operator()(unsigned r, unsigned c, float dot) const {
    p[r * T + c] = q0 + r < tokens && k0 + c < tokens ? expf(dot * scale - lse[r]) : 0.0f;
  }
};

// dS = P * (dP - D) as the epilogue of the dP = dO V^T dots, in place over P: the dots give
// element (r, c) to the same thread as the P dots did.
struct ScoreGrads {
  float* p;
  const float* delta;
  unsigned T;
  __device__ __forceinline__ void operator()(unsigned r, unsigned c, float dot) const {
    p[r * T + c] *= dot - delta[r];
  }
};

// The dK, dV of one block: T keys against every query tile. Shared memory (floats): four tiles
// [T][lds], P / dS [T][T], lse and D [T]; the same as the dQ kernel's.
template <unsigned T>
__device__ __forceinline__ void bwd_dkdv(const float* __restrict__ q, const float* __restrict__ k,
                                         const float* __restrict__ v, const float* __restrict__ dout,
                                         const float* __restrict__ lse, const float* __restrict__ delta,
                                         float* __restrict__ dk, float* __restrict__ dv, unsigned tokens,
                                         unsigned heads, unsigned d, unsigned lds, float scale) {
  DYNAMIC_SHARED(float, smem);
  float* k_s = smem;
  float* v_s = k_s + T * lds;
  float* q_s = v_s + T * lds;
  float* do_s = q_s + T * lds;
  float* p_s = do_s + T * lds;
  float* lse_s = p_s + T * T;
  float* delta_s = lse_s + T;
  Head hd;
  unsigned stats_base;
  const unsigned k0 = block_tile(tokens, heads, d, T, hd, stats_base);

  load_rows(k_s, lds, k, hd, k0, T);
  load_rows(v_s, lds, v, hd, k0, T);
  float dk_acc[ATT_ACC] = {}, dv_acc[ATT_ACC] = {};
  for (unsigned q0 = 0; q0 < tokens; q0 += T) {
    __syncthreads();  // the previous query tile and its dS are no longer read
    load_rows(q_s, lds, q, hd, q0, T);
    load_rows(do_s, lds, dout, hd, q0, T);
    load_stats(lse_s, delta_s, lse, delta, stats_base, q0, T, tokens);
    __syncthreads();
    Tile<T>::dots(q_s, k_s, lds, d, Probabilities{p_s, lse_s, T, q0, k0, tokens, scale});
    __syncthreads();
    Tile<T>::accumulate(dv_acc, nullptr, p_s, 1, T, do_s, lds, d);  // dV[c] += sum_r P[r][c] dO[r]
    __syncthreads();
    Tile<T>::dots(do_s, v_s, lds, d, ScoreGrads{p_s, delta_s, T});
    __syncthreads();
    Tile<T>::accumulate(dk_acc, nullptr, p_s, 1, T, q_s, lds, d);  // dK[c] += sum_r dS[r][c] Q[r]
  }
  Tile<T>::store(dk, hd, k0, dk_acc, scale, nullptr);
  Tile<T>::store(dv, hd, k0, dv_acc, 1.0f, nullptr);
}

// The dQ of one block: T queries against every key tile.
template <unsigned T>
__device__ __forceinline__ void bwd_dq(const float* __restrict__ q, const float* __restrict__ k,
                                       const float* __restrict__ v, const float* __restrict__ dout,
                                       const float* __restrict__ lse, const float* __restrict__ delta,
                                       float* __restrict__ dq, unsigned tokens, unsigned heads, unsigned d,
                                       unsigned lds, float scale) {
  DYNAMIC_SHARED(float, smem);
  float* q_s = smem;
  float* do_s = q_s + T * lds;
  float* k_s = do_s + T * lds;
  float* v_s = k_s + T * lds;
  float* p_s = v_s + T * lds;
  float* lse_s = p_s + T * T;
  float* delta_s = lse_s + T;
  Head hd;
  unsigned stats_base;
  const unsigned q0 = block_tile(tokens, heads, d, T, hd, stats_base);

  load_rows(q_s, lds, q, hd, q0, T);
  load_rows(do_s, lds, dout, hd, q0, T);
  load_stats(lse_s, delta_s, lse, delta, stats_base, q0, T, tokens);
  float dq_acc[ATT_ACC] = {};
  for (unsigned k0 = 0; k0 < tokens; k0 += T) {
    __syncthreads();  // the previous key tile and its dS are no longer read
    load_rows(k_s, lds, k, hd, k0, T);
    load_rows(v_s, lds, v, hd, k0, T);
    __syncthreads();
    Tile<T>::dots(q_s, k_s, lds, d, Probabilities{p_s, lse_s, T, q0, k0, tokens, scale});
    Tile<T>::dots(do_s, v_s, lds, d, ScoreGrads{p_s, delta_s, T});  // same thread per element: no barrier
    __syncthreads();
    Tile<T>::accumulate(dq_acc, nullptr, p_s, T, 1, k_s, lds, d);  // dQ[r] += sum_c dS[r][c] K[c]
  }
  Tile<T>::store(dq, hd, q0, dq_acc, scale, nullptr);
}

}  // namespace attn

extern "C" __global__ void __launch_bounds__(ATT_THREADS, 2)
    attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                      float* __restrict__ out, float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d,
                      unsigned tile, unsigned lds, float scale) {
  attn::with_tile(tile, [&](auto t) {
    attn::fwd<decltype(t)::value>(q, k, v, out, lse, tokens, heads, d, lds, scale);
  });
}

// D[b, h, t] = sum over the head's features of dout * out: one warp per row, lanes strided over
// the features, then the warp's fixed butterfly.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_bwd_delta_f32(const float* __restrict__ out, const float* __restrict__ dout, float* __restrict__ delta,
                            unsigned rows, unsigned tokens, unsigned heads, unsigned d) {
  const unsigned lane = threadIdx.x % 32;
  // The row is the same on every lane of a warp, so whole warps enter or leave the loop together.
  for (unsigned row = blockIdx.x * ATT_WARPS + threadIdx.x / 32; row < rows; row += gridDim.x * ATT_WARPS) {
    const unsigned t = row % tokens, bh = row / tokens, b = bh / heads, h = bh % heads;
    const size_t base = ((size_t)b * tokens + t) * heads * d + (size_t)h * d;
    float sum = 0.0f;
    for (unsigned x = lane; x < d; x += 32) sum = fmaf(__ldg(&dout[base + x]), __ldg(&out[base + x]), sum);
    sum = warp_sum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS, 2)
    attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                           const float* __restrict__ dout, const float* __restrict__ lse,
                           const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv,
                           unsigned tokens, unsigned heads, unsigned d, unsigned tile, unsigned lds, float scale) {
  attn::with_tile(tile, [&](auto t) {
    attn::bwd_dkdv<decltype(t)::value>(q, k, v, dout, lse, delta, dk, dv, tokens, heads, d, lds, scale);
  });
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS, 2)
    attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, float* __restrict__ dq, unsigned tokens, unsigned heads,
                         unsigned d, unsigned tile, unsigned lds, float scale) {
  attn::with_tile(tile, [&](auto t) {
    attn::bwd_dq<decltype(t)::value>(q, k, v, dout, lse, delta, dq, tokens, heads, d, lds, scale);
  });
}
