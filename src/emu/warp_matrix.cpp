// The tensor-core warp collectives behind kernels/tensor_core.cuh: mma.sync m16n8k16 (bf16 in, f32
// accumulate) and ldmatrix. Like the hardware's `.sync.aligned` forms they need all 32 lanes of a
// full warp at the same instruction; a partial warp, an exited lane or lanes at another
// instruction are errors naming the kernel. The fragment layouts are the PTX ISA's, written out in
// kernels/tensor_core.cuh; the arithmetic is mma_model.cpp's, for the architecture chosen with
// ddpm_emu_set_mma_arch (sm_90, the H200, unless told otherwise).
#include "engine.h"
#include "mma_model.h"

#include <atomic>
#include <cstring>

namespace ddpm_emu {
namespace engine {
namespace {

// Set between launches (tests, the GPU-model check); relaxed atomics keep that race-free.
std::atomic<int> mma_arch{90};

uint16_t half_of(uint32_t reg, unsigned which) { return uint16_t(which ? reg >> 16 : reg & 0xffff); }

// Gathers A [16][16], B [16][8] (bf16 bits) and C [16][8] from the lanes' registers, multiplies,
// and scatters D back in C's layout. Lane l: g = l >> 2, t = l & 3 (layouts in tensor_core.cuh).
void complete_mma(Fiber* lanes) {
  uint16_t a[16 * 16], b[16 * 8];
  float c[16 * 8], d[16 * 8];
  for (unsigned l = 0; l < 32; ++l) {
    const uint32_t* in = lanes[l].matrix_in;
    const unsigned g = l >> 2, t = l & 3;
    for (unsigned i = 0; i < 8; ++i)
      a[(g + 8 * ((i >> 1) & 1)) * 16 + 2 * t + (i & 1) + 8 * (i >> 2)] = half_of(in[i / 2], i & 1);
    for (unsigned i = 0; i < 4; ++i) b[(2 * t + (i & 1) + 8 * (i >> 1)) * 8 + g] = half_of(in[4 + i / 2], i & 1);
    for (unsigned i = 0; i < 4; ++i) std::memcpy(&c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)], &in[6 + i], 4);
  }
  ddpm_mma_m16n8k16_bf16(mma_arch.load(std::memory_order_relaxed), a, b, c, d);
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l >> 2, t = l & 3;
    for (unsigned i = 0; i < 4; ++i) std::memcpy(&lanes[l].matrix_out[i], &d[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)], 4);
  }
}

// The 16-byte row whose address lane `l` gave, checked: inside the block's dynamic shared memory
// (the tensor-core kernels' only shared memory, so the check is exact) and 16-byte aligned.
const uint16_t* ldmatrix_row(Worker& w, Fiber& f) {
  uintptr_t addr;
  std::memcpy(&addr, f.matrix_in, sizeof addr);
  const uintptr_t base = reinterpret_cast<uintptr_t>(w.dynamic_shared.data());
  if (addr % 16 != 0)
    fail_running(w, format("ldmatrix at %s:%d: lane %u's row address %#lx is not 16-byte aligned", short_path(f.warp_file),
                           f.warp_line, f.lane, (unsigned long)addr));
  if (addr < base || addr + 16 > base + w.dynamic_shared.size())
    fail_running(w, format("ldmatrix at %s:%d: lane %u's row address %#lx is not in the block's dynamic shared memory "
                           "(%zu bytes)",
                           short_path(f.warp_file), f.warp_line, f.lane, (unsigned long)addr, w.dynamic_shared.size()));
  return reinterpret_cast<const uint16_t*>(addr);
}

// n 8x8 matrices: lane 8j + r gives row r of matrix j; register j of lane l gets elements
// [l >> 2][2(l & 3)] and [.. + 1] of matrix j, or with trans [2(l & 3)][l >> 2] and [2(l & 3) + 1][l >> 2].
void complete_ldmatrix(Worker& w, Fiber* lanes, unsigned n, bool trans) {
  const uint16_t* rows[32];
  for (unsigned l = 0; l < 8 * n; ++l) rows[l] = ldmatrix_row(w, lanes[l]);
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned r = l >> 2, c = 2 * (l & 3);
    for (unsigned j = 0; j < n; ++j) {
      uint16_t lo, hi;
      if (trans) {
        lo = rows[8 * j + c][r];
        hi = rows[8 * j + c + 1][r];
      } else {
        lo = rows[8 * j + r][c];
        hi = rows[8 * j + r][c + 1];
      }
      lanes[l].matrix_out[j] = uint32_t(lo) | uint32_t(hi) << 16;
    }
  }
}

// Both are `.sync.aligned`: the whole warp, every lane at the same instruction.
void require_full_warp(Worker& w, Fiber& f, WarpOp op, const char* file, int line) {
  if (w.warp_threads[f.warp] != 32)
    fail_running(w, format("%s at %s:%d needs a full warp, but warp %u of this block has %u threads", op_name(op),
                           short_path(file), line, f.warp, w.warp_threads[f.warp]));
}

}  // namespace

void complete_matrix_collective(Worker& w, unsigned warp) {
  Fiber* lanes = &w.fibers[warp * 32];
  if (lanes[0].warp_op == WarpOp::Mma) {
    complete_mma(lanes);
  } else {
    complete_ldmatrix(w, lanes, unsigned(lanes[0].warp_arg) >> 1, lanes[0].warp_arg & 1);
  }
  for (unsigned l = 0; l < 32; ++l) lanes[l].state = State::Runnable;
}

}  // namespace engine

using namespace engine;

void warp_mma_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line) {
  Worker& w = worker();
  Fiber& f = *w.running;
  require_full_warp(w, f, WarpOp::Mma, file, line);
  std::memcpy(f.matrix_in, a, 16);
  std::memcpy(f.matrix_in + 4, b, 8);
  std::memcpy(f.matrix_in + 6, c, 16);
  f.warp_arg = 0;
  warp_arrive(w, f, WarpOp::Mma, 0xffffffffu, file, line);
  std::memcpy(d, f.matrix_out, 16);
}

void warp_ldmatrix(uint32_t* d, int n, bool trans, const void* row, const char* file, int line) {
  Worker& w = worker();
  Fiber& f = *w.running;
  require_full_warp(w, f, WarpOp::Ldmatrix, file, line);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(row);
  std::memcpy(f.matrix_in, &addr, sizeof addr);
  f.warp_arg = n * 2 + (trans ? 1 : 0);
  warp_arrive(w, f, WarpOp::Ldmatrix, 0xffffffffu, file, line);
  std::memcpy(d, f.matrix_out, 4 * size_t(n));
}

}  // namespace ddpm_emu

// The architecture whose mma arithmetic the emulator reproduces: 80 (A100) or 90 (H100/H200).
extern "C" int ddpm_emu_set_mma_arch(int arch) {
  if (arch != 80 && arch != 90) return 1;
  ddpm_emu::engine::mma_arch.store(arch, std::memory_order_relaxed);
  return 0;
}
