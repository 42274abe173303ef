// Elementwise ops over flat f32 buffers: fill and scale-add. Grid-stride loops, so any launch
// size covers any n.
#include "common.cuh"

extern "C" __global__ void fill_f32(float* __restrict__ out, float value, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = value;
}

// y = a * x + y
extern "C" __global__ void axpy_f32(float* __restrict__ y, const float* __restrict__ x, float a, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = fmaf(a, __ldg(&x[i]), y[i]);
}
