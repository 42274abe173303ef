// Host-side spellings of CUDA C++ for the emulator: the kernel sources in kernels/ are compiled by
// the host C++ compiler with this header force-included, and run as fibers (one per CUDA thread)
// by src/emu/runtime.cpp. Only what kernels use is here; a missing builtin is a compile error,
// never a silent difference. nvcc never sees this file.
#pragma once
#if defined(__CUDACC__)
#error "cuda_host.h is for the host (emulator) build only"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

// Execution-space qualifiers mean nothing on the host. __shared__ is per block: all fibers of a
// block run on one worker thread and blocks on one worker run one after another, so a
// thread-local static is exactly "one copy per resident block".
#define __global__
#define __device__
#define __host__
#define __shared__ static thread_local
#define __constant__ static
#define __grid_constant__
#define __launch_bounds__(...)
#define __noinline__ __attribute__((noinline))

#include <vector_types.h>
#include <vector_functions.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace ddpm_emu {

// What a running fiber exposes to kernel code; the rest of its state is private to runtime.cpp.
struct ThreadState {
  uint3 thread_idx;
};
struct BlockState {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  char* dynamic_shared;
};
extern __thread ThreadState* current_thread;
extern __thread BlockState* current_block;

enum class WarpOp : int { ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp, Mma, Ldmatrix };
enum class BarrierOp : int { Plain, Count, And, Or };

// Block barrier; `site` identifies the __syncthreads call so divergent barriers are reported.
int sync_block(BarrierOp op, int predicate, const char* file, int line);
// Warp collective: every lane named in `mask` must arrive before any proceeds.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, const char* file, int line);
// Stops the whole launch with an error naming the kernel (used for __trap and misuse).
[[noreturn]] void kernel_fail(const char* what, const char* file, int line);

// Tensor-core primitives behind kernels/tensor_core.cuh. The warp-level ones (warp.cpp) are
// collectives of all 32 lanes of a warp; cp.async (async_copy.cpp) is per thread.
void warp_mma_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line);
void warp_ldmatrix(uint32_t* d, int n, bool trans, const void* row, const char* file, int line);
void cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int n, const char* file, int line);

template <class T>
inline T from_bits(uint64_t bits) {
  static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
}  // namespace ddpm_emu

#define threadIdx (::ddpm_emu::current_thread->thread_idx)
#define blockIdx (::ddpm_emu::current_block->block_idx)
#define blockDim (::ddpm_emu::current_block->block_dim)
#define gridDim (::ddpm_emu::current_block->grid_dim)
#define warpSize 32

#define __syncthreads() ((void)::ddpm_emu::sync_block(::ddpm_emu::BarrierOp::Plain, 1, __FILE__, __LINE__))
#define __syncthreads_count(p) ::ddpm_emu::sync_block(::ddpm_emu::BarrierOp::Count, (p), __FILE__, __LINE__)
#define __syncthreads_and(p) ::ddpm_emu::sync_block(::ddpm_emu::BarrierOp::And, (p), __FILE__, __LINE__)
#define __syncthreads_or(p) ::ddpm_emu::sync_block(::ddpm_emu::BarrierOp::Or, (p), __FILE__, __LINE__)
#define __trap() ::ddpm_emu::kernel_fail("__trap() called", __FILE__, __LINE__)

