// Multi-head softmax attention forward on the tensor cores (issue #15), FlashAttention-2 style:
// q, k, v bf16 [batch, tokens, heads * d]; out f32 (same tensor), lse f32 [batch, heads, tokens]
// = log sum_j exp(scale q . k_j), exactly the f32 kernel's outputs (attention.cu), so either
// backward can consume them. out is f32, or (the _to_bf16 kernels) that f32 value rounded to bf16:
// what an attention block's output projection reads as its bf16 operand, which the backward's
// D = rowsum(dO * O) then reads too (attention_bwd_bf16.cu), as FlashAttention's does.
//
// Block: 4 warps, 64 query rows of one (image, head), warp w rows 16w .. 16w + 15 (shared
// layout and products in attention_bf16.cuh). Per key tile of BN rows, through a STAGES-deep
// cp.async pipeline (K and V of one tile form one group):
//   S = Q K^T (mma_abt; Q read from shared memory on each tile, so registers hold only S and O);
//   online softmax on the C fragments: a lane holds rows g and g + 8, columns 8j + 2t, +1; the
//     row max and sum are combined over the 4 lanes of a quad (quad_max / quad_sum);
//   P = exp2(S scale log2e - m), rounded to bf16, reused in place as the A operand (to_a);
//   O = O * exp2(m_old - m) + P V (mma_pb).
// Softmax statistics are f32 in the log2 domain (m); the row sum adds the f32 p before rounding,
// so lse = m ln 2 + log(sum) does not inherit the bf16 rounding. Keys past the last token score
// -inf (their K and V rows are zero-filled, so 0 * V stays 0); query rows past it read zero Q and
// are never stored.
//
// Order, fixed (deterministic, no atomics): key tiles in increasing order; within a tile the mma k
// steps in increasing order; each lane's partial row sum over its columns, quads combined once at
// the end by quad_sum.
#include "attention_bf16.cuh"
#include "tensor_core.cuh"  // also via the header; named here so tests/sass.rs checks these kernels

