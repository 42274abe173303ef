// SiLU, x * sigmoid(x), and its backward. Accurate expf, not __expf: the backward is checked
// against f64 finite differences and the fast intrinsic's error would dominate that check.
#include "common.cuh"

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

extern "C" __global__ void silu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float v = x[i];
    y[i] = v * sigmoid(v);
  }
}

// d/dx [x s(x)] = s(x) (1 + x (1 - s(x)))
extern "C" __global__ void silu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                                        unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float v = x[i];
    float s = sigmoid(v);
    dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
  }
}
