// Multi-head softmax attention on the tensor cores, bf16 operands and f32 accumulation (issue #15):
// what the forward (attention_bf16.cu) and the backward (attention_bwd_bf16.cu) share. Same
// tensors as the f32 kernels (attention.cuh): q, k, v [batch, tokens, heads * d], lse [batch,
// heads, tokens], scale = 1 / sqrt(d) given by the launcher.
//
// A block is 4 warps; each warp owns 16 rows of the block's 64-row tile (queries in the forward
// and dQ, keys in dK/dV) and streams the other operand's rows through shared memory with cp.async.
// Every product is a warp's 16 x N tile, built from two shapes of mma (fragment layouts in
// tensor_core.cuh; lane l, g = l >> 2, t = l & 3):
//   mma_abt: C[16][N] = A[16][K] B[N][K]^T, A and B rows in shared memory (S = Q K^T, dP = dO V^T);
//   mma_pb:  C[16][N] += P[16][K] B[K][N], P in registers as A fragments (converted from an
//            earlier C by to_a), B rows in shared memory (O += P V, dQ += dS K, dV += P^T dO).
// Head dims are instantiated at D = 32, 64, 128, 256 (the launcher picks the smallest D >= d, d a
// multiple of 8): features d..D are zero-filled by cp.async and their k16 steps and n16 column
// pairs skipped, so a padded instantiation costs only registers.
//
// Shared rows are D + 8 bf16 apart, (D + 8) * 2 bytes = (D / 8 + 1) 16-byte units with D / 8 even:
// an odd number, so the 8 rows one ldmatrix phase reads fall in 8 distinct 16-byte bank groups.
#pragma once
#include "tensor_core.cuh"

