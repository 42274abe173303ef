// Kernels that exercise one CUDA feature each. tests/emulator.rs runs them on the emulator and
// tests/gpu.rs on a real GPU against the same expectations, so the emulator is held to what the
// hardware does. Some kernels here are wrong on purpose (marked): the emulator must refuse them.
#include "../common.cuh"

// 12 words per thread: threadIdx, blockIdx, blockDim, gridDim (x, y, z each).
extern "C" __global__ void emu_test_indices(unsigned* out) {
  unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned* o = out + 12 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
  unsigned v[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
                    blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
  for (int i = 0; i < 12; ++i) o[i] = v[i];
}

// Reverses each block's 128-element chunk through a static __shared__ tile.
extern "C" __global__ void __launch_bounds__(128) emu_test_static_shared(const float* __restrict__ in, float* __restrict__ out) {
  __shared__ float tile[128];
  unsigned base = blockIdx.x * 128;
  tile[threadIdx.x] = __ldg(&in[base + threadIdx.x]);
  __syncthreads();
  out[base + threadIdx.x] = tile[127 - threadIdx.x];
}

// The same through dynamic shared memory sized by the launch (blockDim.x floats).
extern "C" __global__ void emu_test_dynamic_shared(const float* in, float* out) {
  DYNAMIC_SHARED(float, tile);
  unsigned base = blockIdx.x * blockDim.x;
  tile[threadIdx.x] = in[base + threadIdx.x];
  __syncthreads();
  out[base + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

// 8 shuffle results per thread, covering each variant with and without a sub-warp width.
extern "C" __global__ void emu_test_shuffles(const int* in, int* out) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned lane = threadIdx.x % 32;
  int v = in[i];
  int* o = out + 8 * i;
  o[0] = __shfl_sync(FULL_MASK, v, (lane * 7) % 32);
  o[1] = __shfl_sync(FULL_MASK, v, lane + 3, 8);
  o[2] = __shfl_up_sync(FULL_MASK, v, 3);
  o[3] = __shfl_up_sync(FULL_MASK, v, 5, 16);
  o[4] = __shfl_down_sync(FULL_MASK, v, 5);
  o[5] = __shfl_down_sync(FULL_MASK, v, 3, 8);
  o[6] = __shfl_xor_sync(FULL_MASK, v, 13);
  o[7] = __shfl_xor_sync(FULL_MASK, v, 12, 8);
}

// A float shuffle under a half-warp mask: lanes 0-15 and 16-31 form two independent groups.
extern "C" __global__ void emu_test_shuffle_half_mask(const float* in, float* out) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned lane = threadIdx.x % 32;
  unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  float v = in[i];
  for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(mask, v, offset);
  out[i] = v;
}

// ballot, any, all over the predicate in[i] % 3 == 0; three words per thread.
extern "C" __global__ void emu_test_votes(const int* in, unsigned* out) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  int p = in[i] % 3 == 0;
  __syncwarp();
  out[3 * i + 0] = __ballot_sync(FULL_MASK, p);
  out[3 * i + 1] = __any_sync(FULL_MASK, p);
  out[3 * i + 2] = __all_sync(FULL_MASK, p);
}

// __syncthreads_count/and/or over the predicate in[i] > 0; three words per block.
extern "C" __global__ void emu_test_sync_reductions(const int* in, int* out) {
  int p = in[blockIdx.x * blockDim.x + threadIdx.x] > 0;
  int count = __syncthreads_count(p);
  int all = __syncthreads_and(p);
  int any = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[3 * blockIdx.x + 0] = count;
    out[3 * blockIdx.x + 1] = all;
    out[3 * blockIdx.x + 2] = any;
  }
}

// Global and shared atomics. Every block adds into the same global words, so blocks running on
// different worker threads race exactly as they would on a GPU.
extern "C" __global__ void emu_test_atomics(const int* in, float* fsum, int* isum, unsigned* umax, int* imin,
                                            unsigned* cas_count, int* block_sums) {
  __shared__ int shared_sum;
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = in[i];
  if (threadIdx.x == 0) shared_sum = 0;
  __syncthreads();
  atomicAdd(fsum, 0.5f);  // halves are exact in f32, so the total does not depend on order
  atomicAdd(isum, v);
  atomicMax(umax, (unsigned)(v * 7 % 1000));
  atomicMin(imin, v - 500);
  unsigned old = atomicCAS(cas_count, 0u, 0u);  // a CAS that never swaps, then a CAS loop increment
  for (;;) {
    unsigned seen = atomicCAS(cas_count, old, old + 1);
    if (seen == old) break;
    old = seen;
  }
  atomicAdd(&shared_sum, v);
  __syncthreads();
  if (threadIdx.x == 0) block_sums[blockIdx.x] = shared_sum;
}

// Math functions and intrinsics kernels use; 8 results per element.
extern "C" __global__ void emu_test_math(const float* x, float* out, unsigned n) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
  float* o = out + 8 * i;
  o[0] = __expf(v);
  o[1] = rsqrtf(fabsf(v) + 1.0f);
  o[2] = __fdividef(v, 3.0f);
  o[3] = __logf(fabsf(v) + 1.0f);
  o[4] = __sinf(v);
  o[5] = __cosf(v);
  o[6] = tanhf(v);
  o[7] = fmaxf(v, 0.0f) + fminf(v, 0.0f) * 0.5f;
}

// Vector types: float4 and int4 loads/stores, float2 construction.
extern "C" __global__ void emu_test_vector_types(const float4* fin, float4* fout, const int4* iin, int4* iout, float2* f2,
                                                 unsigned n) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float4 a = fin[i];
  fout[i] = make_float4(a.w, a.z * 2.0f, a.y + 1.0f, a.x);
  int4 b = iin[i];
  iout[i] = make_int4(b.x + b.y, b.y - b.z, b.z * b.w, -b.w);
  f2[i] = make_float2(a.x + a.y, a.z - a.w);
}

// __nv_bfloat16 and __half from CUDA's own headers: round-to-nearest-even conversion and back.
extern "C" __global__ void emu_test_half_bf16(const float* x, __nv_bfloat16* b, __half* h, float* back, unsigned n) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  b[i] = __float2bfloat16(x[i]);
  h[i] = __float2half(x[i]);
  back[2 * i] = __bfloat162float(b[i]);
  back[2 * i + 1] = __half2float(h[i]);
}

// A plain kernel for launch-limit and argument checks: out[i] = i.
extern "C" __global__ void emu_test_iota(float* out, unsigned n) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = (float)i;
}

// Wrong on purpose: only half the threads reach the barrier.
extern "C" __global__ void emu_test_divergent_sync(float* out) {
  if (threadIdx.x < blockDim.x / 2) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

// Wrong on purpose: even and odd threads wait at different barriers.
extern "C" __global__ void emu_test_split_barriers(float* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

// Wrong on purpose: a full-mask shuffle after half the warp has exited.
extern "C" __global__ void emu_test_shuffle_after_exit(float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(FULL_MASK, 1.0f, 1);
}

// The emulator bench: 10 barriers per thread, each separating a shared-memory write and read.
// Two tiles alternate, so a write never races the previous round's reads.
extern "C" __global__ void emu_test_barrier_bench(float* out) {
  __shared__ float tile[2][1024];
  float acc = 0.0f;
  for (int r = 0; r < 10; ++r) {
    tile[r % 2][threadIdx.x] = acc + (float)threadIdx.x;
    __syncthreads();
    acc += tile[r % 2][(threadIdx.x + 1) % blockDim.x];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}
