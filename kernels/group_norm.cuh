// GroupNorm over NHWC activations (torch.nn.GroupNorm: biased variance, eps inside the square
// root), optionally fused with SiLU, forward and backward. Image n, group g covers channels
// [g * cpg, (g + 1) * cpg) of every pixel of the image, cpg = channels / groups.
//
// Statistics and the input gradient: one block per (image, group), striding over the group's
// hw * cpg elements; block_sum's fixed tree combines the per-thread sums, so every result is the
// same bits on every run. When that is too few blocks for large groups, a split path spreads each
// group over several blocks (below). gamma/beta gradients sum over images and pixels, a different axis: a
// [pixel chunk, 32-channel tile] grid of blocks writes per-chunk partial sums, then one thread per
// channel adds the chunks in order (deterministic, and parallel even when batch * groups is small).
// Accurate expf (not __expf): the backward is checked against f64 finite differences.
//
// The input x is f32 or bf16 (a bf16 convolution's output, as torch.autocast stores it: a
// ResnetBlock's conv1 feeding norm2), widened on load; statistics, dy and dx are f32 either way.
// The kernels are templates here; group_norm.cu and group_norm_bf16.cu instantiate them per
// input type.
#pragma once
#include "common.cuh"

__device__ __forceinline__ float gn_silu(float v) { return v * (1.0f / (1.0f + expf(-v))); }

// d SiLU / dv = s (1 + v (1 - s)), s = sigmoid(v).
__device__ __forceinline__ float gn_silu_grad(float v) {
  float s = 1.0f / (1.0f + expf(-v));
  return s * (1.0f + v * (1.0f - s));
}

// The layout of one (image, group): element e in [0, hw * cpg) is pixel e / cpg, channel
// g * cpg + e % cpg.
struct GroupSpan {
  size_t base;  // flat index of (image n, pixel 0, channel g * cpg)
  unsigned channels, cpg, first_channel, count;

  __device__ GroupSpan(unsigned ng, unsigned hw, unsigned channels_, unsigned groups) {
    const unsigned n = ng / groups, g = ng % groups;
    channels = channels_;
    cpg = channels_ / groups;
    first_channel = g * cpg;
    count = hw * cpg;
    base = (size_t)n * hw * channels_ + first_channel;
  }
  __device__ size_t index(unsigned e) const { return base + (size_t)(e / cpg) * channels + e % cpg; }
  __device__ unsigned channel(unsigned e) const { return first_channel + e % cpg; }
};

// xhat and dL/dpre (dy, times SiLU' of the recomputed pre-activation when fused) of one element.
__device__ __forceinline__ void gn_grads(float xv, float dyv, float mean, float rstd, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, unsigned c, int silu, float& xhat,
                                         float& dpre) {
  xhat = (xv - mean) * rstd;
  dpre = dyv;
  if (silu) {
    float pre = xhat;
    if (gamma) pre *= gamma[c];
    if (beta) pre += beta[c];
    dpre *= gn_silu_grad(pre);
  }
}

__device__ __forceinline__ void gn_store(float* y, size_t i, float v) { y[i] = v; }
__device__ __forceinline__ void gn_store(__nv_bfloat16* y, size_t i, float v) { y[i] = __float2bfloat16_rn(v); }

// The input as f32: itself, or a bf16 activation widened (exact), so a kernel reading bf16 gives
// the bits the f32 kernel gives on the widened values.
__device__ __forceinline__ float gn_load(const float* x, size_t i) { return x[i]; }
__device__ __forceinline__ float gn_load(const __nv_bfloat16* x, size_t i) { return __bfloat162float(x[i]); }

// The forward into f32, or into bf16 rounded once from the same f32 value (nearest even): the
// input a bf16 convolution would otherwise round in a pass of its own (src/backend/cuda_bf16.rs).
template <typename X, typename T>
__device__ __forceinline__ void gn_fwd(const X* __restrict__ x, const float* __restrict__ gamma,
                                               const float* __restrict__ beta, T* __restrict__ y,
                                               float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                               unsigned batch, unsigned hw, unsigned channels, unsigned groups,
                                               float eps, int silu) {
  __shared__ float scratch[32];
  for (unsigned ng = blockIdx.x; ng < batch * groups; ng += gridDim.x) {
    const GroupSpan span(ng, hw, channels, groups);
    float s = 0.0f;
    for (unsigned e = threadIdx.x; e < span.count; e += blockDim.x) s += gn_load(x, span.index(e));
    const float mean0 = block_sum(s, scratch) / (float)span.count;
    // Second pass over the (cache-resident) group: deviations from the first mean, which stay
    // accurate when the mean is large compared with the spread (E[x^2] - E[x]^2 does not: the
    // parity test's offset group fails with it). Their sum also removes most of the first mean's
    // rounding error (the corrected two-pass algorithm of Chan, Golub and LeVeque).
    float sd = 0.0f, ss = 0.0f;
    for (unsigned e = threadIdx.x; e < span.count; e += blockDim.x) {
      float d = gn_load(x, span.index(e)) - mean0;
      sd += d;
      ss = fmaf(d, d, ss);
    }
    sd = block_sum(sd, scratch);
    ss = block_sum(ss, scratch);
    const float mean = mean0 + sd / (float)span.count;
    const float var = fmaxf(ss - sd * (sd / (float)span.count), 0.0f) / (float)span.count;
    const float rstd = 1.0f / sqrtf(var + eps);
    if (threadIdx.x == 0) {
      mean_out[ng] = mean;
      rstd_out[ng] = rstd;
    }
    for (unsigned e = threadIdx.x; e < span.count; e += blockDim.x) {
      const size_t i = span.index(e);
      const unsigned c = span.channel(e);
      float v = (gn_load(x, i) - mean) * rstd;
      if (gamma) v *= gamma[c];
      if (beta) v += beta[c];
      gn_store(y, i, silu ? gn_silu(v) : v);
    }
  }
}

