// Philox4x32-10 on the device: the same arithmetic as src/math/philox.rs, so (seed, offset,
// element index) gives the same bits on the CPU, the emulator and a GPU. See that file for the
// stream layout (element i reads block i / 4).
#pragma once
#include "common.cuh"

struct Philox4 {
  unsigned w[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(unsigned c0, unsigned c1, unsigned c2, unsigned c3, unsigned k0,
                                                  unsigned k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    unsigned hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    unsigned hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    unsigned n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

__device__ __forceinline__ Philox4 philox_block(unsigned long long seed, unsigned long long offset,
                                                unsigned long long index) {
  unsigned long long b = index / 4;
  return philox4x32_10((unsigned)b, (unsigned)(b >> 32), (unsigned)offset, (unsigned)(offset >> 32), (unsigned)seed,
                       (unsigned)(seed >> 32));
}

__device__ __forceinline__ float philox_unit(unsigned w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

// Box-Muller in double with the accurate log/sin/cos (never the fast intrinsics), rounded once to
// float: matches the CPU reference to the bit except within a few double ulps of a float
// rounding boundary. CUDA_PI_D spelled out so the host build needs no CUDA math constants.
__device__ __forceinline__ float philox_box_muller(unsigned w1, unsigned w2, bool sine) {
  double u1 = ((double)(w1 >> 8) + 1.0) * (1.0 / 16777216.0);
  double u2 = (double)(w2 >> 8) * (1.0 / 16777216.0);
  double r = sqrt(-2.0 * log(u1));
  double theta = 2.0 * 3.141592653589793 * u2;
  return (float)(sine ? r * sin(theta) : r * cos(theta));
}

__device__ __forceinline__ float philox_normal(unsigned long long seed, unsigned long long offset,
                                               unsigned long long index) {
  Philox4 b = philox_block(seed, offset, index);
  unsigned pair = (unsigned)(index % 4) / 2;
  return philox_box_muller(b.w[2 * pair], b.w[2 * pair + 1], index % 2 == 1);
}

__device__ __forceinline__ unsigned philox_word(unsigned long long seed, unsigned long long offset,
                                                unsigned long long index) {
  return philox_block(seed, offset, index).w[index % 4];
}