// Warp collectives are functions, not macros, so the optional width defaults as in CUDA;
// __builtin_FILE/LINE record the caller's location for error messages.
#define DDPM_EMU_SITE const char* file = __builtin_FILE(), int line = __builtin_LINE()
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, DDPM_EMU_SITE) {
  using namespace ddpm_emu;
  return from_bits<T>(warp_collective(WarpOp::ShflIdx, mask, to_bits(v), src, width, file, line));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, DDPM_EMU_SITE) {
  using namespace ddpm_emu;
  return from_bits<T>(warp_collective(WarpOp::ShflUp, mask, to_bits(v), (int)delta, width, file, line));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, DDPM_EMU_SITE) {
  using namespace ddpm_emu;
  return from_bits<T>(warp_collective(WarpOp::ShflDown, mask, to_bits(v), (int)delta, width, file, line));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, DDPM_EMU_SITE) {
  using namespace ddpm_emu;
  return from_bits<T>(warp_collective(WarpOp::ShflXor, mask, to_bits(v), lane_mask, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int p, DDPM_EMU_SITE) {
  return (unsigned)ddpm_emu::warp_collective(ddpm_emu::WarpOp::Ballot, mask, p != 0, 0, 32, file, line);
}
inline int __any_sync(unsigned mask, int p, DDPM_EMU_SITE) {
  return (int)ddpm_emu::warp_collective(ddpm_emu::WarpOp::Any, mask, p != 0, 0, 32, file, line);
}
inline int __all_sync(unsigned mask, int p, DDPM_EMU_SITE) {
  return (int)ddpm_emu::warp_collective(ddpm_emu::WarpOp::All, mask, p != 0, 0, 32, file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, DDPM_EMU_SITE) {
  ddpm_emu::warp_collective(ddpm_emu::WarpOp::SyncWarp, mask, 0, 0, 32, file, line);
}
#undef DDPM_EMU_SITE

// ---- atomics: blocks run on several worker threads, so global-memory atomics must be real ----
namespace ddpm_emu {
template <class T, class F>
inline T atomic_update(T* address, F f) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics are 32 or 64 bit");
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U* raw = reinterpret_cast<U*>(address);
  U expected = __atomic_load_n(raw, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &expected, sizeof(T));
    T next = f(old);
    U desired;
    std::memcpy(&desired, &next, sizeof(T));
    if (__atomic_compare_exchange_n(raw, &expected, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return old;
  }
}
}  // namespace ddpm_emu

#define DDPM_EMU_ATOMIC_INT(T) \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); } \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); } \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); } \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); } \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); } \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); } \
  inline T atomicMax(T* a, T v) { return ::ddpm_emu::atomic_update(a, [v](T o) { return o > v ? o : v; }); } \
  inline T atomicMin(T* a, T v) { return ::ddpm_emu::atomic_update(a, [v](T o) { return o < v ? o : v; }); } \
  inline T atomicCAS(T* a, T cmp, T v) { \
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return cmp; \
  }
DDPM_EMU_ATOMIC_INT(int)
DDPM_EMU_ATOMIC_INT(unsigned int)
DDPM_EMU_ATOMIC_INT(unsigned long long)
#undef DDPM_EMU_ATOMIC_INT
inline float atomicAdd(float* a, float v) { return ::ddpm_emu::atomic_update(a, [v](float o) { return o + v; }); }
inline double atomicAdd(double* a, double v) { return ::ddpm_emu::atomic_update(a, [v](double o) { return o + v; }); }
inline float atomicExch(float* a, float v) { return ::ddpm_emu::atomic_update(a, [v](float) { return v; }); }
inline unsigned atomicInc(unsigned* a, unsigned limit) {
  return ::ddpm_emu::atomic_update(a, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ---- math intrinsics: the fast-math spellings map to the accurate host functions ----
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
// nvcc never merges __fadd_rn, __fsub_rn or __fmul_rn into a multiply-add, while it may contract
// a plain a * b + c (its default --fmad=true). The host compiler must keep that distinction when
// it contracts (the DDPM_EMU_CONTRACT=1 build, -ffp-contract=fast): the operands and the result
// pass through an empty asm, which materialises each as a rounded float it cannot see through.
inline float ddpm_emu_opaque(float x) {
#if defined(__x86_64__)
  __asm__("" : "+x"(x));
#elif defined(__aarch64__)
  __asm__("" : "+w"(x));
#else
  volatile float v = x;
  x = v;
#endif
  return x;
}
inline float __fadd_rn(float a, float b) { return ddpm_emu_opaque(ddpm_emu_opaque(a) + ddpm_emu_opaque(b)); }
inline float __fsub_rn(float a, float b) { return ddpm_emu_opaque(ddpm_emu_opaque(a) - ddpm_emu_opaque(b)); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return ddpm_emu_opaque(ddpm_emu_opaque(a) * ddpm_emu_opaque(b)); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int x) { return ::ddpm_emu::from_bits<float>((uint32_t)x); }
inline int __float_as_int(float x) { return (int)(uint32_t)::ddpm_emu::to_bits(x); }
inline float __uint_as_float(unsigned x) { return ::ddpm_emu::from_bits<float>(x); }
inline unsigned __float_as_uint(float x) { return (uint32_t)::ddpm_emu::to_bits(x); }
// CUDA's isfinite is a global device function; the host's lives in std.
using std::isfinite;
inline long long __double_as_longlong(double x) { return (long long)::ddpm_emu::to_bits(x); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---- cache-hinted loads and stores: plain memory accesses on the host ----
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }
