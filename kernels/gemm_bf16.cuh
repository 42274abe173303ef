// The bf16 tensor-core GEMM core that the linear and convolution kernels share (issue #15): a
// 64x64 block tile, 4 warps in a 2x2 grid of 32x32 warp tiles (2 m16 x 4 n8 mma tiles, 32 f32
// accumulators per lane), or a 128x128 one (8 warps of 64x32, 64 accumulators per lane: twice the
// reuse of every operand byte, for large problems), K in slices of BK = 32 through a STAGES-deep cp.async pipeline. A kernel
// supplies only a loader (which global elements make up slice s of its A and B tiles: a plain
// matrix, an im2col gather, a transposed view) and an epilogue over gbf16_for_each.
//
// Shared-memory tiles come in two layouts, chosen per operand by where the global data is
// contiguous (the 16-byte cp.async chunks must be contiguous in both places):
//   K_CONTIG:  [64 rows of m (or n)][LDK = 40] bf16, contiguous along k: x [m][k], W [n][k].
//              Fragments by ldmatrix (no .trans).
//   MN_CONTIG: [32 rows of k][LDM = 72] bf16, contiguous along m (or n): dY^T, W^T, im2col^T.
//              Fragments by ldmatrix.trans: the stored 8x8 matrix has k rows, and .trans hands lane l
//              the stored [2(l&3)][l>>2], [2(l&3)+1][l>>2], i.e. k = 2t, 2t+1 at m (or n) = g, which
//              is exactly the pair the A and B fragments want in one register.
// Both row pitches keep ldmatrix conflict-free: 80 and 144 bytes are odd multiples of 16, so the 8
// rows one ldmatrix phase reads land in 8 distinct 16-byte bank groups.
//
// Order of the sum, fixed (deterministic, and what the host models in the tests replay): for each
// output, the k16 steps in increasing k, each one mma accumulating into the f32 result of the
// previous; slices past K are zero-filled, so a K that is not a multiple of 32 adds exact zeros.
#pragma once
#include "tensor_core.cuh"

namespace gbf16 {
constexpr unsigned BK = 32, STAGES = 3, LDK = 40;
constexpr int K_CONTIG = 0, MN_CONTIG = 1;
// A T x T block tile (T = 64 or 128): 2 x T/32 warps of (T/2) x 32, i.e. MI = T/32 m16 tiles and
// 4 n8 tiles per warp. Either layout of one operand's tile fits in SLOT (T x 40 >= 32 x (T + 8)),
// and each thread moves CHUNKS_PER_THREAD = 2 chunks of 8 bf16 (16 bytes) per operand per slice.
template <unsigned T>
struct Tile {
  static constexpr unsigned TILE = T, THREADS = 2 * T, MI = T / 32, WARPS_N = T / 32, LDM = T + 8;
  static constexpr unsigned SLOT = T * LDK, STAGE_ELEMS = 2 * SLOT, SHARED_BYTES = STAGES * STAGE_ELEMS * 2;
  static constexpr unsigned CHUNKS_PER_THREAD = T * BK / 8 / THREADS;
};
// The 64x64 tile's, which most kernels use.
constexpr unsigned TILE = 64, THREADS = Tile<64>::THREADS, LDM = Tile<64>::LDM, SLOT = Tile<64>::SLOT;
constexpr unsigned STAGE_ELEMS = Tile<64>::STAGE_ELEMS, SHARED_BYTES = Tile<64>::SHARED_BYTES;
constexpr unsigned CHUNKS_PER_THREAD = Tile<64>::CHUNKS_PER_THREAD;
}  // namespace gbf16

