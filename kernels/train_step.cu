// The device side of a graphed training step (src/train/graph.rs). The host writes one row of
// per-step constants before each replay (layout: src/train/row.rs); what depends on the step's own
// results (the global gradient norm, the clip scale, whether the update is applied at all) is
// decided here, so a whole step replays as one CUDA graph with nothing read back in between.
#include "common.cuh"
#include "optim.cuh"
#include "philox.cuh"

constexpr int ROW_LR = 0, ROW_BETA1 = 1, ROW_BETA2 = 2, ROW_EPS = 3, ROW_WD = 4, ROW_STEP_SIZE = 5,
              ROW_BC2_SQRT = 6, ROW_EMA_DECAY = 7, ROW_SEED = 8, ROW_OFFSET = 10, ROW_SLOT = 12;
constexpr int ST_OK = 0, ST_SCALE = 1, ST_NORM = 2;
constexpr int HISTORY_WORDS = 4;
constexpr unsigned NORM_LANES = 256;

__device__ __forceinline__ unsigned long long row_u64(const unsigned* w, int i) {
  return (unsigned long long)w[i] | ((unsigned long long)w[i + 1] << 32);
}

__device__ __forceinline__ float row_f32(const unsigned* w, int i) { return __uint_as_float(w[i]); }

// The step's draws, as the op-by-op step makes them (src/train/step.rs): t[i] the timestep of
// image first + i (sample_timesteps_u32's formula), t_float[i] the same as the UNet's time input;
// eps[j] normal start + j of the stream at offset + 1, stored so the noising and both loss
// kernels read it instead of regenerating it from by-value arguments a graph would freeze.
extern "C" __global__ void train_draw_f32(const unsigned* __restrict__ row, unsigned* __restrict__ t,
                                          float* __restrict__ t_float, unsigned images, unsigned first,
                                          unsigned t_max, float* __restrict__ eps, unsigned n,
                                          unsigned long long start) {
  const unsigned long long seed = row_u64(row, ROW_SEED), offset = row_u64(row, ROW_OFFSET);
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    eps[i] = philox_normal(seed, offset + 1, start + i);
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < images; i += gridDim.x * blockDim.x) {
    const unsigned v = __umulhi(philox_word(seed, offset, first + i), t_max);
    t[i] = v;
    t_float[i] = (float)v;  // exact: t < 2^24
  }
}

// The global gradient norm from the per-tensor partial sums of squares (sum_squares_f32), and
// the step's decisions. One block of NORM_LANES threads: lane k adds partials k, k + 256, ... in
// f64 in order, then lane 0 adds the lanes' sums in order (the host's norm_of_partials, bit for
// bit: f64 adds, division and sqrt are correctly rounded on both, and nothing here can contract). scale = min(1, max_norm / (norm + 1e-6)) in f64 as torch's clip_grad_norm_, 1 when not
// clipping; ok = the loss and the norm are finite and, when `sticky`, the previous status was ok
// too (so after the first non-finite step no later step of the window updates anything).
extern "C" __global__ void __launch_bounds__(256) clip_status_f32(const float* __restrict__ partials, unsigned n,
                                                                 const float* __restrict__ loss, float max_norm,
                                                                 int clip, int sticky, unsigned* __restrict__ status) {
  __shared__ double lanes[NORM_LANES];
  double acc = 0.0;
  for (unsigned i = threadIdx.x; i < n; i += NORM_LANES) acc += (double)partials[i];
  lanes[threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.x != 0) return;
  double total = 0.0;
  for (unsigned k = 0; k < NORM_LANES; ++k) total += lanes[k];
  const double norm = sqrt(total);
  const float scale = clip ? (float)fmin((double)max_norm / (norm + 1e-6), 1.0) : 1.0f;
  const bool finite = isfinite(*loss) && isfinite(norm);
  const unsigned long long bits = (unsigned long long)__double_as_longlong(norm);
  status[ST_OK] = finite && (!sticky || status[ST_OK] != 0) ? 1u : 0u;
  status[ST_SCALE] = __float_as_uint(scale);
  status[ST_NORM] = (unsigned)bits;
  status[ST_NORM + 1] = (unsigned)(bits >> 32);
}

