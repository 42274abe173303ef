// 2-D convolution over NHWC activations with OHWI weights, f32, as three implicit GEMMs that
// share one shared-memory tile loop (gemm_tile). Nothing is materialised: each operand is a
// functor that gathers its element straight from the activation or weight tensor, returning 0
// for taps that fall in the zero padding, so one code path serves every kernel size, stride and
// (asymmetric) padding.
//
//   forward       y[m, o]  = sum_r im2col(x)[m, r] w[o, r]              m: output pixel, r: (ky, kx, i)
//   input grad    dx[m, i] = sum_r gather(dy)[m, r] w[o, ky, kx, i]     m: input pixel,  r: (ky, kx, o)
//   weight grad   dw[o, c] = sum_p dy[p, o] im2col(x)[p, c]            p: output pixel, c: (ky, kx, i)
//
// Every output element is one thread's fmaf chain over the reduction in increasing order, so the
// results are the same bits on every run. The weight gradient reduces over all pixels of the
// batch, too few outputs to fill a GPU on its own, so it is split into fixed chunks of pixels
// (chosen from the shape alone) whose partial sums conv2d_bwd_weight_finish_f32 adds in chunk
// order: deterministic without atomics. The bias gradient rides along as one more column of the
// weight-gradient GEMM whose "input" is the constant 1.
#include "common.cuh"

// Block tile BM x BN, reduction step BK; 256 threads, each owning a 4 x 4 micro-tile. A thread's
// rows and columns are strided by 16 (not contiguous) so that neighbouring threads write
// neighbouring output channels (coalesced NHWC stores) and read distinct shared-memory banks.
constexpr unsigned BM = 64, BN = 64, BK = 16, THREADS = 256, TM = BM / 16, TN = BN / 16;
// Tiles are stored reduction-major, [BK][BM + 1]: the +1 breaks the bank conflicts of the
// transposing store when loading along the reduction.
constexpr unsigned LD = BM + 1;
static_assert(BM == BN, "one tile shape serves both operands");

// The convolution's geometry (out_h/out_w already include the padding; bottom and right padding
// only show up there and in the bounds checks).
struct Geom {
  unsigned batch, in_h, in_w, in_c, out_h, out_w, out_c, k, stride, pad_top, pad_left;
};

// x at the input pixel that output pixel `m` reads through tap `r` = (ky, kx, i): the im2col
// matrix of x, [out pixels, k * k * in_c], never stored.
__device__ __forceinline__ float im2col(const float* __restrict__ x, const Geom& g, unsigned m, unsigned r) {
  unsigned i = r % g.in_c, tap = r / g.in_c, kx = tap % g.k, ky = tap / g.k;
  unsigned ox = m % g.out_w, t = m / g.out_w, oy = t % g.out_h, n = t / g.out_h;
  int iy = (int)(oy * g.stride + ky) - (int)g.pad_top, ix = (int)(ox * g.stride + kx) - (int)g.pad_left;
  if (iy < 0 || ix < 0 || iy >= (int)g.in_h || ix >= (int)g.in_w) return 0.0f;
  return __ldg(&x[((n * g.in_h + iy) * g.in_w + ix) * g.in_c + i]);
}

// Forward operands: A[m, r] = im2col(x), B[o, r] = w[o, r] (OHWI rows are contiguous in r).
struct FwdA {
  const float* __restrict__ x;
  Geom g;
  __device__ float operator()(unsigned m, unsigned r) const { return im2col(x, g, m, r); }
};
struct RowMajor {
  const float* __restrict__ p;
  unsigned ld;
  __device__ float operator()(unsigned row, unsigned r) const { return __ldg(&p[row * ld + r]); }
};

