// Multi-head softmax attention backward on the tensor cores (issue #15), FlashAttention-2 style:
// q, k, v, dout bf16; out (the forward's: f32, or bf16 for the _out_bf16 dQ kernels), lse (f32)
// and the gradients f32; P is recomputed from the saved lse and never written to memory. With
// scale s, z = S s log2e (log2 domain), lse2 = lse log2e: P = exp2(z - lse2), dP = dO V^T,
// D = rowsum(dO * O), dS = P (dP - D), dV = P^T dO, dK = s dS^T Q, dQ = s dS K.
//
// Two kernels per head dim (layouts and products in attention_bf16.cuh), no atomics, every
// gradient element owned by one lane and summed in a fixed order (deterministic):
// - attention_bwd_dq_bf16_d*: a block owns 64 queries (warp w rows 16w ..), first computes D for
//   its rows (written for the other kernel), then streams K and V tiles: S and dP by mma_abt, dS
//   on the C fragments (rows g, g + 8 per lane), reused as A fragments for dQ += dS K (mma_pb).
// - attention_bwd_dkdv_bf16_d*: a block owns 64 keys and streams Q, dO, lse and D tiles of BQ
//   queries. It computes the transposed products directly, so the C fragments of S^T = K Q^T
//   are the A fragments of dV += P^T dO, and those of dS^T = P^T (V dO^T - D) of dK += dS^T Q:
//   no transpose through shared memory. At D = 256 the 16 x 256 dK and dV accumulators would
//   take 256 registers, so dK and dV are two kernels there (dk / dv), each recomputing P^T.
// It runs after the dQ kernel, which writes D.
#include "attention_bf16.cuh"
#include "tensor_core.cuh"  // also via the header; named here so tests/sass.rs checks these kernels

