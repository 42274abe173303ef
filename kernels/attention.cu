// Multi-head softmax attention, forward: attention_fwd_f32 (see attention.cuh for the design).
#include "attention.cuh"

namespace attn {

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

}  // namespace attn

extern "C" __global__ void __launch_bounds__(ATT_THREADS, 2)
    attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                      float* __restrict__ out, float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d,
                      unsigned tile, unsigned lds, float scale) {
  attn::with_tile(tile, [&](auto t) {
    attn::fwd<decltype(t)::value>(q, k, v, out, lse, tokens, heads, d, lds, scale);
  });
}