// Input-gradient operands. A[m, r]: dy at the output pixel that reads input pixel m through tap
// (ky, kx), channel o, for r = (ky, kx, o); zero when no output pixel does (padding, or an input
// pixel between two strided taps). B[i, r] = w[o, ky, kx, i].
struct BwdInputA {
  const float* __restrict__ dy;
  Geom g;
  __device__ float operator()(unsigned m, unsigned r) const {
    unsigned o = r % g.out_c, tap = r / g.out_c, kx = tap % g.k, ky = tap / g.k;
    unsigned ix = m % g.in_w, t = m / g.in_w, iy = t % g.in_h, n = t / g.in_h;
    int sy = (int)(iy + g.pad_top) - (int)ky, sx = (int)(ix + g.pad_left) - (int)kx;
    if (sy < 0 || sx < 0 || sy % g.stride != 0 || sx % g.stride != 0) return 0.0f;
    unsigned oy = sy / g.stride, ox = sx / g.stride;
    if (oy >= g.out_h || ox >= g.out_w) return 0.0f;
    return __ldg(&dy[((n * g.out_h + oy) * g.out_w + ox) * g.out_c + o]);
  }
};
struct BwdInputB {
  const float* __restrict__ w;
  Geom g;
  __device__ float operator()(unsigned i, unsigned r) const {
    unsigned o = r % g.out_c, tap = r / g.out_c;
    return __ldg(&w[(o * g.k * g.k + tap) * g.in_c + i]);
  }
};

// Weight-gradient operands, reducing over output pixels p. A[o, p] = dy[p, o]. B[c, p] =
// im2col(x)[p, c] for the k * k * in_c weight columns, and 1 for column `ones` (the bias).
struct DyTransposed {
  const float* __restrict__ dy;
  unsigned out_c;
  __device__ float operator()(unsigned o, unsigned p) const { return __ldg(&dy[p * out_c + o]); }
};
struct BwdWeightB {
  const float* __restrict__ x;
  Geom g;
  unsigned ones;
  __device__ float operator()(unsigned c, unsigned p) const { return c == ones ? 1.0f : im2col(x, g, p, c); }
};

// Loads rows [row0, row0 + BM) x reduction [r0, r0 + BK) of an operand into tile[r][row], zero
// outside [0, rows) x [r0, r_end). ALONG_R: consecutive threads take consecutive reduction
// indices (the operand is contiguous along the reduction); otherwise consecutive rows.
template <bool ALONG_R, class Load>
__device__ __forceinline__ void load_tile(const Load& load, unsigned rows, unsigned row0, unsigned r0, unsigned r_end,
                                          float (*tile)[LD]) {
  for (unsigned e = threadIdx.x; e < BM * BK; e += THREADS) {
    unsigned row = ALONG_R ? e / BK : e % BM, r = ALONG_R ? e % BK : e / BM;
    tile[r][row] = (row0 + row < rows && r0 + r < r_end) ? load(row0 + row, r0 + r) : 0.0f;
  }
}

