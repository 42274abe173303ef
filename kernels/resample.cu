// Nearest 2x upsampling of NHWC activations and its backward (2x2 block sums). Memory bound: one
// thread per input element with grid-stride loops, consecutive threads on consecutive channels so
// every warp reads and writes contiguous memory. Arithmetic uses explicit _rn intrinsics in the CPU
// reference's order, so results match it bit for bit.
#include "common.cuh"

// One thread per input element (b, i, j, ch). Image b's input row i becomes output rows 2i and
// 2i + 1 of image b, i.e. global output row 2 * (b * h + i): so the output offset needs no
// separate batch index.
__device__ __forceinline__ unsigned upsample_top_left(unsigned idx, unsigned w, unsigned c) {
  const unsigned ch = idx % c, pixel = idx / c, j = pixel % w, row = pixel / w;
  return ((2 * row) * (2 * w) + 2 * j) * c + ch;
}

// y[b, 2i + a, 2j + e, ch] = x[b, i, j, ch]; n = x's element count. T: f32, or bf16 (x rounded to
// nearest even once: what the upsampler's bf16 convolution would round itself).
// X: the input's type, f32 or bf16 (the residual stream in bf16: then bits are copied, not rounded).
__device__ __forceinline__ void upsample_round(float v, float& out) { out = v; }
__device__ __forceinline__ void upsample_round(float v, __nv_bfloat16& out) { out = __float2bfloat16_rn(v); }
__device__ __forceinline__ void upsample_round(__nv_bfloat16 v, __nv_bfloat16& out) { out = v; }

template <typename X, typename T>
__device__ __forceinline__ void upsample_nearest2x_fwd(const X* __restrict__ x, T* __restrict__ y, unsigned n,
                                                       unsigned w, unsigned c) {
  const unsigned row_stride = 2 * w * c;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned o = upsample_top_left(i, w, c);
    T v;
    upsample_round(x[i], v);
    y[o] = v;
    y[o + c] = v;
    y[o + row_stride] = v;
    y[o + row_stride + c] = v;
  }
}

extern "C" __global__ void upsample_nearest2x_fwd_f32(const float* __restrict__ x, float* __restrict__ y, unsigned n,
                                                      unsigned w, unsigned c) {
  upsample_nearest2x_fwd(x, y, n, w, c);
}

extern "C" __global__ void upsample_nearest2x_fwd_to_bf16_f32(const float* __restrict__ x,
                                                              __nv_bfloat16* __restrict__ y, unsigned n, unsigned w,
                                                              unsigned c) {
  upsample_nearest2x_fwd(x, y, n, w, c);
}

extern "C" __global__ void upsample_nearest2x_fwd_bf16(const __nv_bfloat16* __restrict__ x,
                                                       __nv_bfloat16* __restrict__ y, unsigned n, unsigned w,
                                                       unsigned c) {
  upsample_nearest2x_fwd(x, y, n, w, c);
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
