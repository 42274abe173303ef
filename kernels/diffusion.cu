// The diffusion process (Ho et al. 2020) as kernels: timestep sampling, forward noising (eq. 8)
// fused with noise generation, the epsilon loss (eq. 17), and one fused kernel per sampler step
// (DDPM ancestral, DDIM), formula for formula as diffusers' schedulers. The per-step scalars are
// computed on the host (src/diffusion/), in f32 in diffusers' order; the kernels apply them
// element-wise with explicit _rn intrinsics so nothing is contracted into an FMA and every
// result matches the CPU reference (and diffusers) bit for bit.
#include "common.cuh"
#include "philox.cuh"

// Prediction types, as src/diffusion/config.rs numbers them.
constexpr int PRED_EPSILON = 0, PRED_SAMPLE = 1, PRED_V = 2;

// t[b] uniform in [0, t_max): the high half of word * t_max (floor(u * t_max), u = word / 2^32).
extern "C" __global__ void sample_timesteps_u32(unsigned* __restrict__ t, unsigned n, unsigned t_max,
                                                unsigned long long seed, unsigned long long offset) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    t[i] = __umulhi(philox_word(seed, offset, i), t_max);
}

extern "C" __global__ void fill_normal_f32(float* __restrict__ out, unsigned n, unsigned long long seed,
                                           unsigned long long offset) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = philox_normal(seed, offset, i);
}

// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t per image (eq. 8; diffusers' add_noise).
// eps is regenerated from (seed, offset, i) rather than stored: the loss kernels regenerate the
// same values, which saves writing and re-reading a full activation-sized buffer per step and
// keeps the noise defined by three integers. `noise` may instead supply eps explicitly (tests,
// fixtures from diffusers); pass null to generate it.
extern "C" __global__ void q_sample_f32(const float* __restrict__ x0, const unsigned* __restrict__ t,
                                        const float* __restrict__ sqrt_abar, const float* __restrict__ sqrt_one_minus_abar,
                                        unsigned t_max, const float* __restrict__ noise, float* __restrict__ xt,
                                        unsigned per_image, unsigned n, unsigned long long seed,
                                        unsigned long long offset) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    unsigned ti = min(t[i / per_image], t_max - 1);  // never read outside the tables
    float eps = noise ? noise[i] : philox_normal(seed, offset, i);
    xt[i] = __fadd_rn(__fmul_rn(sqrt_abar[ti], x0[i]), __fmul_rn(sqrt_one_minus_abar[ti], eps));
  }
}

// Loss (eq. 17) as a mean over all elements, deterministically: block b sums the squared errors
// of its fixed chunk [b * chunk, (b + 1) * chunk) in a fixed order (strided per thread, then
// block_sum's fixed tree); mse_loss_finish adds the partials in order in one block. The grid
// depends only on n, so the bits are the same on every run and every device.
extern "C" __global__ void __launch_bounds__(256) mse_loss_partial_f32(const float* __restrict__ pred,
                                                                      const float* __restrict__ target,
                                                                      float* __restrict__ partials, unsigned n,
                                                                      unsigned chunk, unsigned long long seed,
                                                                      unsigned long long offset) {
  __shared__ float scratch[32];
  unsigned begin = blockIdx.x * chunk, end = min(n, begin + chunk);
  float acc = 0.0f;
  for (unsigned i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float eps = target ? target[i] : philox_normal(seed, offset, i);
    float d = __fsub_rn(eps, pred[i]);
    acc = __fmaf_rn(d, d, acc);
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

extern "C" __global__ void __launch_bounds__(256) mse_loss_finish_f32(const float* __restrict__ partials,
                                                                     unsigned n_partials, float* __restrict__ loss,
                                                                     unsigned n) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (unsigned i = threadIdx.x; i < n_partials; i += blockDim.x) acc = __fadd_rn(acc, partials[i]);
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *loss = __fdiv_rn(acc, (float)n);
}

// dL/d pred = scale * (pred - eps), scale = 2 / n times the upstream gradient of the loss.
extern "C" __global__ void mse_loss_bwd_f32(const float* __restrict__ pred, const float* __restrict__ target,
                                            float* __restrict__ grad, unsigned n, float scale,
                                            unsigned long long seed, unsigned long long offset) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float eps = target ? target[i] : philox_normal(seed, offset, i);
    grad[i] = __fmul_rn(scale, __fsub_rn(pred[i], eps));
  }
}