namespace abf16 {

// Rows g (h = 0) and g + 8 (h = 1) of the warp's scores: masks keys >= `valid`, scales to the log2
// domain, updates the running max m and the lane's partial sum l, rescales o, and leaves p in s.
template <unsigned NT, unsigned NF>
__device__ __forceinline__ void online_softmax(float (&s)[NT][4], float (&m)[2], float (&l)[2], float (&o)[NF][4],
                                               float c, unsigned valid) {
  const unsigned t = threadIdx.x % 4;
#pragma unroll
  for (unsigned h = 0; h < 2; ++h) {
    float mx = m[h];
#pragma unroll
    for (unsigned j = 0; j < NT; ++j)
#pragma unroll
      for (unsigned e = 0; e < 2; ++e) {
        const float z = 8 * j + 2 * t + e < valid ? __fmul_rn(s[j][2 * h + e], c) : -INFINITY;
        s[j][2 * h + e] = z;
        mx = fmaxf(mx, z);
      }
    mx = quad_max(mx);  // finite: every tile holds a real key
    const float factor = exp2f(m[h] - mx);  // 0 on the first tile (m = -inf)
    m[h] = mx;
    float sum = 0.0f;
#pragma unroll
    for (unsigned j = 0; j < NT; ++j)
#pragma unroll
      for (unsigned e = 0; e < 2; ++e) {
        const float p = exp2f(s[j][2 * h + e] - mx);
        s[j][2 * h + e] = p;
        sum += p;
      }
    l[h] = __fadd_rn(__fmul_rn(l[h], factor), sum);
#pragma unroll
    for (unsigned f = 0; f < NF; ++f) {
      o[f][2 * h] *= factor;
      o[f][2 * h + 1] *= factor;
    }
  }
}

__device__ __forceinline__ void put_out(float* out, size_t i, float v) { out[i] = v; }
__device__ __forceinline__ void put_out(unsigned short* out, size_t i, float v) {
  out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// out = o / l for the warp's rows below `tokens` and features below d, stored as f32 or rounded
// to bf16 (nearest even); lse for those rows.
template <unsigned NF, typename O>
__device__ __forceinline__ void store_out(O* __restrict__ out, float* __restrict__ lse, const Head& hd,
                                          unsigned stats_base, unsigned r0, const float (&o)[NF][4],
                                          const float (&m)[2], float (&l)[2]) {
  const unsigned lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (unsigned h = 0; h < 2; ++h) {
    l[h] = quad_sum(l[h]);
    const unsigned r = r0 + g + 8 * h;
    if (r >= hd.tokens) continue;
    const size_t row = hd.base + (size_t)r * hd.row;
#pragma unroll
    for (unsigned f = 0; f < NF; ++f)
#pragma unroll
      for (unsigned e = 0; e < 2; ++e) {
        const unsigned x = 8 * f + 2 * t + e;
        if (x < hd.d) put_out(out, row + x, __fdiv_rn(o[f][2 * h + e], l[h]));
      }
    if (t == 0) lse[stats_base + r] = __fadd_rn(__fmul_rn(m[h], LN2), logf(l[h]));
  }
}

// Shared memory (bf16): Q [BM][LDS], then STAGES stages of K [BN][LDS] and V [BN][LDS].
template <unsigned D, typename O>
__device__ __forceinline__ void fwd(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                    const unsigned short* __restrict__ v, O* __restrict__ out,
                                    float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d,
                                    float scale) {
  using C = Cfg<D>;
  constexpr unsigned STAGE = 2 * C::BN * C::LDS;
  DYNAMIC_SHARED(unsigned short, smem);
  unsigned short* q_s = smem;
  unsigned short* kv_s = smem + BM * C::LDS;
  Head hd;
  unsigned stats_base;
  const unsigned q0 = block_tile(tokens, heads, d, hd, stats_base), warp = threadIdx.x / 32;
  const unsigned tiles = (tokens + C::BN - 1) / C::BN;
  load_rows<D, BM>(q_s, q, hd, q0);  // joins the first group
  for (unsigned s = 0; s < STAGES - 1; ++s) {
    if (s < tiles) load_kv<D>(kv_s + s * STAGE, k, v, hd, s * C::BN);
    cp_async_commit();  // an empty group past the last tile keeps the wait count uniform
  }
  const float c = __fmul_rn(scale, LOG2E);
  float o[C::NF][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (unsigned j = 0; j < tiles; ++j) {
    cp_async_wait<STAGES - 2>();  // tile j has landed (this thread's part) ...
    __syncthreads();              // ... and every thread's; tile j - 1's stage is no longer read
    const unsigned next = j + STAGES - 1;
    if (next < tiles) load_kv<D>(kv_s + (next % STAGES) * STAGE, k, v, hd, next * C::BN);
    cp_async_commit();
    const unsigned short* k_s = kv_s + (j % STAGES) * STAGE;
    float s[C::NT][4];
    mma_abt<D, C::NT, C::LDS>(s, q_s + 16 * warp * C::LDS, k_s, d);
    online_softmax(s, m, l, o, c, tokens - j * C::BN);
    uint32_t p[C::NT / 2][4];
    to_a(s, p);
    mma_pb<C::NT / 2, C::NF, C::LDS>(o, p, k_s + C::BN * C::LDS, d);
  }
  cp_async_wait<0>();  // only empty groups can remain; no copy is left pending at exit
  store_out(out, lse, hd, stats_base, q0 + 16 * warp, o, m, l);
}

}  // namespace abf16

// One kernel per head-dim instantiation (the launcher picks the smallest D >= d): separate
// kernels, so each gets the registers its D needs rather than the largest one's.
extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_d32(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                           const unsigned short* __restrict__ v, float* __restrict__ out, float* __restrict__ lse,
                           unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<32>(q, k, v, out, lse, tokens, heads, d, scale);
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_d64(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                           const unsigned short* __restrict__ v, float* __restrict__ out, float* __restrict__ lse,
                           unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<64>(q, k, v, out, lse, tokens, heads, d, scale);
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_d128(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                            const unsigned short* __restrict__ v, float* __restrict__ out, float* __restrict__ lse,
                            unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<128>(q, k, v, out, lse, tokens, heads, d, scale);
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_d256(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                            const unsigned short* __restrict__ v, float* __restrict__ out, float* __restrict__ lse,
                            unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<256>(q, k, v, out, lse, tokens, heads, d, scale);
}

// The same with out rounded to bf16 in the store (an attention block's output, which its output
// projection reads as a bf16 operand).
extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_to_bf16_d32(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                   const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
                                   float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<32>(q, k, v, out, lse, tokens, heads, d, scale);
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_to_bf16_d64(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                   const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
                                   float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<64>(q, k, v, out, lse, tokens, heads, d, scale);
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_to_bf16_d128(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                    const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
                                    float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<128>(q, k, v, out, lse, tokens, heads, d, scale);
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16_to_bf16_d256(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                    const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
                                    float* __restrict__ lse, unsigned tokens, unsigned heads, unsigned d, float scale) {
  abf16::fwd<256>(q, k, v, out, lse, tokens, heads, d, scale);
}
