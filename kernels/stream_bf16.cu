// The residual stream in bf16 (issue #17, --precision bf16 on CUDA): the ops between blocks that
// read or write the stream where no product's epilogue does (the concatenation, which only moves
// bits, shares its body with the f32 one in elementwise.cu). Every value is computed in f32 from
// the widened inputs (widening is exact) and rounded to nearest even once on store, so each op is
// its f32 twin in elementwise.cu on the widened values, rounded: what torch.autocast stores. One
// thread per element, grid-stride loops, consecutive threads on consecutive channels.
#include "common.cuh"

// y = x widened to f32 (exact): where a bf16 stream tensor meets an op with no bf16 input.
extern "C" __global__ void widen_bf16(const __nv_bfloat16* __restrict__ x, float* __restrict__ y, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}

// y = rn_bf16((x + h) / divisor): an attention block's residual (x the stream, h the output
// projection) and a ResnetBlock's when output_scale_factor != 1. f32 addition commutes, so this is
// add_scaled_f32(h, x) on the widened x, rounded, bit for bit.
extern "C" __global__ void add_scaled_to_bf16_bf16(const __nv_bfloat16* __restrict__ x, const float* __restrict__ h,
                                                    __nv_bfloat16* __restrict__ y, unsigned n, float divisor) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __float2bfloat16_rn(__fdiv_rn(__fadd_rn(__bfloat162float(x[i]), h[i]), divisor));
}