// The model's prediction of x_0 (diffusers' pred_original_sample).
__device__ __forceinline__ float predict_x0(int pred_type, float s, float m, float sa, float sb) {
  if (pred_type == PRED_EPSILON) return __fdiv_rn(__fsub_rn(s, __fmul_rn(sb, m)), sa);
  if (pred_type == PRED_SAMPLE) return m;
  return __fsub_rn(__fmul_rn(sa, s), __fmul_rn(sb, m));
}

__device__ __forceinline__ float clip_x0(float x0, int clip, float range) {
  return clip ? fminf(fmaxf(x0, -range), range) : x0;
}

// The constants of one scheduler step. The by-value kernels below fill it from their arguments;
// the sampler's table-driven kernel reads it from a device table row (so one CUDA graph serves
// every step). Both then run the same element function, so both give the same bits.
struct StepParams {
  int pred_type, clip, add_noise, recompute_eps;
  float clip_range, sqrt_alpha_prod, sqrt_beta_prod;
  float c1, c2;  // DDPM: coeff_x0, coeff_sample; DDIM: sqrt_alpha_prev, dir_coeff
  float noise_std;
};

__device__ __forceinline__ float step_noise(const StepParams& c, const float* noise, unsigned long long seed,
                                            unsigned long long offset, unsigned i) {
  return __fmul_rn(c.noise_std, noise ? noise[i] : philox_normal(seed, offset, i));
}

// One DDPM ancestral step (DDPMScheduler.step): x_0 prediction, optional clip, posterior mean
// (eq. 12 in its x_0 form: coeff_x0 * x_0 + coeff_sample * x_t), plus noise_std * z when t > 0.
__device__ __forceinline__ float ddpm_prev(const StepParams& c, float s, float m, const float* noise,
                                           unsigned long long seed, unsigned long long offset, unsigned i) {
  float x0 = clip_x0(predict_x0(c.pred_type, s, m, c.sqrt_alpha_prod, c.sqrt_beta_prod), c.clip, c.clip_range);
  float p = __fadd_rn(__fmul_rn(c.c1, x0), __fmul_rn(c.c2, s));
  return c.add_noise ? __fadd_rn(p, step_noise(c, noise, seed, offset, i)) : p;
}

// One DDIM step (DDIMScheduler.step): x_0 and epsilon predictions, optional clip (and epsilon
// recomputed from the clipped x_0 when use_clipped_model_output), then
// sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps, plus sigma * z when eta > 0.
__device__ __forceinline__ float ddim_prev(const StepParams& c, float s, float m, const float* noise,
                                           unsigned long long seed, unsigned long long offset, unsigned i) {
  float sa = c.sqrt_alpha_prod, sb = c.sqrt_beta_prod;
  float x0 = predict_x0(c.pred_type, s, m, sa, sb);
  float eps;
  if (c.pred_type == PRED_EPSILON) eps = m;
  else if (c.pred_type == PRED_SAMPLE) eps = __fdiv_rn(__fsub_rn(s, __fmul_rn(sa, x0)), sb);
  else eps = __fadd_rn(__fmul_rn(sa, m), __fmul_rn(sb, s));
  x0 = clip_x0(x0, c.clip, c.clip_range);
  if (c.recompute_eps) eps = __fdiv_rn(__fsub_rn(s, __fmul_rn(sa, x0)), sb);
  float p = __fadd_rn(__fmul_rn(c.c1, x0), __fmul_rn(c.c2, eps));
  return c.add_noise ? __fadd_rn(p, step_noise(c, noise, seed, offset, i)) : p;
}

