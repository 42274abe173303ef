// cp.async self-tests (tests/cp_async.rs): a correct multi-stage pipeline, and kernels that are
// wrong on purpose (marked) so the emulator must show the bug: reads before the wait see NaN, a
// cross-warp read without a barrier sees NaN with the fibers reversed, pending copies at exit and
// bad addresses are errors. The marker comments (BAD_...) let the tests find the line numbers.
#include "../tensor_core.cuh"

namespace {

constexpr int kStages = 3;
constexpr int kTile = 256;  // floats per stage: 64 threads x 16 bytes

// Stage s of tile `tile`: thread t copies floats 4t..4t+3, the part past n zero-filled.
__device__ __forceinline__ void load_tile(float* smem, const float* in, unsigned n, unsigned tile) {
  const unsigned t = threadIdx.x;
  const unsigned idx = tile * kTile + 4 * t;
  const int avail = idx >= n ? 0 : (n - idx >= 4 ? 16 : int(n - idx) * 4);
  // src-size 0 reads nothing: point at the buffer's start, as a convolution's halo does.
  const float* src = avail > 0 ? in + idx : in;
  cp_async<16>(smem + (tile % kStages) * kTile + 4 * t, src, avail);
}

}  // namespace

// out[tile * 256 + m] = in'[tile * 256 + 255 - m], in' = in zero-padded to `tiles` tiles: each
// thread reads the other warp's part of a stage. 64 threads, 3 * 256 floats of dynamic shared
// memory. bug 0: correct; 1: waits for one group too few (reads a stage still in flight); 2: no
// __syncthreads after the wait (reads the other warp's part before that warp waited).
extern "C" __global__ void __launch_bounds__(64)
    cpa_test_pipeline(const float* __restrict__ in, float* __restrict__ out, unsigned n, unsigned tiles, int bug) {
  DYNAMIC_SHARED(float, smem);
  for (unsigned s = 0; s < kStages - 1; ++s) {
    if (s < tiles) load_tile(smem, in, n, s);
    cp_async_commit();
  }
  for (unsigned tile = 0; tile < tiles; ++tile) {
    if (bug == 1) {
      cp_async_wait<kStages - 1>();  // BAD_WAIT_N
    } else {
      cp_async_wait<kStages - 2>();
    }
    if (bug != 2) __syncthreads();
    const float* stage = smem + (tile % kStages) * kTile;
    for (unsigned k = 0; k < 4; ++k) {
      const unsigned m = 4 * threadIdx.x + k;
      out[tile * kTile + m] = stage[kTile - 1 - m];
    }
    // Refills the stage read in the previous iteration: every thread passed this iteration's
    // __syncthreads after reading it.
    if (tile + kStages - 1 < tiles) load_tile(smem, in, n, tile + kStages - 1);
    cp_async_commit();
  }
  cp_async_wait<0>();
}

__device__ __forceinline__ void copy4(float* o, const float* s) {
  for (int k = 0; k < 4; ++k) o[k] = s[k];
}

// What a thread reads around its waits (32 threads, 384 floats of dynamic shared memory, `in` 384
// floats, `out` 24 per thread): 0 NaN before any wait, 4 data after wait<1>, 8 NaN (the newest
// group), 12 data after wait<0>, 16 NaN (an uncommitted copy: wait_group leaves it), 20 data after
// its commit and wait<0>.
extern "C" __global__ void cpa_test_read_before_wait(const float* __restrict__ in, float* __restrict__ out) {
  DYNAMIC_SHARED(float, smem);
  const unsigned t = threadIdx.x;
  float* o = out + 24 * t;
  float *a = smem + 4 * t, *b = smem + 128 + 4 * t, *c = smem + 256 + 4 * t;
  cp_async<16>(a, in + 4 * t, 16);
  cp_async_commit();
  cp_async<16>(b, in + 128 + 4 * t, 16);
  cp_async_commit();
  copy4(o, a);  // BAD_READ_BEFORE_WAIT
  cp_async_wait<1>();
  copy4(o + 4, a);
  copy4(o + 8, b);
  cp_async<16>(c, in + 256 + 4 * t, 16);
  cp_async_wait<0>();
  copy4(o + 12, b);
  copy4(o + 16, c);
  cp_async_commit();
  cp_async_wait<0>();
  copy4(o + 20, c);
}

// Warp 0 copies in[0..32) to shared memory and waits; warp 1 writes it reversed to out[0..32).
// sync 0 (wrong on purpose): no __syncthreads between warp 0's wait and warp 1's read, which is
// right only when warp 0 happens to run first. 64 threads, 128 bytes of dynamic shared memory.
extern "C" __global__ void cpa_test_cross_warp(const float* __restrict__ in, float* __restrict__ out, int sync) {
  DYNAMIC_SHARED(float, smem);
  const unsigned lane = threadIdx.x % 32;
  if (threadIdx.x < 32) {
    cp_async<4>(smem + lane, in + lane, 4);
    cp_async_commit();
    cp_async_wait<0>();
  }
  if (sync) __syncthreads();
  if (threadIdx.x >= 32) out[lane] = smem[31 - lane];
}

// Wrong on purpose: exits with a copy never waited for (commit 1: committed; 0: not even that).
extern "C" __global__ void cpa_test_pending_at_exit(const float* __restrict__ in, int commit) {
  DYNAMIC_SHARED(float, smem);
  cp_async<16>(smem + 4 * threadIdx.x, in + 4 * threadIdx.x, 16);  // BAD_PENDING
  if (commit) cp_async_commit();
}

// Wrong on purpose, one bad address per `which` (dynamic shared memory: 64 bytes or more; `in` a
// buffer of in_len floats, in_len odd and over 8; `out` any live buffer).
extern "C" __global__ void cpa_test_bad_address(const float* __restrict__ in, float* __restrict__ out, unsigned in_len,
                                                int which) {
  DYNAMIC_SHARED(float, smem);
  __shared__ __align__(16) float static_tile[4];
  alignas(16) float local[4] = {0.f, 0.f, 0.f, 0.f};
  switch (which) {
    case 0: cp_async<16>(smem + 1, in, 16); break;              // BAD_DST_ALIGN
    case 1: cp_async<16>(smem, in + 1, 16); break;              // BAD_SRC_ALIGN
    case 2: cp_async<16>(out, in, 16); break;                   // BAD_DST_GLOBAL
    case 3: cp_async<16>(static_tile, in, 16); break;           // BAD_DST_STATIC
    case 4: cp_async<16>(smem, smem + 4, 16); break;            // BAD_SRC_SHARED
    case 5: cp_async<4>(smem, in + in_len, 4); break;           // BAD_SRC_PAST_END
    case 6: cp_async<16>(smem, local, 16); break;               // BAD_SRC_LOCAL
    case 7: cp_async<8>(smem, in + in_len - 1, 8); break;       // BAD_SRC_STRADDLE
    default: break;
  }
  cp_async_commit();
  cp_async_wait<0>();
  out[0] = static_tile[0] + local[0] + smem[0];
}
