// GroupNorm(+SiLU) on an f32 input: the kernels of group_norm.cuh instantiated for it, and the
// last step of the gamma/beta gradients (which reads only partial sums, so serves both inputs).
#include "group_norm.cuh"

extern "C" __global__ void __launch_bounds__(512) group_norm_fwd_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    float* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out, unsigned batch, unsigned hw,
    unsigned channels, unsigned groups, float eps, int silu) {
  gn_fwd(x, gamma, beta, y, mean_out, rstd_out, batch, hw, channels, groups, eps, silu);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_fwd_to_bf16_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    __nv_bfloat16* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out, unsigned batch,
    unsigned hw, unsigned channels, unsigned groups, float eps, int silu) {
  gn_fwd(x, gamma, beta, y, mean_out, rstd_out, batch, hw, channels, groups, eps, silu);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_stats_partial_f32(
    const float* __restrict__ x, float* __restrict__ part, unsigned batch, unsigned hw, unsigned channels,
    unsigned groups, unsigned chunk_len, unsigned chunks) {
  gn_stats_partial(x, part, batch, hw, channels, groups, chunk_len, chunks);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_apply_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ part, float* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
    unsigned batch, unsigned hw, unsigned channels, unsigned groups, float eps, int silu, unsigned chunk_len,
    unsigned chunks) {
  gn_apply(x, gamma, beta, part, y, mean_out, rstd_out, batch, hw, channels, groups, eps, silu, chunk_len, chunks);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_apply_to_bf16_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ part, __nv_bfloat16* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, unsigned batch, unsigned hw, unsigned channels, unsigned groups, float eps,
    int silu, unsigned chunk_len, unsigned chunks) {
  gn_apply(x, gamma, beta, part, y, mean_out, rstd_out, batch, hw, channels, groups, eps, silu, chunk_len, chunks);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_bwd_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    float* __restrict__ dx, unsigned batch, unsigned hw, unsigned channels, unsigned groups, int silu) {
  gn_bwd(x, gamma, beta, mean, rstd, dy, dx, batch, hw, channels, groups, silu);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_bwd_partial_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    float* __restrict__ part, unsigned batch, unsigned hw, unsigned channels, unsigned groups, int silu,
    unsigned chunk_len, unsigned chunks) {
  gn_bwd_partial(x, gamma, beta, mean, rstd, dy, part, batch, hw, channels, groups, silu, chunk_len, chunks);
}

extern "C" __global__ void __launch_bounds__(512) group_norm_bwd_apply_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    const float* __restrict__ part, float* __restrict__ dx, unsigned batch, unsigned hw, unsigned channels,
    unsigned groups, int silu, unsigned chunk_len, unsigned chunks) {
  gn_bwd_apply(x, gamma, beta, mean, rstd, dy, part, dx, batch, hw, channels, groups, silu, chunk_len, chunks);
}

extern "C" __global__ void __launch_bounds__(256) group_norm_bwd_params_partial_f32(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    float* __restrict__ part_dgamma, float* __restrict__ part_dbeta, unsigned batch, unsigned hw, unsigned channels,
    unsigned groups, int silu, unsigned chunk_pixels, unsigned chunks) {
  gn_bwd_params_partial(x, gamma, beta, mean, rstd, dy, part_dgamma, part_dbeta, batch, hw, channels, groups, silu,
                        chunk_pixels, chunks);
}

// dgamma[c] / dbeta[c] = the chunks' partial sums added in chunk order; either may be null.
extern "C" __global__ void group_norm_bwd_params_f32(const float* __restrict__ part_dgamma,
                                                     const float* __restrict__ part_dbeta, float* __restrict__ dgamma,
                                                     float* __restrict__ dbeta, unsigned channels, unsigned chunks) {
  for (unsigned c = blockIdx.x * blockDim.x + threadIdx.x; c < channels; c += gridDim.x * blockDim.x) {
    float tg = 0.0f, tb = 0.0f;
    for (unsigned k = 0; k < chunks; ++k) {
      tg += part_dgamma[(size_t)k * channels + c];
      tb += part_dbeta[(size_t)k * channels + c];
    }
    if (dgamma) dgamma[c] = tg;
    if (dbeta) dbeta[c] = tb;
  }
}