// acc[i][j] = sum over r in [r_begin, r_end) of A(row0 + ty + 16 i, r) B(col0 + tx + 16 j, r),
// one fmaf per r in increasing order. Every thread of the block must call it (it synchronises).
template <bool A_ALONG_R, bool B_ALONG_R, class LoadA, class LoadB>
__device__ __forceinline__ void gemm_tile(const LoadA& a, unsigned rows, const LoadB& b, unsigned cols, unsigned row0,
                                          unsigned col0, unsigned r_begin, unsigned r_end, float (*as)[LD],
                                          float (*bs)[LD], float acc[TM][TN]) {
  const unsigned tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (unsigned i = 0; i < TM; ++i)
    for (unsigned j = 0; j < TN; ++j) acc[i][j] = 0.0f;
  for (unsigned r0 = r_begin; r0 < r_end; r0 += BK) {
    load_tile<A_ALONG_R>(a, rows, row0, r0, r_end, as);
    load_tile<B_ALONG_R>(b, cols, col0, r0, r_end, bs);
    __syncthreads();
#pragma unroll
    for (unsigned r = 0; r < BK; ++r) {
      float av[TM], bv[TN];
      for (unsigned i = 0; i < TM; ++i) av[i] = as[r][ty + 16 * i];
      for (unsigned j = 0; j < TN; ++j) bv[j] = bs[r][tx + 16 * j];
      for (unsigned i = 0; i < TM; ++i)
        for (unsigned j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();  // the tiles are overwritten by the next step
  }
}

// Writes the micro-tile to out[row * ld + col] (rows < rows, cols < cols), adding bias[col] if given.
__device__ __forceinline__ void store_tile(const float acc[TM][TN], float* __restrict__ out, unsigned ld,
                                           unsigned rows, unsigned cols, unsigned row0, unsigned col0,
                                           const float* __restrict__ bias) {
  const unsigned tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (unsigned i = 0; i < TM; ++i) {
    unsigned row = row0 + ty + 16 * i;
    for (unsigned j = 0; j < TN; ++j) {
      unsigned col = col0 + tx + 16 * j;
      if (row < rows && col < cols) out[row * ld + col] = bias ? acc[i][j] + __ldg(&bias[col]) : acc[i][j];
    }
  }
}

__device__ __forceinline__ unsigned tiles(unsigned n) { return (n + BM - 1) / BM; }

extern "C" __global__ void __launch_bounds__(THREADS)
    conv2d_fwd_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                   float* __restrict__ y, unsigned batch, unsigned in_h, unsigned in_w, unsigned in_c, unsigned out_h,
                   unsigned out_w, unsigned out_c, unsigned k, unsigned stride, unsigned pad_top, unsigned pad_left) {
  __shared__ float as[BK][LD], bs[BK][LD];
  const Geom g{batch, in_h, in_w, in_c, out_h, out_w, out_c, k, stride, pad_top, pad_left};
  const unsigned rows = batch * out_h * out_w, red = k * k * in_c, col_tiles = tiles(out_c);
  // Block-uniform loop over tiles (every thread reaches every barrier); column tiles vary
  // fastest so blocks running together share the gathered x tile in cache.
  for (unsigned t = blockIdx.x; t < tiles(rows) * col_tiles; t += gridDim.x) {
    unsigned row0 = t / col_tiles * BM, col0 = t % col_tiles * BN;
    float acc[TM][TN];
    gemm_tile<true, true>(FwdA{x, g}, rows, RowMajor{w, red}, out_c, row0, col0, 0, red, as, bs, acc);
    store_tile(acc, y, out_c, rows, out_c, row0, col0, bias);
  }
}

extern "C" __global__ void __launch_bounds__(THREADS)
    conv2d_bwd_input_f32(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
                         unsigned batch, unsigned in_h, unsigned in_w, unsigned in_c, unsigned out_h, unsigned out_w,
                         unsigned out_c, unsigned k, unsigned stride, unsigned pad_top, unsigned pad_left) {
  __shared__ float as[BK][LD], bs[BK][LD];
  const Geom g{batch, in_h, in_w, in_c, out_h, out_w, out_c, k, stride, pad_top, pad_left};
  const unsigned rows = batch * in_h * in_w, red = k * k * out_c, col_tiles = tiles(in_c);
  for (unsigned t = blockIdx.x; t < tiles(rows) * col_tiles; t += gridDim.x) {
    unsigned row0 = t / col_tiles * BM, col0 = t % col_tiles * BN;
    float acc[TM][TN];
    // w[o, ky, kx, i] is contiguous along i, the column index: load B along its rows.
    gemm_tile<true, false>(BwdInputA{dy, g}, rows, BwdInputB{w, g}, in_c, row0, col0, 0, red, as, bs, acc);
    store_tile(acc, dx, in_c, rows, in_c, row0, col0, nullptr);
  }
}

// Chunk `chunk` of the weight gradient: partial[chunk][o][c] = sum over output pixels p in
// [chunk * chunk_len, (chunk + 1) * chunk_len) of dy[p, o] B[c, p], c < cols (cols = k * k *
// in_c, plus one bias column when with_bias).
extern "C" __global__ void __launch_bounds__(THREADS)
    conv2d_bwd_weight_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partial,
                          unsigned chunk_len, unsigned chunks, int with_bias, unsigned batch, unsigned in_h,
                          unsigned in_w, unsigned in_c, unsigned out_h, unsigned out_w, unsigned out_c, unsigned k,
                          unsigned stride, unsigned pad_top, unsigned pad_left) {
  __shared__ float as[BK][LD], bs[BK][LD];
  const Geom g{batch, in_h, in_w, in_c, out_h, out_w, out_c, k, stride, pad_top, pad_left};
  const unsigned pixels = batch * out_h * out_w, red = k * k * in_c, cols = red + (with_bias ? 1 : 0);
  const unsigned row_tiles = tiles(out_c), col_tiles = tiles(cols);
  for (unsigned t = blockIdx.x; t < chunks * row_tiles * col_tiles; t += gridDim.x) {
    unsigned chunk = t / (row_tiles * col_tiles), tile = t % (row_tiles * col_tiles);
    unsigned row0 = tile / col_tiles * BM, col0 = tile % col_tiles * BN;
    unsigned p0 = chunk * chunk_len, p1 = min(pixels, p0 + chunk_len);
    float acc[TM][TN];
    // Both operands are contiguous along their rows (channels) for a fixed pixel.
    gemm_tile<false, false>(DyTransposed{dy, out_c}, out_c, BwdWeightB{x, g, with_bias ? red : ~0u}, cols, row0, col0,
                            p0, p1, as, bs, acc);
    store_tile(acc, partial + (size_t)chunk * out_c * cols, cols, out_c, cols, row0, col0, nullptr);
  }
}