// Division by a divisor known only at run time, for dividends below 2^31 (the loaders' indices:
// the launchers' 32-bit length checks with at least 8 channels keep pixels below 2^29): floor(n /
// d) as a multiply-high and a shift (Granlund & Montgomery, "Division by invariant integers using
// multiplication", PLDI 1994). With l = ceil(log2 d) and m = ceil(2^(31+l) / d), which fits 32
// bits as d > 2^(l-1): m d = 2^(31+l) + e with 0 <= e < d <= 2^l, so n m / 2^(31+l) = n/d + e n /
// (d 2^(31+l)), and e n < 2^(31+l) keeps the floor exact. The high word alone, shifted by l - 1,
// has the same floor (the dropped low word adds less than 2^(1-l)). d = 1 gives n. A runtime
// u32 division is about 15 issued instructions, this is 2; the loaders did several per chunk
// per slice, which made them most of a convolution main loop's instructions (tests/sass.rs).
struct GbfDiv {
  unsigned d, m, s;
  __device__ __forceinline__ explicit GbfDiv(unsigned divisor) : d(divisor), m(0), s(0) {
    if (d > 1) {
      const unsigned l = 32 - __clz((int)(d - 1));
      m = (unsigned)(((1ull << (31 + l)) + d - 1) / d);
      s = l - 1;
    }
  }
  __device__ __forceinline__ unsigned div(unsigned n) const { return d == 1 ? n : __umulhi(n, m) >> s; }
};

// Where chunk j (0 .. CHUNKS_PER_THREAD) of this thread lies in an operand tile of layout Major:
// `row` along m (or n) and `k` within the slice, each the first of the chunk's 8 elements (k for
// K_CONTIG, row for MN_CONTIG); `dst` is its shared-memory address inside `slot`.
struct GbfChunk {
  unsigned row, k;
  unsigned short* dst;
};
template <int Major, unsigned T = 64>
__device__ __forceinline__ GbfChunk gbf16_chunk(unsigned short* slot, unsigned j) {
  const unsigned c = threadIdx.x + j * gbf16::Tile<T>::THREADS;
  if constexpr (Major == gbf16::K_CONTIG) {
    const unsigned row = c / 4, k = (c % 4) * 8;  // 4 chunks per 32-wide row
    return {row, k, slot + row * gbf16::LDK + k};
  } else {
    const unsigned k = c / (T / 8), row = (c % (T / 8)) * 8;  // T / 8 chunks per k row
    return {row, k, slot + k * gbf16::Tile<T>::LDM + row};
  }
}

// This lane's A fragments for m16 tiles wm + 16 mi (mi = 0 .. MI - 1) at k16 step kk of the slice.
template <int Major, unsigned MI>
__device__ __forceinline__ void gbf16_load_a(uint32_t (&a)[MI][4], const unsigned short* sa, unsigned wm, unsigned kk,
                                             unsigned l) {
#pragma unroll
  for (unsigned mi = 0; mi < MI; ++mi) {
    // Matrix q = l >> 3 is a_q: q & 1 picks rows +8, q >> 1 picks k +8.
    const unsigned m = wm + 16 * mi + 8 * ((l >> 3) & 1), k = kk + 8 * (l >> 4);
    if constexpr (Major == gbf16::K_CONTIG)
      ldmatrix<4, false>(a[mi], sa + (m + (l & 7)) * gbf16::LDK + k);
    else
      ldmatrix<4, true>(a[mi], sa + (k + (l & 7)) * gbf16::Tile<32 * MI>::LDM + m);
  }
}

// This lane's B fragments for n8 tiles wn + 8 nj (nj = 0 .. 3), two per ldmatrix.x4; LDM is the
// MN_CONTIG pitch of the block's tile.
template <int Major, unsigned LDM>
__device__ __forceinline__ void gbf16_load_b(uint32_t (&b)[4][2], const unsigned short* sb, unsigned wn, unsigned kk,
                                             unsigned l) {
#pragma unroll
  for (unsigned nj = 0; nj < 4; nj += 2) {
    // Matrix q = l >> 3: q & 1 picks k +8 (register b1), q >> 1 picks the next n8 tile.
    const unsigned n = wn + 8 * nj + 8 * (l >> 4), k = kk + 8 * ((l >> 3) & 1);
    uint32_t r[4];
    if constexpr (Major == gbf16::K_CONTIG)
      ldmatrix<4, false>(r, sb + (n + (l & 7)) * gbf16::LDK + k);
    else
      ldmatrix<4, true>(r, sb + (k + (l & 7)) * LDM + n);
    b[nj][0] = r[0], b[nj][1] = r[1], b[nj + 1][0] = r[2], b[nj + 1][1] = r[3];
  }
}

