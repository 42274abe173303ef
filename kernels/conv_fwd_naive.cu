// Workbench variant of conv2d_fwd_f32 (kernels/conv.cu): the direct convolution, one thread per
// output element, no shared memory. Each thread sums over (ky, kx, i) in increasing order with
// fmaf, reading x and w straight from global memory. Slow; it is the simple baseline that the
// tiled kernel is measured against (`ddpm kernels --bench conv_fwd`, docs/kernels.md).
//
// Same parameters as conv2d_fwd_f32: NHWC x, OHWI w, optional bias (null for none), NHWC y, then
// the geometry (out_h/out_w include the padding; bottom/right padding only show up there).
#include "common.cuh"

extern "C" __global__ void conv2d_fwd_naive_f32(const float* __restrict__ x, const float* __restrict__ w,
                                                const float* __restrict__ bias, float* __restrict__ y, unsigned batch,
                                                unsigned in_h, unsigned in_w, unsigned in_c, unsigned out_h,
                                                unsigned out_w, unsigned out_c, unsigned k, unsigned stride,
                                                unsigned pad_top, unsigned pad_left) {
  const unsigned n_out = batch * out_h * out_w * out_c;
  for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < n_out; e += gridDim.x * blockDim.x) {
    unsigned o = e % out_c, p = e / out_c, ox = p % out_w, t = p / out_w, oy = t % out_h, n = t / out_h;
    float acc = 0.0f;
    for (unsigned ky = 0; ky < k; ++ky) {
      int iy = (int)(oy * stride + ky) - (int)pad_top;
      if (iy < 0 || iy >= (int)in_h) continue;
      for (unsigned kx = 0; kx < k; ++kx) {
        int ix = (int)(ox * stride + kx) - (int)pad_left;
        if (ix < 0 || ix >= (int)in_w) continue;
        const float* xp = x + ((size_t)(n * in_h + iy) * in_w + ix) * in_c;
        const float* wp = w + ((size_t)(o * k + ky) * k + kx) * in_c;
        for (unsigned i = 0; i < in_c; ++i) acc = fmaf(__ldg(&xp[i]), __ldg(&wp[i]), acc);
      }
    }
    y[e] = bias ? acc + __ldg(&bias[o]) : acc;
  }
}