namespace abf16 {

// The dK/dV kernels' query tile: 64 rows up to D = 64, 32 above (the accumulators' registers).
template <unsigned D>
struct BwdCfg {
  static constexpr unsigned BQ = D > 64 ? 32 : 64;
  static constexpr unsigned NQ = BQ / 8;
  // One stage (bf16 units): Q [BQ][LDS], dO [BQ][LDS], then lse and D [BQ] f32 (16-byte aligned).
  static constexpr unsigned STAGE = 2 * BQ * Cfg<D>::LDS + 2 * BQ * 2;
};

__device__ __forceinline__ float bf16_to_f32(unsigned short x) { return __uint_as_float((unsigned)x << 16); }

// D = dO . O for the warp's rows g (h = 0) and g + 8 (h = 1), written to delta; lse2 for them.
// The 4 lanes of a quad stride the features, then quad_sum (a fixed order).
// The forward's output as f32: itself, or the bf16 output (attention_fwd_bf16_to_bf16) widened.
__device__ __forceinline__ float out_f32(const float* out, size_t i) { return out[i]; }
__device__ __forceinline__ float out_f32(const unsigned short* out, size_t i) { return bf16_to_f32(out[i]); }

template <typename O>
__device__ __forceinline__ void row_stats(const O* __restrict__ out, const unsigned short* __restrict__ dout,
                                          const float* __restrict__ lse, float* __restrict__ delta, const Head& hd,
                                          unsigned stats_base, unsigned r0, float (&dl)[2], float (&lse2)[2]) {
  const unsigned lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (unsigned h = 0; h < 2; ++h) {
    const unsigned r = r0 + g + 8 * h;
    float sum = 0.0f;
    if (r < hd.tokens) {
      const size_t row = hd.base + (size_t)r * hd.row;
      for (unsigned x = t; x < hd.d; x += 4) sum = fmaf(bf16_to_f32(dout[row + x]), out_f32(out, row + x), sum);
    }
    sum = quad_sum(sum);
    dl[h] = sum;
    lse2[h] = r < hd.tokens ? __fmul_rn(lse[stats_base + r], LOG2E) : 0.0f;
    if (t == 0 && r < hd.tokens) delta[stats_base + r] = sum;
  }
}

// dS = P (dP - D) in place over s, P = exp2(s c - lse2) for keys below `valid` (0 past them);
// rows g, g + 8 (s[j][i]: row g + 8 (i >> 1), key 8j + 2t + (i & 1)).
template <unsigned NT>
__device__ __forceinline__ void score_grads(float (&s)[NT][4], const float (&dp)[NT][4], const float (&lse2)[2],
                                            const float (&dl)[2], float c, unsigned valid) {
  const unsigned t = threadIdx.x % 4;
#pragma unroll
  for (unsigned j = 0; j < NT; ++j)
#pragma unroll
    for (unsigned i = 0; i < 4; ++i) {
      const float p = 8 * j + 2 * t + (i & 1) < valid ? exp2f(__fmul_rn(s[j][i], c) - lse2[i >> 1]) : 0.0f;
      s[j][i] = p * (dp[j][i] - dl[i >> 1]);
    }
}

// factor * acc to rows [r0, r0 + 16) of a head (rows g, g + 8 of the warp; those past the last
// token and features past d dropped).
template <unsigned NF>
__device__ __forceinline__ void store_rows(float* __restrict__ dst, const Head& hd, unsigned r0,
                                           const float (&acc)[NF][4], float factor) {
  const unsigned lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (unsigned h = 0; h < 2; ++h) {
    const unsigned r = r0 + g + 8 * h;
    if (r >= hd.tokens) continue;
    float* row = dst + hd.base + (size_t)r * hd.row;
#pragma unroll
    for (unsigned f = 0; f < NF; ++f)
#pragma unroll
      for (unsigned e = 0; e < 2; ++e)
        if (8 * f + 2 * t + e < hd.d) row[8 * f + 2 * t + e] = __fmul_rn(factor, acc[f][2 * h + e]);
  }
}

// Shared memory (bf16): Q [BM][LDS], dO [BM][LDS], then STAGES stages of K [BN][LDS], V [BN][LDS].
template <unsigned D, typename O>
__device__ __forceinline__ void bwd_dq(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                       const unsigned short* __restrict__ v, const O* __restrict__ out,
                                       const unsigned short* __restrict__ dout, const float* __restrict__ lse,
                                       float* __restrict__ delta, float* __restrict__ dq, unsigned tokens,
                                       unsigned heads, unsigned d, float scale) {
  using C = Cfg<D>;
  constexpr unsigned STAGE = 2 * C::BN * C::LDS;
  DYNAMIC_SHARED(unsigned short, smem);
  unsigned short* q_s = smem;
  unsigned short* do_s = q_s + BM * C::LDS;
  unsigned short* kv_s = do_s + BM * C::LDS;
  Head hd;
  unsigned stats_base;
  const unsigned q0 = block_tile(tokens, heads, d, hd, stats_base), warp = threadIdx.x / 32;
  const unsigned tiles = (tokens + C::BN - 1) / C::BN;
  load_rows<D, BM>(q_s, q, hd, q0);  // Q and dO join the first group
  load_rows<D, BM>(do_s, dout, hd, q0);
  for (unsigned s = 0; s < STAGES - 1; ++s) {
    if (s < tiles) load_kv<D>(kv_s + s * STAGE, k, v, hd, s * C::BN);
    cp_async_commit();
  }
  float dl[2], lse2[2];
  row_stats(out, dout, lse, delta, hd, stats_base, q0 + 16 * warp, dl, lse2);
  const float c = __fmul_rn(scale, LOG2E);
  float acc[C::NF][4] = {};
  for (unsigned j = 0; j < tiles; ++j) {
    cp_async_wait<STAGES - 2>();  // tile j has landed (this thread's part) ...
    __syncthreads();              // ... and every thread's; tile j - 1's stage is no longer read
    const unsigned next = j + STAGES - 1;
    if (next < tiles) load_kv<D>(kv_s + (next % STAGES) * STAGE, k, v, hd, next * C::BN);
    cp_async_commit();
    const unsigned short* k_s = kv_s + (j % STAGES) * STAGE;
    float s[C::NT][4], dp[C::NT][4];
    mma_abt<D, C::NT, C::LDS>(s, q_s + 16 * warp * C::LDS, k_s, d);
    mma_abt<D, C::NT, C::LDS>(dp, do_s + 16 * warp * C::LDS, k_s + C::BN * C::LDS, d);
    score_grads(s, dp, lse2, dl, c, tokens - j * C::BN);
    uint32_t a[C::NT / 2][4];
    to_a(s, a);
    mma_pb<C::NT / 2, C::NF, C::LDS>(acc, a, k_s, d);  // K rows [key][feature] = [k][n]
  }
  cp_async_wait<0>();
  store_rows(dq, hd, q0 + 16 * warp, acc, scale);
}

// Q, dO rows [q0, q0 + BQ) and their lse, D into one stage.
template <unsigned D>
__device__ __forceinline__ void load_q_stage(unsigned short* st, const unsigned short* __restrict__ q,
                                             const unsigned short* __restrict__ dout, const float* __restrict__ lse,
                                             const float* __restrict__ delta, const Head& hd, unsigned stats_base,
                                             unsigned q0) {
  constexpr unsigned BQ = BwdCfg<D>::BQ;
  load_rows<D, BQ>(st, q, hd, q0);
  load_rows<D, BQ>(st + BQ * Cfg<D>::LDS, dout, hd, q0);
  float* f = reinterpret_cast<float*>(st + 2 * BQ * Cfg<D>::LDS);
  for (unsigned i = threadIdx.x; i < 2 * BQ; i += THREADS) {
    const unsigned r = i % BQ;
    const float* src = i < BQ ? lse : delta;
    const bool inside = q0 + r < hd.tokens;
    cp_async<4>(f + i, inside ? src + stats_base + q0 + r : src, inside ? 4 : 0);
  }
}

// P^T = exp2(s c - lse2[query]) in place (queries, the columns, below `valid`; 0 past them); with
// dpt, then dS^T = P^T (dP^T - D[query]). Column of s[j][i]: 8j + 2t + (i & 1).
template <unsigned NQ>
__device__ __forceinline__ void probs_t(float (&s)[NQ][4], const float* lse_s, float c, unsigned valid) {
  const unsigned t = threadIdx.x % 4;
#pragma unroll
  for (unsigned j = 0; j < NQ; ++j)
#pragma unroll
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned col = 8 * j + 2 * t + (i & 1);
      s[j][i] = col < valid ? exp2f(__fmul_rn(s[j][i], c) - __fmul_rn(lse_s[col], LOG2E)) : 0.0f;
    }
}

