// Tensor-core primitives, the one header every tensor-core kernel uses (issue #15): the warp-level
// bf16 mma, ldmatrix and cp.async. On the device each is one PTX instruction (inline asm, sm_80 and
// later). In the emulator each is a call into src/emu: mma and ldmatrix are warp collectives that
// gather the 32 lanes' registers with the PTX ISA's fragment layouts (warp.cpp, layouts below);
// cp.async is a per-thread queue of copies done at wait time (async_copy.cpp).
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; also
// cutlass include/cute/atom/mma_traits_sm80.hpp). Lane l, g = l >> 2, t = l & 3; a .b32 register
// holds two bf16, the lower-indexed element in bits 0..15.
//   A (16x16, row major), a_i for i = 0..7 (register i/2):  row = g + 8 * ((i >> 1) & 1),
//                                                          col = 2t + (i & 1) + 8 * (i >> 2)
//   B (16x8, "col": k by n), b_i for i = 0..3 (register i/2): k = 2t + (i & 1) + 8 * (i >> 1), n = g
//   C, D (16x8, f32), c_i for i = 0..3:                     row = g + 8 * (i >> 1), col = 2t + (i & 1)
// ldmatrix.m8n8.x{1,2,4}[.trans].b16 (PTX ISA "ldmatrix"; cute copy_traits_sm75.hpp): lane l gives
// the shared-memory address of row l & 7 of matrix l >> 3 (16 bytes, 16-byte aligned; x1 reads
// lanes 0-7, x2 lanes 0-15). Register j of lane l receives, of matrix j, the elements
// [l >> 2][2(l & 3)] and [l >> 2][2(l & 3) + 1], or with .trans [2(l & 3)][l >> 2] and
// [2(l & 3) + 1][l >> 2].
#pragma once
#include "common.cuh"

#include <stdint.h>

#if defined(__CUDACC__)

// D = A B + C for one warp: a[4], b[2] bf16 pairs, c[4] and d[4] f32, layouts above.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                               const float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  __trap();
#endif
}

// N (1, 2 or 4) 8x8 b16 matrices from shared memory; `row` is this lane's row address (above).
template <int N, bool Trans>
__device__ __forceinline__ void ldmatrix(uint32_t (&d)[N], const void* row) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (N == 1 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(d[0]) : "r"(addr));
  } else if constexpr (N == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(d[0]) : "r"(addr));
  } else if constexpr (N == 2 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(d[0]), "=r"(d[1]) : "r"(addr));
  } else if constexpr (N == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(d[0]), "=r"(d[1])
                 : "r"(addr));
  } else if constexpr (!Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(addr));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(addr));
  }
#else
  __trap();
#endif
}

// Copies Bytes (4, 8 or 16) from global `src` to shared `dst`, asynchronously: the first
// `src_bytes` are read, the rest of the destination is zero-filled (src_bytes = 0: the convolution's
// padding halo). Complete only after cp_async_commit() and a cp_async_wait<N>() that covers it.
template <int Bytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src, int src_bytes) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  if constexpr (Bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(addr), "l"(src), "n"(Bytes), "r"(src_bytes));
  }
#else
  __trap();
#endif
}

// Closes this thread's group of uncommitted cp.asyncs.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N of this thread's committed groups are pending. Other threads see the data
// only after a __syncthreads that follows their writers' waits.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

#else  // the emulator (src/emu/cuda_host.h declares these)

inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                           const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::ddpm_emu::warp_mma_bf16(d, a, b, c, file, line);
}

template <int N, bool Trans>
inline void ldmatrix(uint32_t (&d)[N], const void* row, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  ::ddpm_emu::warp_ldmatrix(d, N, Trans, row, file, line);
}

template <int Bytes>
inline void cp_async(void* dst, const void* src, int src_bytes, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
  ::ddpm_emu::cp_async(dst, src, Bytes, src_bytes, file, line);
}

inline void cp_async_commit() { ::ddpm_emu::cp_async_commit(); }

template <int N>
inline void cp_async_wait(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::ddpm_emu::cp_async_wait(N, file, line);
}

#endif
