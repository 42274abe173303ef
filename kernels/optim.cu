// The optimizer step: AdamW fused into one pass over each parameter (bias-corrected moments,
// decoupled weight decay, as torch.optim.AdamW), the EMA of the weights, and the pieces of
// global-norm gradient clipping (a per-tensor sum of squares, then a scale).
#include "common.cuh"

// torch.optim.AdamW (single-tensor path), per element, in its order of operations:
//   p *= 1 - lr*wd;  m += (1-b1) (g - m)  (lerp);  v = b2 v + (1-b2) g^2;
//   p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps),  step_size = lr / bc1, bc = 1 - beta^step.
// grad_scale folds global-norm clipping in: min(1, max_norm / norm), 1 when not clipping.
extern "C" __global__ void adamw_step_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                          float* __restrict__ v, unsigned n, float lr, float beta1, float beta2, float eps,
                                          float weight_decay, float step_size, float bias_correction2_sqrt,
                                          float grad_scale) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float grad = g[i] * grad_scale;
    float param = p[i] * (1.0f - lr * weight_decay);
    float mi = m[i] + (1.0f - beta1) * (grad - m[i]);
    float vi = v[i] * beta2 + (1.0f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    p[i] = param - step_size * (mi / denom);
  }
}

// ema = decay * ema + (1 - decay) * p, as diffusers' EMAModel (ema -= (1 - decay) * (ema - p)).
extern "C" __global__ void ema_update_f32(float* __restrict__ ema, const float* __restrict__ p, unsigned n, float decay) {
  const float one_minus = 1.0f - decay;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    ema[i] = ema[i] - one_minus * (ema[i] - p[i]);
}

// out[0] = sum of squares of x, in a fixed order (one block; the tensors are walked one after
// another by the host, so the global norm is deterministic).
extern "C" __global__ void __launch_bounds__(1024) sum_squares_f32(const float* __restrict__ x, unsigned n,
                                                                  float* __restrict__ out) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (unsigned i = threadIdx.x; i < n; i += blockDim.x) acc = fmaf(x[i], x[i], acc);
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = acc;
}

extern "C" __global__ void scale_f32(float* __restrict__ x, unsigned n, float s) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] *= s;
}