template <unsigned NQ>
__device__ __forceinline__ void grads_t(float (&s)[NQ][4], const float (&dpt)[NQ][4], const float* delta_s) {
  const unsigned t = threadIdx.x % 4;
#pragma unroll
  for (unsigned j = 0; j < NQ; ++j)
#pragma unroll
    for (unsigned i = 0; i < 4; ++i) s[j][i] = s[j][i] * (dpt[j][i] - delta_s[8 * j + 2 * t + (i & 1)]);
}

// Shared memory (bf16): K [BM][LDS], V [BM][LDS], then STAGES stages (BwdCfg::STAGE).
template <unsigned D, bool DK, bool DV>
__device__ __forceinline__ void bwd_dkdv(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                         const unsigned short* __restrict__ v, const unsigned short* __restrict__ dout,
                                         const float* __restrict__ lse, const float* __restrict__ delta,
                                         float* __restrict__ dk, float* __restrict__ dv, unsigned tokens,
                                         unsigned heads, unsigned d, float scale) {
  using C = Cfg<D>;
  using B = BwdCfg<D>;
  DYNAMIC_SHARED(unsigned short, smem);
  unsigned short* k_s = smem;
  unsigned short* v_s = k_s + BM * C::LDS;
  unsigned short* st_s = v_s + BM * C::LDS;
  Head hd;
  unsigned stats_base;
  const unsigned k0 = block_tile(tokens, heads, d, hd, stats_base), warp = threadIdx.x / 32;
  const unsigned tiles = (tokens + B::BQ - 1) / B::BQ;
  load_rows<D, BM>(k_s, k, hd, k0);  // K and V join the first group
  load_rows<D, BM>(v_s, v, hd, k0);
  for (unsigned s = 0; s < STAGES - 1; ++s) {
    if (s < tiles) load_q_stage<D>(st_s + s * B::STAGE, q, dout, lse, delta, hd, stats_base, s * B::BQ);
    cp_async_commit();
  }
  const float c = __fmul_rn(scale, LOG2E);
  float dk_acc[DK ? C::NF : 1][4] = {}, dv_acc[DV ? C::NF : 1][4] = {};
  for (unsigned j = 0; j < tiles; ++j) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const unsigned next = j + STAGES - 1;
    if (next < tiles) load_q_stage<D>(st_s + (next % STAGES) * B::STAGE, q, dout, lse, delta, hd, stats_base, next * B::BQ);
    cp_async_commit();
    const unsigned short* q_st = st_s + (j % STAGES) * B::STAGE;
    const unsigned short* do_st = q_st + B::BQ * C::LDS;
    const float* lse_st = reinterpret_cast<const float*>(do_st + B::BQ * C::LDS);
    float s[B::NQ][4];
    uint32_t a[B::NQ / 2][4];
    mma_abt<D, B::NQ, C::LDS>(s, k_s + 16 * warp * C::LDS, q_st, d);  // S^T: rows keys, columns queries
    probs_t(s, lse_st, c, tokens - j * B::BQ);
    if constexpr (DV) {
      to_a(s, a);
      mma_pb<B::NQ / 2, C::NF, C::LDS>(dv_acc, a, do_st, d);  // dO rows [query][feature] = [k][n]
    }
    if constexpr (DK) {
      float dpt[B::NQ][4];
      mma_abt<D, B::NQ, C::LDS>(dpt, v_s + 16 * warp * C::LDS, do_st, d);  // dP^T = V dO^T
      grads_t(s, dpt, lse_st + B::BQ);
      to_a(s, a);
      mma_pb<B::NQ / 2, C::NF, C::LDS>(dk_acc, a, q_st, d);
    }
  }
  cp_async_wait<0>();
  if constexpr (DK) store_rows(dk, hd, k0 + 16 * warp, dk_acc, scale);
  if constexpr (DV) store_rows(dv, hd, k0 + 16 * warp, dv_acc, 1.0f);
}

}  // namespace abf16