// This warp's corner in the block tile of a block whose warps hold MI m16 tiles each.
template <unsigned MI>
__device__ __forceinline__ void gbf16_warp_corner(unsigned& wm, unsigned& wn) {
  const unsigned warp = threadIdx.x / 32;
  wm = (warp / gbf16::Tile<32 * MI>::WARPS_N) * 16 * MI, wn = (warp % gbf16::Tile<32 * MI>::WARPS_N) * 32;
}

// The pipeline over slices first .. first + slices - 1 (a split-K block's share; 0 .. all for the
// others). `load(stage, s)` issues the cp.asyncs of slice s: A into stage[0, SLOT), B into
// stage[SLOT, 2 SLOT), every chunk of both tiles (zero-filled where outside the operands).
template <int AMajor, int BMajor, class Loader, unsigned MI>
__device__ __forceinline__ void gbf16_mainloop(float (&acc)[MI][4][4], unsigned short* smem, const Loader& load,
                                               unsigned first, unsigned slices) {
  using T = gbf16::Tile<32 * MI>;
  const unsigned l = threadIdx.x % 32;
  unsigned wm, wn;
  gbf16_warp_corner<MI>(wm, wn);
  for (unsigned s = 0; s < gbf16::STAGES - 1; ++s) {
    if (s < slices) load(smem + s * T::STAGE_ELEMS, first + s);
    cp_async_commit();  // an empty group past the last slice keeps the wait count uniform
  }
  for (unsigned s = 0; s < slices; ++s) {
    cp_async_wait<gbf16::STAGES - 2>();  // slice s has landed (this thread's part) ...
    __syncthreads();                     // ... and every thread's; and slice s-1's readers are done
    const unsigned next = s + gbf16::STAGES - 1;
    if (next < slices) load(smem + (next % gbf16::STAGES) * T::STAGE_ELEMS, first + next);
    cp_async_commit();
    const unsigned short* sa = smem + (s % gbf16::STAGES) * T::STAGE_ELEMS;
    for (unsigned kk = 0; kk < gbf16::BK; kk += 16) {
      uint32_t a[MI][4], b[4][2];
      gbf16_load_a<AMajor>(a, sa, wm, kk, l);
      gbf16_load_b<BMajor, T::LDM>(b, sa + T::SLOT, wn, kk, l);
#pragma unroll
      for (unsigned mi = 0; mi < MI; ++mi)
#pragma unroll
        for (unsigned nj = 0; nj < 4; ++nj) mma_bf16_16816(acc[mi][nj], a[mi], b[nj], acc[mi][nj]);
    }
  }
  cp_async_wait<0>();  // only empty groups can remain; no copy is left pending at exit
}

// All of K in one block.
template <int AMajor, int BMajor, class Loader, unsigned MI>
__device__ __forceinline__ void gbf16_mainloop(float (&acc)[MI][4][4], unsigned short* smem, const Loader& load,
                                               unsigned slices) {
  gbf16_mainloop<AMajor, BMajor>(acc, smem, load, 0u, slices);
}

// Split-K: this block's share of the slices when `splits` blocks divide them, each taking
// ceil(slices / splits) in order (the launcher picks splits so that none is empty).
struct GbfSplit {
  unsigned first, count;
};
__device__ __forceinline__ GbfSplit gbf16_split(unsigned slices, unsigned splits, unsigned split) {
  const unsigned per = (slices + splits - 1) / splits, first = min(slices, split * per);
  return {first, min(per, slices - first)};
}

// Calls f(row, col, value) for each of this lane's accumulators, row and col inside the block
// tile (C fragment: row g + 8 (i >> 1), col 2t + (i & 1)). Pairs (i, i + 1) are adjacent columns
// of one row.
template <unsigned MI, class F>
__device__ __forceinline__ void gbf16_for_each(const float (&acc)[MI][4][4], F&& f) {
  const unsigned l = threadIdx.x % 32, g = l >> 2, t = l & 3;
  unsigned wm, wn;
  gbf16_warp_corner<MI>(wm, wn);
  // Unrolled in full so that acc stays in registers: a rolled loop indexes it at run time, which
  // puts it in local memory (seen with conv2d_fwd_bf16's longer epilogue: a 128-byte stack frame).
#pragma unroll
  for (unsigned mi = 0; mi < MI; ++mi)
#pragma unroll
    for (unsigned nj = 0; nj < 4; ++nj)
#pragma unroll
      for (unsigned i = 0; i < 4; ++i) f(wm + 16 * mi + g + 8 * (i >> 1), wn + 8 * nj + 2 * t + (i & 1), acc[mi][nj][i]);
}