// The weight gradient when out_c <= NARROW_OUT (a UNet's conv_out: 3 output channels). The
// 64-row tiles above would leave 61 of 64 rows idle, and the few tiles give few blocks (cifar10's
// conv_out at batch 128: 2.6 ms on an H200, 3% of the training step). Here a thread owns one
// column c = (ky, kx, i) (or the bias column) and keeps out_c sums over the chunk's pixels in
// increasing order, one fmaf each, as the tiles' chains; the chunks' partial sums go through
// conv2d_bwd_weight_finish_f32 as above. dy[p][o] is the same address for the whole warp (one
// broadcast load); x along c is consecutive channels of one pixel (coalesced).
constexpr unsigned NARROW_OUT = 8, NARROW_THREADS = 256;
extern "C" __global__ void __launch_bounds__(NARROW_THREADS)
    conv2d_bwd_weight_narrow_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                 float* __restrict__ partial, unsigned chunk_len, unsigned col_blocks, int with_bias,
                                 unsigned batch, unsigned in_h, unsigned in_w, unsigned in_c, unsigned out_h,
                                 unsigned out_w, unsigned out_c, unsigned k, unsigned stride, unsigned pad_top,
                                 unsigned pad_left) {
  const unsigned pixels = batch * out_h * out_w, red = k * k * in_c, cols = red + (with_bias ? 1 : 0);
  const unsigned chunk = blockIdx.x / col_blocks, c = (blockIdx.x % col_blocks) * NARROW_THREADS + threadIdx.x;
  if (c >= cols) return;
  const unsigned i = c % in_c, tap = c / in_c, kx = tap % k, ky = tap / k;
  const unsigned p0 = chunk * chunk_len, p1 = min(pixels, p0 + chunk_len);
  // Pixel p0's coordinates, then stepped along with p (no division in the loop).
  unsigned ox = p0 % out_w, oy = (p0 / out_w) % out_h, n = p0 / (out_w * out_h);
  float acc[NARROW_OUT] = {};
  for (unsigned p = p0; p < p1; ++p) {
    const int iy = (int)(oy * stride + ky) - (int)pad_top, ix = (int)(ox * stride + kx) - (int)pad_left;
    float v = 1.0f;  // the bias column
    if (c < red)
      v = iy < 0 || ix < 0 || iy >= (int)in_h || ix >= (int)in_w ? 0.0f
                                                                   : __ldg(&x[((n * in_h + iy) * in_w + ix) * in_c + i]);
#pragma unroll
    for (unsigned o = 0; o < NARROW_OUT; ++o)
      if (o < out_c) acc[o] = fmaf(__ldg(&dy[(size_t)p * out_c + o]), v, acc[o]);
    if (++ox == out_w) {
      ox = 0;
      if (++oy == out_h) oy = 0, ++n;
    }
  }
  float* out = partial + (size_t)chunk * out_c * cols;
#pragma unroll
  for (unsigned o = 0; o < NARROW_OUT; ++o)
    if (o < out_c) out[(size_t)o * cols + c] = acc[o];
}

// dw[o, c] (and db[o] from the bias column) = the chunks' partial sums, added in chunk order.
extern "C" __global__ void conv2d_bwd_weight_finish_f32(const float* __restrict__ partial, float* __restrict__ dw,
                                                        float* __restrict__ db, unsigned out_c, unsigned red,
                                                        unsigned cols, unsigned chunks) {
  const unsigned n = out_c * cols;
  for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (unsigned c = 0; c < chunks; ++c) s += partial[(size_t)c * n + e];
    unsigned o = e / cols, col = e % cols;
    if (col < red) dw[o * red + col] = s;
    else db[o] = s;
  }
}