// The dQ kernel's parameters, O the type of the forward's output (f32, or bf16 as unsigned short).
#define ABF16_DQ_ARGS(O)                                                                                           \
  const unsigned short *__restrict__ q, const unsigned short *__restrict__ k, const unsigned short *__restrict__ v, \
      const O *__restrict__ out, const unsigned short *__restrict__ dout, const float *__restrict__ lse,            \
      float *__restrict__ delta, float *__restrict__ dq, unsigned tokens, unsigned heads, unsigned d, float scale
#define ABF16_DKDV_ARGS                                                                                            \
  const unsigned short *__restrict__ q, const unsigned short *__restrict__ k, const unsigned short *__restrict__ v, \
      const unsigned short *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ delta,      \
      float *__restrict__ dk, float *__restrict__ dv, unsigned tokens, unsigned heads, unsigned d, float scale

// One kernel per head-dim instantiation (the launcher picks the smallest D >= d).
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_d32(ABF16_DQ_ARGS(float)) {
  abf16::bwd_dq<32>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_out_bf16_d32(ABF16_DQ_ARGS(unsigned short)) {
  abf16::bwd_dq<32>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_d64(ABF16_DQ_ARGS(float)) {
  abf16::bwd_dq<64>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_out_bf16_d64(ABF16_DQ_ARGS(unsigned short)) {
  abf16::bwd_dq<64>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_d128(ABF16_DQ_ARGS(float)) {
  abf16::bwd_dq<128>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_out_bf16_d128(ABF16_DQ_ARGS(unsigned short)) {
  abf16::bwd_dq<128>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_d256(ABF16_DQ_ARGS(float)) {
  abf16::bwd_dq<256>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_bf16_out_bf16_d256(ABF16_DQ_ARGS(unsigned short)) {
  abf16::bwd_dq<256>(q, k, v, out, dout, lse, delta, dq, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dkdv_bf16_d32(ABF16_DKDV_ARGS) {
  abf16::bwd_dkdv<32, true, true>(q, k, v, dout, lse, delta, dk, dv, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dkdv_bf16_d64(ABF16_DKDV_ARGS) {
  abf16::bwd_dkdv<64, true, true>(q, k, v, dout, lse, delta, dk, dv, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dkdv_bf16_d128(ABF16_DKDV_ARGS) {
  abf16::bwd_dkdv<128, true, true>(q, k, v, dout, lse, delta, dk, dv, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dk_bf16_d256(ABF16_DKDV_ARGS) {
  abf16::bwd_dkdv<256, true, false>(q, k, v, dout, lse, delta, dk, dv, tokens, heads, d, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_dv_bf16_d256(ABF16_DKDV_ARGS) {
  abf16::bwd_dkdv<256, false, true>(q, k, v, dout, lse, delta, dk, dv, tokens, heads, d, scale);
}