// Split-K's store: the raw accumulators of one split, partial[split][M][N], for a finishing
// kernel to add in split order.
template <unsigned MI>
__device__ __forceinline__ void gbf16_store_partial(const float (&acc)[MI][4][4], float* partial, unsigned split,
                                                    unsigned m0, unsigned n0, unsigned M, unsigned N) {
  float* out = partial + (size_t)split * M * N;
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    if (m0 + r < M && n0 + c < N) out[(size_t)(m0 + r) * N + n0 + c] = v;
  });
}

// Split-K without a second launch. Each split of an output tile stores its partial sum, then
// counts itself in the tile's counter (the device's split counters, src/gpu/mod.rs: zero at rest);
// the split that arrives last gets true, and leaves the counter at zero for the next launch or
// graph replay. A fence on each side: the partial sums are visible before the count, and read
// after it. `arrived`: a shared word (the operand tiles' memory, free once the main loop is done:
// the first barrier waits for every warp to leave it; static shared would not fit beside the
// 128 tile's opt-in).
__device__ __forceinline__ bool gbf16_last_split(unsigned* counter, unsigned splits, volatile unsigned* arrived) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    *arrived = atomicAdd(counter, 1u) + 1u;
    if (*arrived == splits) *counter = 0u;
  }
  __syncthreads();
  if (*arrived != splits) return false;
  __threadfence();
  return true;
}

// The last split's work: f(m, n, v) for each output of the T x T tile at (m0, n0) inside M x N,
// v = 0 + the splits' partial sums in split order (so the bits do not depend on which split came
// last). Loads through L2 (__ldcg): other blocks wrote them. A thread keeps GBF16_ADD_AHEAD
// outputs' sums going at once, so as many loads are in flight, instead of one output at a time.
// The splits are still added one after another, an L2 round trip each: on the H200 a batch-1
// convolution of 16 splits (256 blocks) took 36 us with the SMs active 37% of it (ncu), and this
// change did not move the sampler's time (2.64 -> 2.81 ms per evaluation, run to run). A cluster
// of a tile's splits adding through distributed shared memory would remove that tail. The
// launchers check that splits x M x N fits in 32 bits.
constexpr unsigned GBF16_ADD_AHEAD = 16;
template <unsigned T, class F>
__device__ __forceinline__ void gbf16_add_splits(const float* partial, unsigned splits, unsigned m0, unsigned n0,
                                                 unsigned M, unsigned N, F&& f) {
  const unsigned plane = M * N;
  for (unsigned e0 = threadIdx.x; e0 < T * T; e0 += GBF16_ADD_AHEAD * blockDim.x) {
    unsigned at[GBF16_ADD_AHEAD];
    float v[GBF16_ADD_AHEAD];
#pragma unroll
    for (unsigned j = 0; j < GBF16_ADD_AHEAD; ++j) {
      const unsigned e = e0 + j * blockDim.x, m = m0 + e / T, n = n0 + e % T;
      at[j] = e < T * T && m < M && n < N ? m * N + n : ~0u;  // ~0u: no output here
      v[j] = 0.0f;
    }
    for (unsigned s = 0; s < splits; ++s) {
      const float* split = partial + s * plane;
#pragma unroll
      for (unsigned j = 0; j < GBF16_ADD_AHEAD; ++j)
        if (at[j] != ~0u) v[j] += __ldcg(split + at[j]);
    }
#pragma unroll
    for (unsigned j = 0; j < GBF16_ADD_AHEAD; ++j)
      if (at[j] != ~0u) f(at[j] / N, at[j] % N, v[j]);
  }
}