extern "C" __global__ void ddpm_step_f32(const float* __restrict__ sample, const float* __restrict__ model_out,
                                         const float* __restrict__ noise, float* __restrict__ prev, unsigned n,
                                         int pred_type, float sqrt_alpha_prod, float sqrt_beta_prod, int clip,
                                         float clip_range, float coeff_x0, float coeff_sample, float noise_std,
                                         int add_noise, unsigned long long seed, unsigned long long offset) {
  StepParams c{pred_type, clip, add_noise, 0, clip_range, sqrt_alpha_prod, sqrt_beta_prod, coeff_x0, coeff_sample,
               noise_std};
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    prev[i] = ddpm_prev(c, sample[i], model_out[i], noise, seed, offset, i);
}

extern "C" __global__ void ddim_step_f32(const float* __restrict__ sample, const float* __restrict__ model_out,
                                         const float* __restrict__ noise, float* __restrict__ prev, unsigned n,
                                         int pred_type, float sqrt_alpha_prod, float sqrt_beta_prod, int clip,
                                         float clip_range, int recompute_eps, float sqrt_alpha_prev, float dir_coeff,
                                         float noise_std, int add_noise, unsigned long long seed,
                                         unsigned long long offset) {
  StepParams c{pred_type, clip, add_noise, recompute_eps, clip_range, sqrt_alpha_prod, sqrt_beta_prod,
               sqrt_alpha_prev, dir_coeff, noise_std};
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    prev[i] = ddim_prev(c, sample[i], model_out[i], noise, seed, offset, i);
}

// ---- the table-driven sampler (src/sample.rs, src/diffusion/step_table.rs) ----
// Row k of the table holds step k's constants as 24 words (layout: step_table.rs); `step`
// points at the current step index, advanced on the device, so the same launches (and one
// captured CUDA graph) run every step with no host involvement.
constexpr unsigned STEP_ROW_WORDS = 24;

__device__ __forceinline__ StepParams step_row(const unsigned* row) {
  return StepParams{(int)row[1], (int)row[2], (int)row[10], (int)row[11], __uint_as_float(row[3]),
                    __uint_as_float(row[5]), __uint_as_float(row[6]), __uint_as_float(row[7]),
                    __uint_as_float(row[8]), __uint_as_float(row[9])};
}

// t[i] = the current step's timestep (as a float, the UNet's time input).
extern "C" __global__ void sampler_timesteps_f32(float* __restrict__ t, unsigned n, const unsigned* __restrict__ table,
                                                 const unsigned* __restrict__ step) {
  const unsigned* row = table + step[0] * STEP_ROW_WORDS;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    t[i] = __uint_as_float(row[4]);
}

// x = scheduler step(x, model_out) in place (each element reads only itself, so no restrict on
// x); step k draws Philox noise at offset `offset_base + k`.
extern "C" __global__ void sampler_step_f32(float* x, const float* __restrict__ model_out, unsigned n,
                                            const unsigned* __restrict__ table, const unsigned* __restrict__ step,
                                            unsigned long long seed, unsigned long long offset_base) {
  unsigned k = step[0];
  const unsigned* row = table + k * STEP_ROW_WORDS;
  StepParams c = step_row(row);
  unsigned long long offset = offset_base + k;
  bool ddim = row[0] != 0;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    x[i] = ddim ? ddim_prev(c, x[i], model_out[i], nullptr, seed, offset, i)
                : ddpm_prev(c, x[i], model_out[i], nullptr, seed, offset, i);
}

extern "C" __global__ void sampler_advance_u32(unsigned* step) {
  if (blockIdx.x == 0 && threadIdx.x == 0) step[0] += 1;
}