// The split path, for when batch * groups blocks cannot fill the GPU (one image of a large model
// at sampling: 32 groups on 132 SMs) and each group is large. Each (image, group) is cut into
// `chunks` runs of chunk_len consecutive elements (the last may be shorter); block
// ng * chunks + k works on chunk k of group ng. A first kernel writes each chunk's mean and sum of
// squared deviations (the same corrected two-pass sums as above, over the chunk); a second
// combines a group's chunks in chunk order (Chan, Golub and LeVeque's pairwise update, in f64:
// a few flops per chunk) and normalises its own chunk. The chunking depends only on the shape
// (src/cuda/group_norm.rs), so the bits do too.
struct GroupChunk {
  GroupSpan span;
  unsigned ng, k, begin, end;

  __device__ GroupChunk(unsigned blk, unsigned chunks, unsigned chunk_len, unsigned hw, unsigned channels,
                        unsigned groups)
      : span(blk / chunks, hw, channels, groups), ng(blk / chunks), k(blk % chunks) {
    begin = k * chunk_len;
    end = min(span.count, begin + chunk_len);
  }
};

// part[2 * blk] = the chunk's mean, part[2 * blk + 1] = its sum of squared deviations from it.
template <typename X>
__device__ __forceinline__ void gn_stats_partial(
    const X* __restrict__ x, float* __restrict__ part, unsigned batch, unsigned hw, unsigned channels,
    unsigned groups, unsigned chunk_len, unsigned chunks) {
  __shared__ float scratch[32];
  for (unsigned blk = blockIdx.x; blk < batch * groups * chunks; blk += gridDim.x) {
    const GroupChunk ch(blk, chunks, chunk_len, hw, channels, groups);
    const float n = (float)(ch.end - ch.begin);
    float s = 0.0f;
    for (unsigned e = ch.begin + threadIdx.x; e < ch.end; e += blockDim.x) s += gn_load(x, ch.span.index(e));
    const float mean0 = block_sum(s, scratch) / n;
    float sd = 0.0f, ss = 0.0f;
    for (unsigned e = ch.begin + threadIdx.x; e < ch.end; e += blockDim.x) {
      float d = gn_load(x, ch.span.index(e)) - mean0;
      sd += d;
      ss = fmaf(d, d, ss);
    }
    sd = block_sum(sd, scratch);
    ss = block_sum(ss, scratch);
    if (threadIdx.x == 0) {
      part[2 * (size_t)blk] = mean0 + sd / n;
      part[2 * (size_t)blk + 1] = fmaxf(ss - sd * (sd / n), 0.0f);
    }
  }
}

// The group's mean and rstd from its chunks' partials, added in chunk order.
__device__ __forceinline__ void gn_combine(const float* __restrict__ part, const GroupChunk& ch, unsigned chunks,
                                           unsigned chunk_len, float eps, float& mean, float& rstd) {
  const float* p = part + 2 * (size_t)ch.ng * chunks;
  double m = p[0], m2 = p[1], na = (double)min(chunk_len, ch.span.count);
  for (unsigned k = 1; k < chunks; ++k) {
    const double nb = (double)(min(ch.span.count, (k + 1) * chunk_len) - k * chunk_len), n = na + nb;
    const double delta = (double)p[2 * k] - m;
    m += delta * (nb / n);
    m2 += (double)p[2 * k + 1] + delta * delta * (na * nb / n);
    na = n;
  }
  mean = (float)m;
  rstd = (float)(1.0 / sqrt(m2 / na + (double)eps));
}

