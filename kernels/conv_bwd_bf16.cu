// 2-D convolution backward on the tensor cores (issue #15): the input and weight gradients as
// implicit GEMMs on the core of kernels/gemm_bf16.cuh, bf16 operands, f32 accumulation. Layouts
// and geometry as kernels/conv_bf16.cu (NHWC, OHWI weights, taps (ky, kx)).
//
// Input gradient, conv2d_bwd_input_bf16: dx[m][n] = sum_k A[m][k] B[k][n] with
//   m = an input pixel (batch x in_h x in_w), n = an input channel, k = (ky, kx, o),
//   A[m][k] = dy at the output pixel that reads pixel m through tap (ky, kx), channel o (zero where
//             no output pixel does: the padding, or a stride-2 phase that skips m): K_CONTIG, 16-byte
//             chunks of 8 consecutive o, so out_c % 8 == 0;
//   B[k][n] = w[o][ky][kx][n]: MN_CONTIG, chunks of 8 consecutive n, so in_c % 8 == 0.
// The sum runs over (ky, kx, o) as the f32 kernel's and the CPU reference's; split over K as the
// forward's (small M), the splits added in order by the tile's last split. With stride 2 three
// taps in four are zero for any one pixel; they are multiplied anyway (the downsamplers are a few
// percent of the UNet's convolution work; a per-phase decomposition would skip them).
//
// Weight gradient, conv2d_bwd_weight_bf16: partial[chunk][o][col] = sum over the chunk's output
// pixels p of dy[p][o] X[p][col], with X = the im2col matrix of x ([pixels][(ky, kx, i)]) and
// one more column of ones when the bias gradient is wanted (col = red). Both operands are
// MN_CONTIG (chunks of 8 consecutive o, and of 8 consecutive (ky, kx, i) inside one tap), so
// in_c % 8 == 0 and out_c % 8 == 0. The ones column's chunk (1, 0 x 7; zeros past the chunk's
// pixels) is stored into shared memory directly, as linear_bwd_weight_bf16's: cp.async cannot make
// a constant, and load() runs where the stage it refills is not being read. Chunks of pixels are
// fixed by the shape, and conv2d_bwd_weight_finish_f32 (kernels/conv.cu) adds them in chunk order:
// deterministic, no float atomics.
#include "gemm_bf16.cuh"

// Slice s of the input gradient's A (gathered dy rows) and B (weight rows [o][ky][kx][:]). Each
// thread fills the same two A rows every slice; their pixel coordinates are worked out once.
template <unsigned T>
struct ConvDgradBf16Loader {
  const unsigned short* __restrict__ dy;
  const unsigned short* __restrict__ w;
  const unsigned short* row_dy[gbf16::CHUNKS_PER_THREAD];  // dy's image of the row, null past M
  int ty0[gbf16::CHUNKS_PER_THREAD], tx0[gbf16::CHUNKS_PER_THREAD];  // iy + pad_top, ix + pad_left
  unsigned out_h, out_w, out_c, in_c, kernel, stride, K, n0;
  GbfDiv by_out_c, by_kernel, by_stride;

  __device__ __forceinline__ void operator()(unsigned short* stage, unsigned s) const {
    for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
      const GbfChunk a = gbf16_chunk<gbf16::K_CONTIG, T>(stage, j);
      const unsigned k = s * gbf16::BK + a.k, tap = by_out_c.div(k), o = k - tap * out_c, ky = by_kernel.div(tap);
      const int ty = ty0[j] - (int)ky, tx = tx0[j] - (int)(tap - ky * kernel);
      // Below 0 the quotients are garbage (GbfDiv wants n < 2^31), and unused: ty, tx >= 0 fail.
      const unsigned oy = by_stride.div((unsigned)ty), ox = by_stride.div((unsigned)tx);
      const bool in_a = row_dy[j] && k < K && ty >= 0 && tx >= 0 && (unsigned)ty == oy * stride &&
                        (unsigned)tx == ox * stride && oy < out_h && ox < out_w;
      // A zero-filled chunk still needs a valid source address: the operand's first element.
      cp_async<16>(a.dst, in_a ? row_dy[j] + ((size_t)oy * out_w + ox) * out_c + o : dy, in_a ? 16 : 0);
      const GbfChunk b = gbf16_chunk<gbf16::MN_CONTIG, T>(stage + gbf16::Tile<T>::SLOT, j);
      const unsigned kb = s * gbf16::BK + b.k, n = n0 + b.row, tb = by_out_c.div(kb), ob = kb - tb * out_c;
      const bool in_b = kb < K && n < in_c;
      cp_async<16>(b.dst, in_b ? w + ((size_t)ob * kernel * kernel + tb) * in_c + n : w, in_b ? 16 : 0);
    }
  }
};