// adamw_step_f32 (and its copy) with its constants from the row and the clip scale from the
// status, then, when `ema` is given, ema_update_f32 of it from the updated weight with the row's
// decay, in the same pass; block `block` of `grid`. Each element's arithmetic is the same whichever
// block runs it.
__device__ __forceinline__ void adamw_row_blocks(float* __restrict__ p, const float* __restrict__ g,
                                                 float* __restrict__ m, float* __restrict__ v,
                                                 __nv_bfloat16* __restrict__ copy, float* __restrict__ ema, unsigned n,
                                                 const unsigned* __restrict__ row, const unsigned* __restrict__ status,
                                                 unsigned block, unsigned grid) {
  const float lr = row_f32(row, ROW_LR), beta1 = row_f32(row, ROW_BETA1), beta2 = row_f32(row, ROW_BETA2);
  const float eps = row_f32(row, ROW_EPS), wd = row_f32(row, ROW_WD), step_size = row_f32(row, ROW_STEP_SIZE);
  const float bc2_sqrt = row_f32(row, ROW_BC2_SQRT), scale = __uint_as_float(status[ST_SCALE]);
  const float one_minus = 1.0f - row_f32(row, ROW_EMA_DECAY);
  for (unsigned i = block * blockDim.x + threadIdx.x; i < n; i += grid * blockDim.x) {
    adamw_element(p[i], g[i], m[i], v[i], lr, beta1, beta2, eps, wd, step_size, bc2_sqrt, scale);
    store_copy(copy, i, p[i]);
    if (ema != nullptr) ema[i] = ema_element(ema[i], p[i], one_minus);
  }
}

// adamw_row_blocks over one parameter; nothing is written when the status says the step is not
// applied.
extern "C" __global__ void adamw_step_row_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                              float* __restrict__ v, __nv_bfloat16* __restrict__ copy,
                                              float* __restrict__ ema, unsigned n, const unsigned* __restrict__ row,
                                              const unsigned* __restrict__ status) {
  if (status[ST_OK] == 0) return;
  adamw_row_blocks(p, g, m, v, copy, ema, n, row, status, blockIdx.x, gridDim.x);
}

// adamw_step_row_f32 of every parameter in one launch (the graphed step's update: 328 launches
// for cifar10 otherwise). The table holds per parameter the addresses of p, g, m, v, its bf16
// copy and its EMA (low and high words; 0 for none), then n, its first block and its blocks
// (ADAMW_TABLE_WORDS u32), parameters in block order: block b runs block b - first of that
// parameter's own launch.
constexpr unsigned ADAMW_TABLE_WORDS = 15;
extern "C" __global__ void adamw_step_many_row_f32(const unsigned* __restrict__ table, unsigned tensors,
                                                   const unsigned* __restrict__ row,
                                                   const unsigned* __restrict__ status) {
  if (status[ST_OK] == 0) return;
  unsigned lo = 0, hi = tensors;  // the last parameter whose first block is <= blockIdx.x
  while (hi - lo > 1) {
    const unsigned mid = (lo + hi) / 2;
    if (table[mid * ADAMW_TABLE_WORDS + 13] <= blockIdx.x) lo = mid; else hi = mid;
  }
  const unsigned* t = table + lo * ADAMW_TABLE_WORDS;
  unsigned long long a[6];
  for (int k = 0; k < 6; ++k) a[k] = (unsigned long long)t[2 * k] | ((unsigned long long)t[2 * k + 1] << 32);
  adamw_row_blocks(reinterpret_cast<float*>(a[0]), reinterpret_cast<const float*>(a[1]), reinterpret_cast<float*>(a[2]),
                   reinterpret_cast<float*>(a[3]), reinterpret_cast<__nv_bfloat16*>(a[4]), reinterpret_cast<float*>(a[5]),
                   t[12], row, status, blockIdx.x - t[13], t[14]);
}

// history[slot] = (loss, applied, norm): the step's outcome, read by the host every few steps.
extern "C" __global__ void record_step_u32(const unsigned* __restrict__ row, const unsigned* __restrict__ status,
                                           const float* __restrict__ loss, unsigned* __restrict__ history,
                                           unsigned slots) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  unsigned* h = history + (row[ROW_SLOT] % slots) * HISTORY_WORDS;
  h[0] = __float_as_uint(*loss);
  h[1] = status[ST_OK];
  h[2] = status[ST_NORM];
  h[3] = status[ST_NORM + 1];
}
