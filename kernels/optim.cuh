// The optimizer's per-element arithmetic, shared by the by-value kernels (optim.cu) and the
// graphed step's row-driven ones (train_step.cu), so the two give the same bits.
#pragma once
#include "common.cuh"

// torch.optim.AdamW (single-tensor path), per element, in its order of operations:
//   p *= 1 - lr*wd;  m += (1-b1) (g - m)  (lerp);  v = b2 v + (1-b2) g^2;
//   p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps),  step_size = lr / bc1, bc = 1 - beta^step.
// grad_scale folds global-norm clipping in: min(1, max_norm / norm), 1 when not clipping.
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, float lr, float beta1, float beta2,
                                              float eps, float weight_decay, float step_size,
                                              float bias_correction2_sqrt, float grad_scale) {
  float grad = g * grad_scale;
  float param = p * (1.0f - lr * weight_decay);
  float mi = m + (1.0f - beta1) * (grad - m);
  float vi = v * beta2 + (1.0f - beta2) * grad * grad;
  m = mi;
  v = vi;
  float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
  p = param - step_size * (mi / denom);
}

// ema - (1 - decay) * (ema - p), as diffusers' EMAModel.
__device__ __forceinline__ float ema_element(float ema, float p, float one_minus_decay) {
  return ema - one_minus_decay * (ema - p);
}

// The weight's kept bf16 copy (src/backend/cuda_weights.rs), when it has one (else null): written
// in the pass that updates the weight, rounded as round_bf16_f32 rounds, so the products read the
// bits they would round themselves.
__device__ __forceinline__ void store_copy(__nv_bfloat16* copy, unsigned i, float p) {
  if (copy != nullptr) copy[i] = __float2bfloat16_rn(p);
}