// A T x T block tile (64 with 128 threads, 128 with 256: the larger one issues half the
// loader and fragment instructions per mma, for the many-tile shapes of a large batch). The tile
// changes who computes each sum, not its order: the bits are the same with either.
template <unsigned T>
__device__ __forceinline__ void conv_bwd_input_bf16(const unsigned short* __restrict__ dy,
                                                    const unsigned short* __restrict__ w, float* __restrict__ dx,
                                                    unsigned splits, float* __restrict__ partial,
                                                    unsigned* __restrict__ counters, unsigned batch, unsigned in_h,
                                                    unsigned in_w, unsigned in_c, unsigned out_h, unsigned out_w,
                                                    unsigned out_c, unsigned kernel, unsigned stride, unsigned pad_top,
                                                    unsigned pad_left) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned M = batch * in_h * in_w, K = kernel * kernel * out_c, pixels = in_h * in_w;
  const unsigned tiles_n = (in_c + T - 1) / T, tiles = tiles_n * ((M + T - 1) / T);
  const unsigned split = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const unsigned m0 = (tile / tiles_n) * T, n0 = (tile % tiles_n) * T;
  ConvDgradBf16Loader<T> load{dy,     w,  {},           {},           {},           out_h, out_w, out_c, in_c, kernel,
                              stride, K,  n0, GbfDiv(out_c), GbfDiv(kernel), GbfDiv(stride)};
  for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
    const unsigned m = m0 + gbf16_chunk<gbf16::K_CONTIG, T>(smem, j).row, img = m / pixels, p = m % pixels;
    load.row_dy[j] = m < M ? dy + (size_t)img * out_h * out_w * out_c : nullptr;
    load.ty0[j] = (int)(p / in_w + pad_top);
    load.tx0[j] = (int)(p % in_w + pad_left);
  }
  float acc[gbf16::Tile<T>::MI][4][4] = {};
  const GbfSplit share = gbf16_split((K + gbf16::BK - 1) / gbf16::BK, splits, split);
  gbf16_mainloop<gbf16::K_CONTIG, gbf16::MN_CONTIG>(acc, smem, load, share.first, share.count);
  const auto store = [&](unsigned m, unsigned n, float v) { dx[(size_t)m * in_c + n] = v; };
  if (splits > 1) {
    gbf16_store_partial(acc, partial, split, m0, n0, M, in_c);
    if (gbf16_last_split(counters + tile, splits, reinterpret_cast<unsigned*>(smem)))
      gbf16_add_splits<T>(partial, splits, m0, n0, M, in_c, store);
    return;
  }
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    if (m0 + r < M && n0 + c < in_c) store(m0 + r, n0 + c, v);
  });
}

#define CONV_BWD_INPUT_BF16_ARGS                                                                               \
  const unsigned short *__restrict__ dy, const unsigned short *__restrict__ w, float *__restrict__ dx,         \
      unsigned splits, float *__restrict__ partial, unsigned *__restrict__ counters, unsigned batch,           \
      unsigned in_h, unsigned in_w, unsigned in_c, unsigned out_h, unsigned out_w, unsigned out_c,             \
      unsigned kernel, unsigned stride, unsigned pad_top, unsigned pad_left
#define CONV_BWD_INPUT_BF16_BODY(T)                                                                            \
  conv_bwd_input_bf16<T>(dy, w, dx, splits, partial, counters, batch, in_h, in_w, in_c, out_h, out_w, out_c,   \
                         kernel, stride, pad_top, pad_left)
extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_input_bf16(CONV_BWD_INPUT_BF16_ARGS) {
  CONV_BWD_INPUT_BF16_BODY(64);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_bwd_input_bf16_t128(CONV_BWD_INPUT_BF16_ARGS) {
  CONV_BWD_INPUT_BF16_BODY(128);
}

// Slice s of the weight gradient's A (dy rows, o contiguous) and B (im2col rows of x, plus the
// ones column) over pixels [p0, p_end). Each thread's B column chunk is the same every slice, so
// its tap is worked out once.
template <unsigned T>
struct ConvWgradBf16Loader {
  const unsigned short* __restrict__ x;
  const unsigned short* __restrict__ dy;
  unsigned in_h, in_w, in_c, out_h, out_w, out_c, stride, pad_top, pad_left, p0, p_end, m0;
  unsigned col, red, cols;  // this thread's B chunk: first column, and the gradient's widths
  unsigned ky, kx, ci;      // its tap and first channel (col < red)
  GbfDiv by_plane, by_out_w;  // out_h x out_w, out_w

  __device__ __forceinline__ void operator()(unsigned short* stage, unsigned s) const {
    for (unsigned j = 0; j < gbf16::CHUNKS_PER_THREAD; ++j) {
      const GbfChunk a = gbf16_chunk<gbf16::MN_CONTIG, T>(stage, j);
      const GbfChunk b = gbf16_chunk<gbf16::MN_CONTIG, T>(stage + gbf16::Tile<T>::SLOT, j);
      const unsigned p = p0 + s * gbf16::BK + a.k, o = m0 + a.row;  // b.k == a.k: same pixel
      const bool in_a = p < p_end && o < out_c;
      cp_async<16>(a.dst, in_a ? dy + (size_t)p * out_c + o : dy, in_a ? 16 : 0);
      const unsigned img = by_plane.div(p), q = p - img * (out_h * out_w), qy = by_out_w.div(q);
      const unsigned iy = qy * stride + ky - pad_top, ix = (q - qy * out_w) * stride + kx - pad_left;
      const bool in_x = p < p_end && col < red && iy < in_h && ix < in_w;  // wraps below 0: outside
      if (col == red && red < cols) {
        for (unsigned e = 0; e < 8; ++e) b.dst[e] = e == 0 && p < p_end ? 0x3f80 : 0;  // bf16 1.0, zeros
      } else {
        cp_async<16>(b.dst, in_x ? x + (((size_t)img * in_h + iy) * in_w + ix) * in_c + ci : x, in_x ? 16 : 0);
      }
    }
  }
};

// A T x T block tile, as the input gradient's: 128 (256 threads) for large batches, where the
// pixel chunks still make enough blocks; the tile and the chunks are the launcher's, from the
// shape alone, and the chunks fix every sum's order.
template <unsigned T>
__device__ __forceinline__ void conv_bwd_weight_bf16(const unsigned short* __restrict__ x,
                                                     const unsigned short* __restrict__ dy, float* __restrict__ partial,
                                                     unsigned chunk_len, unsigned cols, unsigned batch, unsigned in_h,
                                                     unsigned in_w, unsigned in_c, unsigned out_h, unsigned out_w,
                                                     unsigned out_c, unsigned kernel, unsigned stride,
                                                     unsigned pad_top, unsigned pad_left) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned red = kernel * kernel * in_c, P = batch * out_h * out_w;
  const unsigned tiles_m = (out_c + T - 1) / T, tiles_n = (cols + T - 1) / T;
  const unsigned chunk = blockIdx.x / (tiles_m * tiles_n), tile = blockIdx.x % (tiles_m * tiles_n);
  const unsigned m0 = (tile / tiles_n) * T, n0 = (tile % tiles_n) * T;
  const unsigned p0 = chunk * chunk_len, p_end = min(P, p0 + chunk_len);
  const unsigned col = n0 + gbf16_chunk<gbf16::MN_CONTIG, T>(smem, 0).row, tap = min(col, red - 1) / in_c;
  const ConvWgradBf16Loader<T> load{x,  dy,       in_h, in_w,          in_c, out_h, out_w, out_c, stride,
                                    pad_top, pad_left, p0,   p_end, m0, col, red,   cols,  tap / kernel,
                                    tap % kernel, min(col, red - 1) % in_c, GbfDiv(out_h * out_w), GbfDiv(out_w)};
  float acc[gbf16::Tile<T>::MI][4][4] = {};
  gbf16_mainloop<gbf16::MN_CONTIG, gbf16::MN_CONTIG>(acc, smem, load, chunk_len / gbf16::BK);
  float* out = partial + (size_t)chunk * out_c * cols;
  gbf16_for_each(acc, [&](unsigned r, unsigned c, float v) {
    const unsigned o = m0 + r, n = n0 + c;
    if (o < out_c && n < cols) out[(size_t)o * cols + n] = v;
  });
}

#define CONV_BWD_WEIGHT_BF16_ARGS                                                                              \
  const unsigned short *__restrict__ x, const unsigned short *__restrict__ dy, float *__restrict__ partial,     \
      unsigned chunk_len, unsigned cols, unsigned batch, unsigned in_h, unsigned in_w, unsigned in_c,          \
      unsigned out_h, unsigned out_w, unsigned out_c, unsigned kernel, unsigned stride, unsigned pad_top,      \
      unsigned pad_left
#define CONV_BWD_WEIGHT_BF16_BODY(T)                                                                           \
  conv_bwd_weight_bf16<T>(x, dy, partial, chunk_len, cols, batch, in_h, in_w, in_c, out_h, out_w, out_c,       \
                          kernel, stride, pad_top, pad_left)
extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_weight_bf16(CONV_BWD_WEIGHT_BF16_ARGS) {
  CONV_BWD_WEIGHT_BF16_BODY(64);
}
extern "C" __global__ void __launch_bounds__(256) conv2d_bwd_weight_bf16_t128(CONV_BWD_WEIGHT_BF16_ARGS) {
  CONV_BWD_WEIGHT_BF16_BODY(128);
}
