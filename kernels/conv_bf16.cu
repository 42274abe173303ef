// 2-D convolution forward on the tensor cores (issue #15): an implicit GEMM on the core of
// kernels/gemm_bf16.cuh. NHWC activations and OHWI weights in bf16, f32 accumulation:
//   M = batch x out_h x out_w output pixels, N = out_c, K = kernel x kernel x in_c,
//   A[m][k] = x at pixel m's tap (ky, kx) = k / in_c, channel k % in_c (zero in the padding),
//   B[n][k] = w[n][ky][kx][i], i.e. the weight as it is stored.
// Both tiles are K_CONTIG: a 16-byte chunk of A is 8 consecutive channels of one input pixel, so
// in_c must be a multiple of 8 (the launcher checks) and a chunk never straddles two taps.
// Padding taps and rows past M are zero-filled by cp.async's src-size 0 form.
//
// Fused epilogue, in this order, each an f32 add rounded to nearest: + bias[n], + emb[image][n]
// (the time-embedding projection a ResnetBlock adds after its first convolution), + residual
// (same type and layout as the output); then the store, f32 or rounded to bf16 (nearest even).
#include "gemm_bf16.cuh"

// Slice s of the block's im2col rows (A) and weight rows (B), for a T x T block tile. Each thread
// always fills the same two A rows (gbf16_chunk: row = tid / 4 + T/2 j), so their pixel
// coordinates are worked out once.
template <unsigned T>
struct ConvFwdBf16Loader {
  const unsigned short* __restrict__ x;
  const unsigned short* __restrict__ w;
  const unsigned short* row_x[gbf16::CHUNKS_PER_THREAD];  // x's image of the row, null past M
  int iy0[gbf16::CHUNKS_PER_THREAD], ix0[gbf16::CHUNKS_PER_THREAD];
  unsigned in_h, in_w, in_c, kernel, K, out_c, n0;
  GbfDiv by_in_c, by_kernel;

  __device__ __forceinline__ void operator()(unsigned short* stage, unsigned s) const {
#pragma unroll
    for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
      const GbfChunk a = gbf16_chunk<gbf16::K_CONTIG, T>(stage, j);
      const GbfChunk b = gbf16_chunk<gbf16::K_CONTIG, T>(stage + gbf16::Tile<T>::SLOT, j);
      const unsigned k = s * gbf16::BK + a.k, tap = by_in_c.div(k), ci = k - tap * in_c, ky = by_kernel.div(tap);
      const unsigned iy = iy0[j] + ky, ix = ix0[j] + (tap - ky * kernel);  // wrap below 0: outside
      const bool in_a = row_x[j] && k < K && iy < in_h && ix < in_w;
      // A zero-filled chunk still needs a valid source address: the operand's first element.
      cp_async<16>(a.dst, in_a ? row_x[j] + ((size_t)iy * in_w + ix) * in_c + ci : x, in_a ? 16 : 0);
      const unsigned n = n0 + b.row;
      const bool in_b = n < out_c && k < K;
      cp_async<16>(b.dst, in_b ? w + (size_t)n * K + k : w, in_b ? 16 : 0);
    }
  }
};

__device__ __forceinline__ float convbf16_load(const void* p, size_t i, bool bf16) {
  return bf16 ? __uint_as_float((unsigned)static_cast<const unsigned short*>(p)[i] << 16) : static_cast<const float*>(p)[i];
}

// The fused epilogue of output (m, n) with the convolution's sum v, in the order stated above.
struct ConvBf16Epilogue {
  const float* __restrict__ bias;
  const float* __restrict__ emb;
  const void* residual;
  void* y;
  int out_bf16;
  unsigned out_c, pixels;
  __device__ __forceinline__ void operator()(unsigned m, unsigned n, float v) const {
    const size_t at = (size_t)m * out_c + n;
    if (bias) v = __fadd_rn(v, bias[n]);
    if (emb) v = __fadd_rn(v, emb[(size_t)(m / pixels) * out_c + n]);
    if (residual) v = __fadd_rn(v, convbf16_load(residual, at, out_bf16));
    if (out_bf16)
      static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16_rn(v);
    else
      static_cast<float*>(y)[at] = v;
  }
};

