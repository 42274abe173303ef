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
// accumulators live in registers, ATT_ACC per thread. Shared memory holds the T x d operand
// tiles (rows padded to an odd stride) and one T x T tile of scores.
#include "common.cuh"

constexpr unsigned ATT_THREADS = 256;
constexpr unsigned ATT_ACC = 16;

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

// epilogue(e, dot) for every element e = r * T + c of the T x T tile, dot = a[r] . b[c] over d.
// With fewer than ATT_THREADS dots (T = 8), `split` adjacent lanes share one dot and combine
// with an xor butterfly; every loop below has the same trip count on all threads (T * T * split
// is a multiple of ATT_THREADS), so the full-mask shuffles are reached by the whole warp.
template <class Epilogue>
__device__ __forceinline__ void tile_dots(const float* a, const float* b, unsigned lds, unsigned T, unsigned d,
                                          Epilogue epilogue) {
  const unsigned n = T * T, split = n >= ATT_THREADS ? 1 : ATT_THREADS / n;
  for (unsigned s = threadIdx.x; s < n * split; s += ATT_THREADS) {
    const unsigned e = s / split, part = s % split;
    const float* ar = a + (e / T) * lds;
    const float* bc = b + (e % T) * lds;
    float dot = 0.0f;
    for (unsigned x = part; x < d; x += split) dot = fmaf(ar[x], bc[x], dot);
    for (unsigned o = 1; o < split; o <<= 1) dot += __shfl_xor_sync(FULL_MASK, dot, o);
    if (part == 0) epilogue(e, dot);
  }
}

// The thread's accumulators: acc[i] holds element e = threadIdx.x + i * ATT_THREADS of a
// [rows][d] tile (row e / d, feature e % d). Adds sum_j w(row, j) * m[j][feature] over j < n,
// w(row, j) = w[row * w_row + j * w_j] (so w may be read transposed), after multiplying the old
// value by rescale[row] when given.
__device__ __forceinline__ void tile_accumulate(float (&acc)[ATT_ACC], const float* rescale, const float* w,
                                                unsigned w_row, unsigned w_j, const float* m, unsigned lds,
                                                unsigned rows, unsigned n, unsigned d) {
#pragma unroll
  for (unsigned i = 0; i < ATT_ACC; ++i) {
    const unsigned e = threadIdx.x + i * ATT_THREADS;
    if (e < rows * d) {
      const unsigned r = e / d, x = e % d;
      float sum = 0.0f;
      for (unsigned j = 0; j < n; ++j) sum = fmaf(w[r * w_row + j * w_j], m[j * lds + x], sum);
      acc[i] = (rescale ? acc[i] * rescale[r] : acc[i]) + sum;
    }
  }
}

// Writes factor * acc to rows [t0, t0 + T) of a head (rows past the last token are dropped),
// dividing each row by div[row] when given.
__device__ __forceinline__ void store_rows(float* __restrict__ dst, const Head& hd, unsigned t0, unsigned T,
                                           const float (&acc)[ATT_ACC], float factor, const float* div) {
#pragma unroll
  for (unsigned i = 0; i < ATT_ACC; ++i) {
    const unsigned e = threadIdx.x + i * ATT_THREADS;
    if (e < T * hd.d) {
      const unsigned r = e / hd.d, x = e % hd.d;
      if (t0 + r < hd.tokens)
        dst[hd.base + (size_t)(t0 + r) * hd.row + x] = div ? acc[i] / div[r] : factor * acc[i];
    }
  }
}

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

}  // namespace attn

using namespace attn;

// Shared memory (floats): q and k/v tiles [T][lds], scores [T][T], running max, sum and rescale [T].
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                      float* __restrict__ out, float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d,
                      unsigned T, float scale) {
  DYNAMIC_SHARED(float, smem);
  const unsigned lds = d | 1;  // odd stride: the rows a warp reads at one feature hit distinct banks
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
    tile_dots(q_s, kv_s, lds, T, d, [&](unsigned e, float dot) { s_s[e] = dot; });
    __syncthreads();
    load_rows(kv_s, lds, v, hd, k0, T);
    online_softmax(s_s, row_max, row_sum, rescale, T, min(T, tokens - k0), scale);
    __syncthreads();
    tile_accumulate(acc, rescale, s_s, T, 1, kv_s, lds, T, T, d);
  }
  store_rows(out, hd, q0, T, acc, 1.0f, row_sum);
  for (unsigned r = threadIdx.x; r < T; r += ATT_THREADS)
    if (q0 + r < tokens) lse[stats_base + q0 + r] = row_max[r] + logf(row_sum[r]);
}

