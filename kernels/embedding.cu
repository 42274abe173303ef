// diffusers' sinusoidal timestep embedding (get_timestep_embedding, scale 1, max_period 10000):
// y[i, :] = [sin(t_i f_k), cos(t_i f_k)] for k < dim / 2 (halves swapped when flip_sin_to_cos),
// f_k = exp(-ln(10000) k / (dim / 2 - freq_shift)), zero last column when dim is odd.
// The float32 products and quotient are diffusers' (explicit _rn, nothing contracted). exp, sin
// and cos are evaluated in double and rounded once: correctly rounded float32 results, where
// CUDA's expf/sinf/cosf are up to 2 ulps off, and an error in f_k is multiplied by t (up to 999)
// in the argument. The output is tiny ([batch, dim]), so the double math costs nothing.
#include "common.cuh"

// neg_log_max_period = float32(-ln 10000) and denominator = float32(dim / 2 - freq_shift), both
// rounded on the host exactly as PyTorch rounds diffusers' Python floats.
extern "C" __global__ void timestep_embedding_f32(const float* __restrict__ t, float* __restrict__ y, unsigned n,
                                                  unsigned dim, int flip_sin_to_cos, float neg_log_max_period,
                                                  float denominator) {
  const unsigned half = dim / 2;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned row = i / dim, j = i - row * dim;
    float v = 0.0f;
    if (j < 2 * half) {
      const bool first_half = j < half;
      const unsigned k = first_half ? j : j - half;
      const float exponent = __fdiv_rn(__fmul_rn(neg_log_max_period, (float)k), denominator);
      const float freq = (float)exp((double)exponent);
      const double arg = (double)__fmul_rn(t[row], freq);
      v = (float)(first_half != (flip_sin_to_cos != 0) ? sin(arg) : cos(arg));
    }
    y[i] = v;
  }
}