// Blocks: `splits` x (M tiles x N tiles) of T x T. With splits = 1 a block owns all of K and
// applies the epilogue; with more (small M: batch 1 at 8x8 or 16x16 gives too few tiles to fill
// the GPU) each split stores its partial sum and the tile's last split to finish adds them in
// split order, then applies the epilogue (gbf16_last_split): deterministic, no float atomics, no
// second launch. The launcher picks the tile and the splits from the shape alone; the tile does
// not change any sum's order, only who computes it.
template <unsigned T>
__device__ __forceinline__ void conv_fwd_bf16(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
                                              const ConvBf16Epilogue& epilogue, unsigned splits,
                                              float* __restrict__ partial, unsigned* __restrict__ counters,
                                              unsigned batch, unsigned in_h, unsigned in_w,
                                              unsigned in_c, unsigned out_h, unsigned out_w, unsigned out_c,
                                              unsigned kernel, unsigned stride, unsigned pad_top, unsigned pad_left) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned M = batch * out_h * out_w, K = kernel * kernel * in_c, pixels = out_h * out_w;
  const unsigned tiles_n = (out_c + T - 1) / T, tiles = tiles_n * ((M + T - 1) / T);
  const unsigned split = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const unsigned m0 = (tile / tiles_n) * T, n0 = (tile % tiles_n) * T;
  ConvFwdBf16Loader<T> load{x, w, {}, {}, {}, in_h, in_w, in_c, kernel, K, out_c, n0, GbfDiv(in_c), GbfDiv(kernel)};
  for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
    const unsigned m = m0 + gbf16_chunk<gbf16::K_CONTIG, T>(smem, j).row, img = m / pixels, p = m % pixels;
    load.row_x[j] = m < M ? x + (size_t)img * in_h * in_w * in_c : nullptr;
    load.iy0[j] = (int)((p / out_w) * stride) - (int)pad_top;
    load.ix0[j] = (int)((p % out_w) * stride) - (int)pad_left;
  }
  float acc[gbf16::Tile<T>::MI][4][4] = {};
  const GbfSplit share = gbf16_split((K + gbf16::BK - 1) / gbf16::BK, splits, split);
  gbf16_mainloop<gbf16::K_CONTIG, gbf16::K_CONTIG>(acc, smem, load, share.first, share.count);
  if (splits > 1) {
    gbf16_store_partial(acc, partial, split, m0, n0, M, out_c);
    if (gbf16_last_split(counters + tile, splits, reinterpret_cast<unsigned*>(smem)))
      gbf16_add_splits<T>(partial, splits, m0, n0, M, out_c, epilogue);
    return;
  }
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    if (m0 + r < M && n0 + c < out_c) epilogue(m0 + r, n0 + c, v);
  });
}

// The two tiles' entry points (same parameters): 64x64 with 128 threads, 128x128 with 256.
#define CONV_FWD_BF16_ARGS                                                                                   \
  const unsigned short *__restrict__ x, const unsigned short *__restrict__ w, const float *__restrict__ bias, \
      const float *__restrict__ emb, const void *residual, void *y, int out_bf16, unsigned splits,           \
      float *__restrict__ partial, unsigned *__restrict__ counters, unsigned batch, unsigned in_h, unsigned in_w, unsigned in_c,              \
      unsigned out_h, unsigned out_w, unsigned out_c, unsigned kernel, unsigned stride, unsigned pad_top,    \
      unsigned pad_left
#define CONV_FWD_BF16_BODY(T)                                                                                  \
  conv_fwd_bf16<T>(x, w, ConvBf16Epilogue{bias, emb, residual, y, out_bf16, out_c, out_h * out_w}, splits,    \
                   partial, counters, batch, in_h, in_w, in_c, out_h, out_w, out_c, kernel, stride, pad_top, pad_left)
extern "C" __global__ void __launch_bounds__(128) conv2d_fwd_bf16(CONV_FWD_BF16_ARGS) { CONV_FWD_BF16_BODY(64); }
extern "C" __global__ void __launch_bounds__(256) conv2d_fwd_bf16_t128(CONV_FWD_BF16_ARGS) { CONV_FWD_BF16_BODY(128); }