template <typename X, typename T>
__device__ __forceinline__ void gn_apply(const X* __restrict__ x, const float* __restrict__ gamma,
                                                 const float* __restrict__ beta, const float* __restrict__ part,
                                                 T* __restrict__ y, float* __restrict__ mean_out,
                                                 float* __restrict__ rstd_out, unsigned batch, unsigned hw,
                                                 unsigned channels, unsigned groups, float eps, int silu,
                                                 unsigned chunk_len, unsigned chunks) {
  __shared__ float stats[2];
  for (unsigned blk = blockIdx.x; blk < batch * groups * chunks; blk += gridDim.x) {
    const GroupChunk ch(blk, chunks, chunk_len, hw, channels, groups);
    __syncthreads();  // stats may still be read for the previous block
    if (threadIdx.x == 0) {
      gn_combine(part, ch, chunks, chunk_len, eps, stats[0], stats[1]);
      if (ch.k == 0) {
        mean_out[ch.ng] = stats[0];
        rstd_out[ch.ng] = stats[1];
      }
    }
    __syncthreads();
    const float mean = stats[0], rstd = stats[1];
    for (unsigned e = ch.begin + threadIdx.x; e < ch.end; e += blockDim.x) {
      const size_t i = ch.span.index(e);
      const unsigned c = ch.span.channel(e);
      float v = (gn_load(x, i) - mean) * rstd;
      if (gamma) v *= gamma[c];
      if (beta) v += beta[c];
      gn_store(y, i, silu ? gn_silu(v) : v);
    }
  }
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dL/dpre * gamma: the two
// group means carry the statistics' dependence on x.
template <typename X>
__device__ __forceinline__ void gn_bwd(
    const X* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx,
    unsigned batch, unsigned hw, unsigned channels, unsigned groups, int silu) {
  __shared__ float scratch[32];
  for (unsigned ng = blockIdx.x; ng < batch * groups; ng += gridDim.x) {
    const GroupSpan span(ng, hw, channels, groups);
    const float m = mean[ng], r = rstd[ng];
    float a = 0.0f, b = 0.0f;
    for (unsigned e = threadIdx.x; e < span.count; e += blockDim.x) {
      const size_t i = span.index(e);
      const unsigned c = span.channel(e);
      float xhat, dpre;
      gn_grads(gn_load(x, i), dy[i], m, r, gamma, beta, c, silu, xhat, dpre);
      const float dxhat = gamma ? __fmul_rn(dpre, gamma[c]) : dpre;
      a += dxhat;
      b = fmaf(dxhat, xhat, b);
    }
    const float mean_dxhat = block_sum(a, scratch) / (float)span.count;
    const float mean_dxhat_xhat = block_sum(b, scratch) / (float)span.count;
    for (unsigned e = threadIdx.x; e < span.count; e += blockDim.x) {
      const size_t i = span.index(e);
      const unsigned c = span.channel(e);
      float xhat, dpre;
      gn_grads(gn_load(x, i), dy[i], m, r, gamma, beta, c, silu, xhat, dpre);
      // Rounded on its own (__fmul_rn): nvcc would otherwise contract the product into the
      // subtraction below, fma(dpre, gamma, -mean_dxhat), whose result differs from the rounded
      // product's by up to half an ulp of dxhat, times rstd (316 at eps 1e-5). A one-element group,
      // where dx is exactly 0, then gave 4.6e-6 on an H200 (the emulator, built by gcc, never
      // contracts). The same rounding as the first loop's sum also keeps mean(dx) near 0.
      const float dxhat = gamma ? __fmul_rn(dpre, gamma[c]) : dpre;
      dx[i] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
    }
  }
}

// The backward's split path (chunks as in the forward's): part[2 * blk] and part[2 * blk + 1] are
// the chunk's sums of dxhat and dxhat * xhat; the second kernel adds a group's chunks in order
// (f64) and writes its own chunk's dx.
template <typename X>
__device__ __forceinline__ void gn_bwd_partial(
    const X* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    float* __restrict__ part, unsigned batch, unsigned hw, unsigned channels, unsigned groups, int silu,
    unsigned chunk_len, unsigned chunks) {
  __shared__ float scratch[32];
  for (unsigned blk = blockIdx.x; blk < batch * groups * chunks; blk += gridDim.x) {
    const GroupChunk ch(blk, chunks, chunk_len, hw, channels, groups);
    const float m = mean[ch.ng], r = rstd[ch.ng];
    float a = 0.0f, b = 0.0f;
    for (unsigned e = ch.begin + threadIdx.x; e < ch.end; e += blockDim.x) {
      const size_t i = ch.span.index(e);
      const unsigned c = ch.span.channel(e);
      float xhat, dpre;
      gn_grads(gn_load(x, i), dy[i], m, r, gamma, beta, c, silu, xhat, dpre);
      const float dxhat = gamma ? __fmul_rn(dpre, gamma[c]) : dpre;
      a += dxhat;
      b = fmaf(dxhat, xhat, b);
    }
    a = block_sum(a, scratch);
    b = block_sum(b, scratch);
    if (threadIdx.x == 0) {
      part[2 * (size_t)blk] = a;
      part[2 * (size_t)blk + 1] = b;
    }
  }
}

template <typename X>
__device__ __forceinline__ void gn_bwd_apply(
    const X* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    const float* __restrict__ part, float* __restrict__ dx, unsigned batch, unsigned hw, unsigned channels,
    unsigned groups, int silu, unsigned chunk_len, unsigned chunks) {
  __shared__ float sums[2];
  for (unsigned blk = blockIdx.x; blk < batch * groups * chunks; blk += gridDim.x) {
    const GroupChunk ch(blk, chunks, chunk_len, hw, channels, groups);
    __syncthreads();  // sums may still be read for the previous block
    if (threadIdx.x == 0) {
      const float* p = part + 2 * (size_t)ch.ng * chunks;
      double a = 0.0, b = 0.0;
      for (unsigned k = 0; k < chunks; ++k) {
        a += (double)p[2 * k];
        b += (double)p[2 * k + 1];
      }
      sums[0] = (float)(a / ch.span.count);
      sums[1] = (float)(b / ch.span.count);
    }
    __syncthreads();
    const float m = mean[ch.ng], r = rstd[ch.ng], mean_dxhat = sums[0], mean_dxhat_xhat = sums[1];
    for (unsigned e = ch.begin + threadIdx.x; e < ch.end; e += blockDim.x) {
      const size_t i = ch.span.index(e);
      const unsigned c = ch.span.channel(e);
      float xhat, dpre;
      gn_grads(gn_load(x, i), dy[i], m, r, gamma, beta, c, silu, xhat, dpre);
      const float dxhat = gamma ? __fmul_rn(dpre, gamma[c]) : dpre;  // as gn_bwd's
      dx[i] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
    }
  }
}

constexpr unsigned GN_TILE_C = 32, GN_ROWS = 8;  // a block: 32 channel lanes x 8 pixel rows

// Partial gamma/beta gradients: block (chunk, tile) sums dL/dpre * xhat and dL/dpre over pixels
// [chunk * chunk_pixels, (chunk + 1) * chunk_pixels) of the whole batch (pixel p of the flattened
// [batch * hw] axis) for channels [tile * 32, tile * 32 + 32). Lanes read 32 consecutive channels
// of a pixel (coalesced); each row strides over the chunk's pixels, then row 0 adds the 8 rows in
// order. Writes part_dgamma/part_dbeta[chunk * channels + c].
template <typename X>
__device__ __forceinline__ void gn_bwd_params_partial(
    const X* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
    float* __restrict__ part_dgamma, float* __restrict__ part_dbeta, unsigned batch, unsigned hw, unsigned channels,
    unsigned groups, int silu, unsigned chunk_pixels, unsigned chunks) {
  __shared__ float sg[GN_ROWS][GN_TILE_C + 1], sb[GN_ROWS][GN_TILE_C + 1];
  const unsigned lane = threadIdx.x % GN_TILE_C, row = threadIdx.x / GN_TILE_C;
  const unsigned tiles = (channels + GN_TILE_C - 1) / GN_TILE_C, cpg = channels / groups, pixels = batch * hw;
  for (unsigned blk = blockIdx.x; blk < tiles * chunks; blk += gridDim.x) {
    const unsigned chunk = blk / tiles, c = blk % tiles * GN_TILE_C + lane;
    const unsigned p_end = min(pixels, (chunk + 1) * chunk_pixels);
    float acc_g = 0.0f, acc_b = 0.0f;
    if (c < channels) {
      for (unsigned p = chunk * chunk_pixels + row; p < p_end; p += GN_ROWS) {
        const unsigned ng = p / hw * groups + c / cpg;
        const size_t i = (size_t)p * channels + c;
        float xhat, dpre;
        gn_grads(gn_load(x, i), dy[i], mean[ng], rstd[ng], gamma, beta, c, silu, xhat, dpre);
        acc_g = fmaf(dpre, xhat, acc_g);
        acc_b += dpre;
      }
    }
    sg[row][lane] = acc_g;
    sb[row][lane] = acc_b;
    __syncthreads();
    if (row == 0 && c < channels) {
      float tg = 0.0f, tb = 0.0f;
      for (unsigned r = 0; r < GN_ROWS; ++r) {
        tg += sg[r][lane];
        tb += sb[r][lane];
      }
      part_dgamma[(size_t)chunk * channels + c] = tg;
      part_dbeta[(size_t)chunk * channels + c] = tb;
    }
    __syncthreads();  // the next iteration overwrites sg/sb
  }
}