namespace abf16 {
constexpr unsigned THREADS = 128, WARPS = 4, BM = 64, STAGES = 2;
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

// Per head-dim instantiation: the streamed tile is 64 rows, 32 at D = 256 (the 16 x D f32
// accumulators take 128 registers there, and four 64-row tiles of 528-byte rows would pass
// sm_80's 163 KiB of shared memory).
template <unsigned D>
struct Cfg {
  static constexpr unsigned BN = D > 128 ? 32 : 64;
  static constexpr unsigned LDS = D + 8;
  static constexpr unsigned NF = D / 8;   // n8 tiles across the features
  static constexpr unsigned NT = BN / 8;  // n8 tiles across the streamed rows
  static_assert(D % 16 == 0 && D <= 256 && BN % 16 == 0, "head-dim instantiation");
};

// Where one (image, head) lives in a [batch, tokens, heads * d] tensor.
struct Head {
  size_t base;      // offset of (image, token 0, head, feature 0)
  size_t row;       // elements between consecutive tokens: heads * d
  unsigned tokens;  // rows in the head
  unsigned d;       // head_dim
};

// Decodes blockIdx.x as (image, head, tile of BM rows); returns the tile's first row.
__device__ __forceinline__ unsigned block_tile(unsigned tokens, unsigned heads, unsigned d, Head& hd,
                                               unsigned& stats_base) {
  const unsigned n_tiles = (tokens + BM - 1) / BM;
  const unsigned bh = blockIdx.x / n_tiles, b = bh / heads, h = bh % heads;
  hd.row = (size_t)heads * d;
  hd.base = (size_t)b * tokens * hd.row + (size_t)h * d;
  hd.tokens = tokens;
  hd.d = d;
  stats_base = bh * tokens;
  return (blockIdx.x % n_tiles) * BM;
}

// Issues (no commit) the cp.asyncs of rows [t0, t0 + ROWS) of a head into shared [ROWS][D + 8]:
// 16-byte chunks, those past the last token or past d zero-filled (src_bytes 0).
template <unsigned D, unsigned ROWS>
__device__ __forceinline__ void load_rows(unsigned short* dst, const unsigned short* __restrict__ src, const Head& hd,
                                          unsigned t0) {
  constexpr unsigned CHUNKS = D / 8;
  for (unsigned c = threadIdx.x; c < ROWS * CHUNKS; c += THREADS) {
    const unsigned r = c / CHUNKS, x = (c % CHUNKS) * 8;
    const bool inside = t0 + r < hd.tokens && x < hd.d;
    // A zero-filled chunk still needs a valid source address: the tensor's first element.
    cp_async<16>(dst + r * Cfg<D>::LDS + x, inside ? src + hd.base + (size_t)(t0 + r) * hd.row + x : src,
                 inside ? 16 : 0);
  }
}

// K and V rows [k0, k0 + BN) into one pipeline stage: K tile then V tile.
template <unsigned D>
__device__ __forceinline__ void load_kv(unsigned short* st, const unsigned short* __restrict__ k,
                                        const unsigned short* __restrict__ v, const Head& hd, unsigned k0) {
  load_rows<D, Cfg<D>::BN>(st, k, hd, k0);
  load_rows<D, Cfg<D>::BN>(st + Cfg<D>::BN * Cfg<D>::LDS, v, hd, k0);
}

// c[j] (n8 tile j: rows g, g + 8, columns 8j + 2t, +1) = A[16][K] B[8 NJ][K]^T over k < kmax
// (rounded up to 16; the rest is zero in shared memory anyway). A: the warp's 16 rows, B: NJ * 8
// rows, both [row][feature] with row stride LDS.
//   A by ldmatrix.x4: lane l addresses row (l & 7) + 8 ((l >> 3) & 1), column kk + 8 (l >> 4), so
//   matrices 0..3 are (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
//   = a registers 0..3 (a_i: row g + 8 ((i >> 1) & 1), col 2t + (i & 1) + 8 (i >> 2)).
//   B rows are [n][k]: non-transposed, matrix register j gives [g][2t, 2t + 1] = (n = g, k = 2t..)
//   = b0, b1. Lane l addresses row n = 8 nj + (l & 7) + 8 (l >> 4), column kk + 8 ((l >> 3) & 1):
//   matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) = b of tile nj,
//   then b of tile nj + 1.
template <unsigned K, unsigned NJ, unsigned LDS>
__device__ __forceinline__ void mma_abt(float (&c)[NJ][4], const unsigned short* a, const unsigned short* b,
                                        unsigned kmax) {
  const unsigned l = threadIdx.x % 32;
#pragma unroll
  for (unsigned j = 0; j < NJ; ++j)
#pragma unroll
    for (unsigned i = 0; i < 4; ++i) c[j][i] = 0.0f;
#pragma unroll
  for (unsigned kk = 0; kk < K; kk += 16) {
    if (kk >= kmax) break;  // uniform across the warp: kmax is a kernel argument
    uint32_t af[4];
    ldmatrix<4, false>(af, a + ((l & 7) + 8 * ((l >> 3) & 1)) * LDS + kk + 8 * (l >> 4));
#pragma unroll
    for (unsigned nj = 0; nj < NJ; nj += 2) {
      uint32_t r[4];
      ldmatrix<4, false>(r, b + (8 * nj + (l & 7) + 8 * (l >> 4)) * LDS + kk + 8 * ((l >> 3) & 1));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_bf16_16816(c[nj], af, b0, c[nj]);
      mma_bf16_16816(c[nj + 1], af, b1, c[nj + 1]);
    }
  }
}

// Two f32 to a bf16 pair (round to nearest even), `lo` in bits 0..15 as the fragments want.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The C fragments of a 16 x 8 NT tile as the A fragments of a 16 x (8 NT) by (8 NT) x N product,
// with no data movement: A k16 step kk covers columns 16 kk .. 16 kk + 15, i.e. C tiles 2 kk and
// 2 kk + 1. A register 0 = (row g, cols 2t, 2t + 1) = c0, c1 of tile 2 kk; register 1 = (row
// g + 8, cols 2t, 2t + 1) = c2, c3 of tile 2 kk; registers 2, 3 = the same of tile 2 kk + 1
// (cols 8 + 2t, +1). Each lane already holds exactly the A elements it must supply.
template <unsigned NT>
__device__ __forceinline__ void to_a(const float (&c)[NT][4], uint32_t (&a)[NT / 2][4]) {
#pragma unroll
  for (unsigned kk = 0; kk < NT / 2; ++kk) {
    a[kk][0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
    a[kk][1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
    a[kk][2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
}

// acc[f] (n8 tile f: rows g, g + 8, columns 8f + 2t, +1) += P[16][16 KS] B[16 KS][8 NF] over
// the column pairs 16 np < nmax; P as A fragments (to_a), B rows [k][n] in shared memory, row
// stride LDS. B is [k][n], so ldmatrix .trans: register j gives matrix j's [2t][g], [2t + 1][g]
// = (k = 2t, 2t + 1; n = g) = b0, b1. Lane l addresses row k = 16 kk + (l & 7) + 8 ((l >> 3) & 1),
// column 16 np + 8 (l >> 4): matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15,
// n 8-15) = b registers 0, 1 of tile 2 np, then of tile 2 np + 1.
template <unsigned KS, unsigned NF, unsigned LDS>
__device__ __forceinline__ void mma_pb(float (&acc)[NF][4], const uint32_t (&p)[KS][4], const unsigned short* b,
                                       unsigned nmax) {
  const unsigned l = threadIdx.x % 32;
#pragma unroll
  for (unsigned kk = 0; kk < KS; ++kk)
#pragma unroll
    for (unsigned np = 0; np < NF / 2; ++np) {
      if (16 * np >= nmax) break;  // uniform: nmax is a kernel argument
      uint32_t r[4];
      ldmatrix<4, true>(r, b + (16 * kk + (l & 7) + 8 * ((l >> 3) & 1)) * LDS + 16 * np + 8 * (l >> 4));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_bf16_16816(acc[2 * np], p[kk], b0, acc[2 * np]);
      mma_bf16_16816(acc[2 * np + 1], p[kk], b1, acc[2 * np + 1]);
    }
}

// Sum over the 4 lanes of a quad (the lanes that share g, i.e. one fragment row), a butterfly
// whose result is the same bits on all 4 lanes (each adds the same two pair sums).
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(FULL_MASK, v, 1);
  return v + __shfl_xor_sync(FULL_MASK, v, 2);
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 1));
  return fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 2));
}

}  // namespace abf16
