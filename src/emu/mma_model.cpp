// The tensor cores' arithmetic for mma.sync m16n8k16 with bf16 operands and f32 accumulators, as
// the emulator executes it (issue #15). PTX leaves the internal order and rounding of mma
// unspecified; this is the model of microsoft/MMA-Sim (arXiv 2511.10909, mmasim/simulator/nv.py and
// functions.py: `nv_fused_dot_add`), which its authors checked bit for bit against the hardware:
//
// 1. The terms are C and the 16 (sm_90) or 8 (sm_80, see 5) products a_k * b_k. Products are
//    exact and keep their unnormalised significand sig_a * sig_b in [1, 4) (bf16 subnormals kept:
//    exponent -126, significand below 1), exponent e_a + e_b.
// 2. E = the largest exponent among the non-zero terms.
// 3. Each term is cut toward zero to F fraction bits at scale 2^E: t_k = trunc(sig_k 2^(F + e_k - E)).
// 4. The exact integer sum of the t_k, times 2^(E - F), is rounded toward zero to f32 (subnormal
//    results kept). A NaN result is 0x7FFFFFFF; infinities are resolved through an f64 sum.
// 5. sm_80 (Ampere): F = 24, and k16 runs as two k8 steps, the first one's result (rounded as in
//    4) being the second one's C. sm_90 (Hopper: the H200): F = 25, one step over all 16 products.
//
// The first GPU run checks this model against the device (tests/gpu.rs, mma model check); until
// then it is the published model, not a measured fact about our GPU.
#include "mma_model.h"

#include <cmath>
#include <cstring>

namespace {

// A term sig * 2^e with sig = mag * 2^-frac_bits (mag an integer, sign separate).
struct Term {
  bool negative;
  uint64_t mag;
  int e;
  int frac_bits;
};

// bf16 bits -> (sign, integer significand with 7 fraction bits, exponent); subnormals keep
// exponent -126 and a significand below 1.
Term bf16_term(uint16_t bits) {
  const unsigned exp_field = (bits >> 7) & 0xff, frac = bits & 0x7f;
  const bool subnormal = exp_field == 0;
  return Term{(bits & 0x8000) != 0, subnormal ? frac : (frac | 0x80u), subnormal ? -126 : int(exp_field) - 127, 7};
}

// f32 -> (sign, integer significand with 23 fraction bits, exponent), subnormals as above.
Term f32_term(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const unsigned exp_field = (bits >> 23) & 0xff, frac = bits & 0x7fffff;
  const bool subnormal = exp_field == 0;
  return Term{(bits >> 31) != 0, subnormal ? frac : (frac | 0x800000u), subnormal ? -126 : int(exp_field) - 127, 23};
}

float bf16_value(uint16_t bits) {
  const uint32_t wide = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

// trunc(mag * 2^shift) for a non-negative integer mag: a shift left is exact here (the shifted
// magnitudes stay below 2^40), a shift right truncates, a shift of 64 or more right is 0.
uint64_t shift_trunc(uint64_t mag, int shift) {
  if (shift >= 0) return mag << shift;
  return -shift >= 64 ? 0 : mag >> -shift;
}

// sum * 2^scale rounded toward zero to f32 (subnormals kept, overflow to infinity).
float round_toward_zero(int64_t sum, int scale) {
  if (sum == 0) return 0.0f;
  const bool negative = sum < 0;
  const uint64_t mag = negative ? uint64_t(0) - uint64_t(sum) : uint64_t(sum);
  const int msb = 63 - __builtin_clzll(mag);
  const int exponent = msb + scale;  // of the leading bit
  if (exponent > 127) return negative ? -INFINITY : INFINITY;
  // The unit of the last kept bit: 24 significant bits, or 2^-149 below the normal range.
  const int quantum = exponent - 23 > -149 ? exponent - 23 : -149;
  const uint64_t kept = shift_trunc(mag, scale - quantum);
  const float r = std::ldexp(float(kept), quantum);  // kept < 2^24: exact
  return negative ? -r : r;
}

// One fused step: c + sum of a[k] * b[k] over k < n, after the model (steps 1-4).
float fused_dot_add(const uint16_t* a, const uint16_t* b, int n, float c, int frac_bits) {
  bool finite = std::isfinite(c);
  for (int k = 0; k < n; ++k) finite = finite && std::isfinite(bf16_value(a[k])) && std::isfinite(bf16_value(b[k]));
  if (!finite) {
    double s = c;
    for (int k = 0; k < n; ++k) s += double(bf16_value(a[k])) * double(bf16_value(b[k]));
    if (std::isnan(s)) {
      const uint32_t nan_bits = 0x7fffffffu;
      float r;
      std::memcpy(&r, &nan_bits, 4);
      return r;
    }
    return float(s);  // an infinity
  }
  Term terms[17];
  int count = 0;
  const Term tc = f32_term(c);
  if (tc.mag != 0) terms[count++] = tc;
  for (int k = 0; k < n; ++k) {
    const Term ta = bf16_term(a[k]), tb = bf16_term(b[k]);
    if (ta.mag == 0 || tb.mag == 0) continue;
    terms[count++] = Term{ta.negative != tb.negative, ta.mag * tb.mag, ta.e + tb.e, 14};
  }
  if (count == 0) return 0.0f;
  int max_e = terms[0].e;
  for (int i = 1; i < count; ++i) max_e = terms[i].e > max_e ? terms[i].e : max_e;
  int64_t sum = 0;
  for (int i = 0; i < count; ++i) {
    const int64_t t = int64_t(shift_trunc(terms[i].mag, frac_bits + terms[i].e - max_e - terms[i].frac_bits));
    sum += terms[i].negative ? -t : t;
  }
  return round_toward_zero(sum, max_e - frac_bits);
}

}  // namespace

extern "C" float ddpm_mma_dot_bf16(int arch, const uint16_t* a, const uint16_t* b, float c) {
  if (arch == 80) return fused_dot_add(a + 8, b + 8, 8, fused_dot_add(a, b, 8, c, 24), 24);
  return fused_dot_add(a, b, 16, c, 25);
}

extern "C" void ddpm_mma_m16n8k16_bf16(int arch, const uint16_t* a, const uint16_t* b, const float* c, float* d) {
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      uint16_t column[16];
      for (int k = 0; k < 16; ++k) column[k] = b[k * 8 + j];
      d[i * 8 + j] = ddpm_mma_dot_bf16(arch, a + i * 16, column, c[i * 8 + j]);
    }
  }
}
