// Included by every kernel file. It hides the few spellings that must differ between nvcc and the
// host build that feeds the emulator (src/emu/cuda_host.h); kernel code itself is written once.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Dynamic shared memory, sized by the launch: `DYNAMIC_SHARED(float, smem);` declares `float* smem`.
#if defined(__CUDACC__)
#define DYNAMIC_SHARED(T, name)                                   \
  extern __shared__ __align__(16) unsigned char name##_bytes_[]; \
  T* name = reinterpret_cast<T*>(name##_bytes_)
#else
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::ddpm_emu::current_block->dynamic_shared)
#endif

constexpr unsigned FULL_MASK = 0xffffffffu;

// Sum over the 32 lanes of a warp; every lane gets the total. The xor butterfly makes the result
// identical on every lane and independent of timing, so reductions built on it are deterministic.
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
  return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// `scratch` holds 32 floats of shared memory; it may be reused after the call returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}
