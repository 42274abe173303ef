// Multi-head softmax attention, backward: attention_bwd_delta_f32, attention_bwd_dkdv_f32 and
// attention_bwd_dq_f32 (see attention.cuh for the design).
#include "attention.cuh"

namespace attn {

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
