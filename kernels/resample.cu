// The UNet's shape and broadcast ops on NHWC activations: residual adds, the per-image channel
// vector (time embedding) added at every pixel and its channel sums, nearest 2x upsampling and
// its 2x2 block sums, and channel concatenation (skip connections) with its split. All are memory
// bound: one thread per element with grid-stride loops, consecutive threads on consecutive
// channels so every warp reads and writes contiguous memory. Arithmetic uses explicit _rn
// intrinsics in the CPU reference's order, so results match it bit for bit (channel_sum aside).
#include "common.cuh"

// y = (a + b) / divisor, a true division: diffusers divides the residual sum by
// output_scale_factor, and a reciprocal multiply would round differently.
extern "C" __global__ void add_scaled_f32(const float* __restrict__ a, const float* __restrict__ b,
                                          float* __restrict__ y, unsigned n, float divisor) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __fdiv_rn(__fadd_rn(a[i], b[i]), divisor);
}

extern "C" __global__ void div_scalar_f32(const float* __restrict__ x, float* __restrict__ y, unsigned n,
                                          float divisor) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __fdiv_rn(x[i], divisor);
}

// y[n, p, c] = x[n, p, c] + v[n, c]; `per_image` = pixels * c.
extern "C" __global__ void add_channel_bias_f32(const float* __restrict__ x, const float* __restrict__ v,
                                                float* __restrict__ y, unsigned n, unsigned c, unsigned per_image) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __fadd_rn(x[i], __ldg(&v[(i / per_image) * c + i % c]));
}

// dv[n, c] = sum over pixels of dy[n, p, c]. A block owns 32 channels of one image (lane = channel,
// so each warp reads 32 contiguous floats per pixel); its blockDim / 32 rows of threads take every
// rows-th pixel, then row 0 adds the rows' partials in row order. The order depends only on the
// shape and blockDim, so the bits are the same on every run.
extern "C" __global__ void __launch_bounds__(256) channel_sum_f32(const float* __restrict__ dy, float* __restrict__ dv,
                                                                 unsigned batch, unsigned hw, unsigned c) {
  __shared__ float partial[32][32];  // [row][lane]; at most 1024 / 32 rows
  const unsigned lane = threadIdx.x % 32, row = threadIdx.x / 32, rows = blockDim.x / 32;
  const unsigned tiles = (c + 31) / 32;
  for (unsigned item = blockIdx.x; item < batch * tiles; item += gridDim.x) {
    const unsigned img = item / tiles, ch = (item % tiles) * 32 + lane;
    float acc = 0.0f;
    if (ch < c) {
      const float* src = dy + (size_t)img * hw * c + ch;
      for (unsigned p = row; p < hw; p += rows) acc = __fadd_rn(acc, src[(size_t)p * c]);
    }
    partial[row][lane] = acc;
    __syncthreads();
    if (row == 0 && ch < c) {
      float sum = partial[0][lane];
      for (unsigned r = 1; r < rows; r++) sum = __fadd_rn(sum, partial[r][lane]);
      dv[(size_t)img * c + ch] = sum;
    }
    __syncthreads();  // partial is rewritten by the next item
  }
}

// One thread per input element (b, i, j, ch). Image b's input row i becomes output rows 2i and
// 2i + 1 of image b, i.e. global output row 2 * (b * h + i): so the output offset needs no
// separate batch index.
__device__ __forceinline__ unsigned upsample_top_left(unsigned idx, unsigned w, unsigned c) {
  const unsigned ch = idx % c, pixel = idx / c, j = pixel % w, row = pixel / w;
  return ((2 * row) * (2 * w) + 2 * j) * c + ch;
}

// y[b, 2i + a, 2j + e, ch] = x[b, i, j, ch]; n = x's element count.
extern "C" __global__ void upsample_nearest2x_fwd_f32(const float* __restrict__ x, float* __restrict__ y, unsigned n,
                                                      unsigned w, unsigned c) {
  const unsigned row_stride = 2 * w * c;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned o = upsample_top_left(i, w, c);
    const float v = x[i];
    y[o] = v;
    y[o + c] = v;
    y[o + row_stride] = v;
    y[o + row_stride + c] = v;
  }
}

// dx[b, i, j, ch] = the 2x2 block of dy summed row by row (PyTorch's order and the reference's).
extern "C" __global__ void upsample_nearest2x_bwd_f32(const float* __restrict__ dy, float* __restrict__ dx, unsigned n,
                                                      unsigned w, unsigned c) {
  const unsigned row_stride = 2 * w * c;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned o = upsample_top_left(i, w, c);
    float s = __fadd_rn(dy[o], dy[o + c]);
    s = __fadd_rn(s, dy[o + row_stride]);
    dx[i] = __fadd_rn(s, dy[o + row_stride + c]);
  }
}

// y[r, :] = [a[r, :c1], b[r, :c2]], one thread per element of y; n = rows * (c1 + c2).
extern "C" __global__ void concat_channels_f32(const float* __restrict__ a, const float* __restrict__ b,
                                               float* __restrict__ y, unsigned n, unsigned c1, unsigned c2) {
  const unsigned ct = c1 + c2;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned r = i / ct, k = i - r * ct;
    y[i] = k < c1 ? a[r * c1 + k] : b[r * c2 + (k - c1)];
  }
}

// The inverse: da[r, :] = dy[r, :c1], db[r, :] = dy[r, c1:], one thread per element of dy.
extern "C" __global__ void split_channels_f32(const float* __restrict__ dy, float* __restrict__ da,
                                              float* __restrict__ db, unsigned n, unsigned c1, unsigned c2) {
  const unsigned ct = c1 + c2;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned r = i / ct, k = i - r * ct;
    const float v = dy[i];
    if (k < c1) da[r * c1 + k] = v;
    else db[r * c2 + (k - c1)] = v;
  }
}