// ---- the linear solvers (src/diffusion/solver/): one row per model evaluation ----
// Every solver diffusers offers (DPM-Solver++, UniPC, DEIS, Euler, Heun, PNDM, ...) makes its next
// sample as a linear combination of the current sample x, one saved sample s, the newest converted
// model output d = p x + q m and three earlier ones h1, h2, h3 (ring slots of `state` named by the
// row), plus noise. The host works the coefficients and slots out (src/diffusion/solver/) and writes
// them into row k (words: step_table.rs); these kernels only evaluate them, in one fixed order, as
// the CPU reference does. state: [saved | ring 0 | ... | ring (ring - 1)], n floats each, zeroed
// before the first step.

// out = s_in * x: the model's input (scale_model_input).
extern "C" __global__ void solver_input_f32(float* __restrict__ out, const float* __restrict__ x, unsigned n,
                                            const unsigned* __restrict__ table, const unsigned* __restrict__ step) {
  const float s_in = __uint_as_float(table[step[0] * STEP_ROW_WORDS + 1]);
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = __fmul_rn(s_in, x[i]);
}

// c[0] x + c[1] s + c[2] d + c[3] h1 + c[4] h2 + c[5] h3, left to right, each product rounded.
__device__ __forceinline__ float solver_combine(const unsigned* c, float x, float s, float d, float h1, float h2,
                                                float h3) {
  float acc = __fmul_rn(__uint_as_float(c[0]), x);
  acc = __fadd_rn(acc, __fmul_rn(__uint_as_float(c[1]), s));
  acc = __fadd_rn(acc, __fmul_rn(__uint_as_float(c[2]), d));
  acc = __fadd_rn(acc, __fmul_rn(__uint_as_float(c[3]), h1));
  acc = __fadd_rn(acc, __fmul_rn(__uint_as_float(c[4]), h2));
  return __fadd_rn(acc, __fmul_rn(__uint_as_float(c[5]), h3));
}

// One model evaluation's update, in place: d into the row's write slot (after h1..h3 are read, so a
// row may reuse a slot it reads), the saved sample when the row says so, then x. noise: given, or
// null for Philox (seed, offset_base + k). Slots are taken modulo `ring_slots`: the host checks them
// against it, and this keeps a bad table inside the state.
extern "C" __global__ void solver_step_f32(float* x, const float* __restrict__ model_out, float* state,
                                           const float* __restrict__ noise, unsigned n, unsigned ring_slots,
                                           const unsigned* __restrict__ table, const unsigned* __restrict__ step,
                                           unsigned long long seed, unsigned long long offset_base) {
  const unsigned k = step[0];
  const unsigned* row = table + k * STEP_ROW_WORDS;
  const float p = __uint_as_float(row[2]), q = __uint_as_float(row[3]);
  const bool save = row[5] != 0, add_noise = row[6] != 0;
  const float noise_std = __uint_as_float(row[7]);
  const int clip = (int)row[20];
  const float clip_range = __uint_as_float(row[21]);
  float* saved = state;
  float* ring = state + n;
  const unsigned slots = row[22];
  const unsigned r = ring_slots;
  const size_t slot = (size_t)((slots & 255u) % r) * n, h1 = (size_t)(((slots >> 8) & 255u) % r) * n,
               h2 = (size_t)(((slots >> 16) & 255u) % r) * n, h3 = (size_t)((slots >> 24) % r) * n;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float xv = x[i], sv = saved[i];
    const float d = clip_x0(__fadd_rn(__fmul_rn(p, xv), __fmul_rn(q, model_out[i])), clip, clip_range);
    const float a = ring[h1 + i], b = ring[h2 + i], c = ring[h3 + i];
    float next = solver_combine(row + 8, xv, sv, d, a, b, c);
    if (add_noise)
      next = __fadd_rn(next, __fmul_rn(noise_std, noise ? noise[i] : philox_normal(seed, offset_base + k, i)));
    if (save) saved[i] = solver_combine(row + 14, xv, sv, d, a, b, c);
    ring[slot + i] = d;
    x[i] = next;
  }
}
