// The optimizer step: AdamW fused into one pass over each parameter (bias-corrected moments,
// decoupled weight decay, as torch.optim.AdamW), the EMA of the weights, and the pieces of
// global-norm gradient clipping (a per-tensor sum of squares, then a scale).
#include "optim.cuh"

// One AdamW step per element (adamw_element); the constants by value; `copy` as store_copy.
extern "C" __global__ void adamw_step_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                          float* __restrict__ v, __nv_bfloat16* __restrict__ copy, unsigned n, float lr,
                                          float beta1, float beta2, float eps, float weight_decay, float step_size,
                                          float bias_correction2_sqrt, float grad_scale) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    adamw_element(p[i], g[i], m[i], v[i], lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                  grad_scale);
    store_copy(copy, i, p[i]);
  }
}

// ema = decay * ema + (1 - decay) * p, as diffusers' EMAModel (ema -= (1 - decay) * (ema - p)).
extern "C" __global__ void ema_update_f32(float* __restrict__ ema, const float* __restrict__ p, unsigned n, float decay) {
  const float one_minus = 1.0f - decay;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    ema[i] = ema_element(ema[i], p[i], one_minus);
}

// partials[b] = the sum of squares of the elements i = b * 256 + t + k * gridDim.x * 256 (block b of a
// grid whose size the host derives from n alone, so the sum is the same on every device). One
// block used to walk the whole tensor: 11 GB/s on an H200 for 64M elements (143 MB of cifar10
// gradients, 13 ms of every training step). Four independent loads in flight per thread keep the
// memory system busy. The partials are added in f64 in a fixed order: on the host
// (src/train/row.rs norm_of_partials) or by clip_status_f32 (train_step.cu), to the same bits.
// Block `block` of a grid of `grid` blocks over x: its partial (valid in thread 0).
__device__ __forceinline__ float sum_squares_block(const float* __restrict__ x, unsigned n, unsigned block,
                                                   unsigned grid, float* scratch) {
  const unsigned stride = grid * blockDim.x;
  unsigned i = block * blockDim.x + threadIdx.x;
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const float v0 = x[i], v1 = x[i + stride], v2 = x[i + 2 * stride], v3 = x[i + 3 * stride];
    a0 = fmaf(v0, v0, a0);
    a1 = fmaf(v1, v1, a1);
    a2 = fmaf(v2, v2, a2);
    a3 = fmaf(v3, v3, a3);
  }
  for (; i < n; i += stride) a0 = fmaf(x[i], x[i], a0);
  return block_sum((a0 + a1) + (a2 + a3), scratch);
}

extern "C" __global__ void __launch_bounds__(256) sum_squares_f32(const float* __restrict__ x, unsigned n,
                                                                 float* __restrict__ partials) {
  __shared__ float scratch[32];
  const float acc = sum_squares_block(x, n, blockIdx.x, gridDim.x, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// sum_squares_f32 of many tensors in one launch, each tensor's partials the bits of its own
// launch: the table holds per tensor {address low, address high, n, first partial, partials}
// (SUM_TABLE_WORDS u32), tensors in partial order; block b takes the tensor whose partials hold b
// and runs that launch's block b - first. One launch instead of one per gradient (the graphed
// training step's clip norm: 328 for cifar10).
constexpr unsigned SUM_TABLE_WORDS = 5;
extern "C" __global__ void __launch_bounds__(256) sum_squares_many_f32(const unsigned* __restrict__ table,
                                                                      unsigned tensors,
                                                                      float* __restrict__ partials) {
  __shared__ float scratch[32];
  unsigned lo = 0, hi = tensors;  // the last tensor whose first partial is <= blockIdx.x
  while (hi - lo > 1) {
    const unsigned mid = (lo + hi) / 2;
    if (table[mid * SUM_TABLE_WORDS + 3] <= blockIdx.x) lo = mid; else hi = mid;
  }
  const unsigned* t = table + lo * SUM_TABLE_WORDS;
  const float* x = reinterpret_cast<const float*>((unsigned long long)t[0] | ((unsigned long long)t[1] << 32));
  const float acc = sum_squares_block(x, t[2], blockIdx.x - t[3], t[4], scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

extern "C" __global__ void scale_f32(float* __restrict__ x, unsigned n, float s) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] *= s;
}
