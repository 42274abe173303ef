// Tensor-core self-tests (kernels/tensor_core.cuh): tests/tensor_core.rs runs them on the emulator
// and tests/gpu.rs on a GPU, against the same expectations (the PTX ISA's fragment layouts and the
// mma arithmetic model). Kernels marked "wrong on purpose" must be refused by the emulator.
#include "../tensor_core.cuh"

// Element (row, col) of a row-major bf16 matrix with `cols` columns, as raw bits.
__device__ __forceinline__ uint32_t pair(const unsigned short* m, unsigned cols, unsigned r0, unsigned c0,
                                         unsigned r1, unsigned c1) {
  return uint32_t(m[r0 * cols + c0]) | uint32_t(m[r1 * cols + c1]) << 16;
}

// D = A B + C for `tiles` independent tiles, one warp each: A [tiles][16][16], B [tiles][16][8]
// (bf16 bits, row major), C and D [tiles][16][8] f32. The fragments are gathered from global memory
// with the layout formulas (no ldmatrix), so this tests the mma alone.
extern "C" __global__ void emu_test_mma_tiles(const unsigned short* A, const unsigned short* B, const float* C,
                                              float* D, unsigned tiles) {
  const unsigned tile = (blockIdx.x * blockDim.x + threadIdx.x) / 32, l = threadIdx.x % 32;
  if (tile >= tiles) return;  // whole warps leave together
  const unsigned g = l >> 2, t = l & 3;
  const unsigned short* a = A + tile * 256;
  const unsigned short* b = B + tile * 128;
  uint32_t ar[4], br[2];
  float cr[4], dr[4];
  for (unsigned j = 0; j < 4; ++j) {  // a_{2j}, a_{2j+1}: row g + 8((j) & 1), cols 2t + 8(j >> 1) + {0, 1}
    const unsigned row = g + 8 * (j & 1), col = 2 * t + 8 * (j >> 1);
    ar[j] = pair(a, 16, row, col, row, col + 1);
  }
  for (unsigned j = 0; j < 2; ++j) br[j] = pair(b, 8, 2 * t + 8 * j, g, 2 * t + 8 * j + 1, g);
  for (unsigned i = 0; i < 4; ++i) cr[i] = C[tile * 128 + (g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
  mma_bf16_16816(dr, ar, br, cr);
  for (unsigned i = 0; i < 4; ++i) D[tile * 128 + (g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = dr[i];
}

// Four 8x8 bf16 matrices M [4][8][8] copied to shared memory with a 24-element row stride (rows
// 16-byte aligned, not contiguous); every lane then runs ldmatrix `mode` (0-2: x1, x2, x4; 3-5 the
// same with .trans) and writes its registers to out[lane][4] (unused registers stay as given).
extern "C" __global__ void emu_test_ldmatrix(const unsigned short* M, unsigned* out, unsigned mode) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned l = threadIdx.x;
  for (unsigned i = l; i < 256; i += 32) smem[(i / 8) * 24 + i % 8] = M[i];
  __syncwarp();
  const unsigned short* row = smem + ((l >> 3) * 8 + (l & 7)) * 24;
  uint32_t d[4] = {out[l * 4], out[l * 4 + 1], out[l * 4 + 2], out[l * 4 + 3]};
  uint32_t(&d1)[1] = *reinterpret_cast<uint32_t(*)[1]>(d);
  uint32_t(&d2)[2] = *reinterpret_cast<uint32_t(*)[2]>(d);
  switch (mode) {
    case 0: ldmatrix<1, false>(d1, row); break;
    case 1: ldmatrix<2, false>(d2, row); break;
    case 2: ldmatrix<4, false>(d, row); break;
    case 3: ldmatrix<1, true>(d1, row); break;
    case 4: ldmatrix<2, true>(d2, row); break;
    default: ldmatrix<4, true>(d, row); break;
  }
  for (unsigned j = 0; j < 4; ++j) out[l * 4 + j] = d[j];
}

// One tile D = A B + C the way a GEMM kernel feeds it: A [16][16] (row major) by ldmatrix.x4; B
// either as Bt [8 n][16 k] (as conv weights are stored: plain ldmatrix.x2) or as [16 k][8 n]
// (ldmatrix.x2.trans), chosen by `b_is_k_by_n`.
extern "C" __global__ void emu_test_ldmatrix_mma(const unsigned short* A, const unsigned short* B, const float* C,
                                                 float* D, unsigned b_is_k_by_n) {
  DYNAMIC_SHARED(unsigned short, smem);  // A at stride 24, then B at stride 24
  const unsigned l = threadIdx.x, g = l >> 2, t = l & 3;
  unsigned short* sa = smem;
  unsigned short* sb = smem + 16 * 24;
  for (unsigned i = l; i < 256; i += 32) sa[(i / 16) * 24 + i % 16] = A[i];
  const unsigned b_cols = b_is_k_by_n ? 8 : 16;
  for (unsigned i = l; i < 128; i += 32) sb[(i / b_cols) * 24 + i % b_cols] = B[i];
  __syncwarp();
  uint32_t ar[4], br[2];
  float cr[4], dr[4];
  ldmatrix<4, false>(ar, sa + ((l & 7) + 8 * ((l >> 3) & 1)) * 24 + 8 * (l >> 4));
  if (b_is_k_by_n) {
    ldmatrix<2, true>(br, sb + ((l & 7) + 8 * ((l >> 3) & 1)) * 24);
  } else {
    ldmatrix<2, false>(br, sb + (l & 7) * 24 + 8 * ((l >> 3) & 1));
  }
  for (unsigned i = 0; i < 4; ++i) cr[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
  mma_bf16_16816(dr, ar, br, cr);
  for (unsigned i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = dr[i];
}

// Wrong on purpose: lane 0 leaves before the mma the others wait at (launch one warp), or the
// launch has a partial warp (48 threads), depending on how it is launched.
extern "C" __global__ void emu_test_mma_misuse(float* out, unsigned lane0_leaves) {
  if (lane0_leaves && threadIdx.x == 0) return;
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  const float c[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  float d[4];
  mma_bf16_16816(d, a, b, c);
  out[threadIdx.x] = d[0];
}

// Wrong on purpose: ldmatrix rows that are misaligned (mode 0), or in global memory (mode 1).
extern "C" __global__ void emu_test_ldmatrix_misuse(const unsigned short* M, unsigned* out, unsigned mode) {
  DYNAMIC_SHARED(unsigned short, smem);
  const unsigned l = threadIdx.x;
  const unsigned short* row = mode == 0 ? smem + (l & 7) * 8 + 1 : M + (l & 7) * 8;
  uint32_t d[1];
  ldmatrix<1, false>(d, row);
  out[l] = d[0];
}