// D[b, h, t] = sum over the head's features of dout * out: one warp per row, lanes strided over
// the features, then the warp's fixed butterfly.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_bwd_delta_f32(const float* __restrict__ out, const float* __restrict__ dout, float* __restrict__ delta,
                            unsigned rows, unsigned tokens, unsigned heads, unsigned d) {
  const unsigned lane = threadIdx.x % 32, warps = ATT_THREADS / 32;
  // The row is the same on every lane of a warp, so whole warps enter or leave the loop together.
  for (unsigned row = blockIdx.x * warps + threadIdx.x / 32; row < rows; row += gridDim.x * warps) {
    const unsigned t = row % tokens, bh = row / tokens, b = bh / heads, h = bh % heads;
    const size_t base = ((size_t)b * tokens + t) * heads * d + (size_t)h * d;
    float sum = 0.0f;
    for (unsigned x = lane; x < d; x += 32) sum = fmaf(__ldg(&dout[base + x]), __ldg(&out[base + x]), sum);
    sum = warp_sum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

// Shared memory (floats) of both gradient kernels: four tiles [T][lds], P / dS [T][T], lse and
// D [T].
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                           const float* __restrict__ dout, const float* __restrict__ lse,
                           const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv,
                           unsigned tokens, unsigned heads, unsigned d, unsigned T, float scale) {
  DYNAMIC_SHARED(float, smem);
  const unsigned lds = d | 1;
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
    // P = exp(S - lse); zero outside the real queries and keys (padding rows would add exp(-0)).
    tile_dots(q_s, k_s, lds, T, d, [&](unsigned e, float dot) {
      const unsigned r = e / T, c = e % T;
      p_s[e] = q0 + r < tokens && k0 + c < tokens ? expf(dot * scale - lse_s[r]) : 0.0f;
    });
    __syncthreads();
    tile_accumulate(dv_acc, nullptr, p_s, 1, T, do_s, lds, T, T, d);  // dV[c] += sum_r P[r][c] dO[r]
    __syncthreads();
    // dS = P * (dP - D), dP = dO V^T, in place: each element is read and written by one thread.
    tile_dots(do_s, v_s, lds, T, d, [&](unsigned e, float dot) { p_s[e] *= dot - delta_s[e / T]; });
    __syncthreads();
    tile_accumulate(dk_acc, nullptr, p_s, 1, T, q_s, lds, T, T, d);  // dK[c] += sum_r dS[r][c] Q[r]
  }
  store_rows(dk, hd, k0, T, dk_acc, scale, nullptr);
  store_rows(dv, hd, k0, T, dv_acc, 1.0f, nullptr);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, float* __restrict__ dq, unsigned tokens, unsigned heads,
                         unsigned d, unsigned T, float scale) {
  DYNAMIC_SHARED(float, smem);
  const unsigned lds = d | 1;
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
    // P as in the dK/dV kernel: padding keys must not reach dQ.
    tile_dots(q_s, k_s, lds, T, d, [&](unsigned e, float dot) {
      const unsigned r = e / T, c = e % T;
      p_s[e] = q0 + r < tokens && k0 + c < tokens ? expf(dot * scale - lse_s[r]) : 0.0f;
    });
    // The next call gives element e to the same thread as this one did, so dS needs no barrier.
    tile_dots(do_s, v_s, lds, T, d, [&](unsigned e, float dot) { p_s[e] *= dot - delta_s[e / T]; });
    __syncthreads();
    tile_accumulate(dq_acc, nullptr, p_s, T, 1, k_s, lds, T, T, d);  // dQ[r] += sum_c dS[r][c] K[c]
  }
  store_rows(dq, hd, q0, T, dq_acc, scale, nullptr);
}
