// Elementwise and broadcast ops over flat f32 buffers and NHWC activations: fill, scale-add,
// residual adds, the per-image channel vector (time embedding) added at every pixel and its channel
// sums, and channel concatenation (skip connections) with its split. All are memory bound: one
// thread per element with grid-stride loops (any launch size covers any n), consecutive threads on
// consecutive channels so every warp reads and writes contiguous memory. Arithmetic uses explicit
// _rn intrinsics in the CPU reference's order, so results match it bit for bit (channel_sum aside).
#include "common.cuh"

extern "C" __global__ void fill_f32(float* __restrict__ out, float value, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = value;
}

// y = a * x + y
extern "C" __global__ void axpy_f32(float* __restrict__ y, const float* __restrict__ x, float a, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = fmaf(a, __ldg(&x[i]), y[i]);
}

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

// y[r, :] = [a[r, :c1], b[r, :c2]], one thread per element of y; n = rows * (c1 + c2). Bits are
// moved, not rounded, so one body serves f32 and the bf16 residual stream (issue #17).
template <typename T>
__device__ __forceinline__ void concat_channels(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y,
                                                unsigned n, unsigned c1, unsigned c2) {
  const unsigned ct = c1 + c2;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned r = i / ct, k = i - r * ct;
    y[i] = k < c1 ? a[r * c1 + k] : b[r * c2 + (k - c1)];
  }
}

extern "C" __global__ void concat_channels_f32(const float* __restrict__ a, const float* __restrict__ b,
                                               float* __restrict__ y, unsigned n, unsigned c1, unsigned c2) {
  concat_channels(a, b, y, n, c1, c2);
}

extern "C" __global__ void concat_channels_bf16(const __nv_bfloat16* __restrict__ a,
                                                const __nv_bfloat16* __restrict__ b, __nv_bfloat16* __restrict__ y,
                                                unsigned n, unsigned c1, unsigned c2) {
  concat_channels(a, b, y, n, c1, c2);
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

// y = x rounded to bf16 (nearest even; NaN stays NaN, overflow goes to infinity): the operands of
// the tensor-core ops when the CUDA backend runs at --precision bf16 (src/backend/cuda_bf16.rs).
extern "C" __global__ void round_bf16_f32(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}
