// Warp collectives: a lane arriving at __shfl*_sync, __ballot_sync, __any_sync, __all_sync,
// __syncwarp (or the tensor-core ops of warp_matrix.cpp) blocks until the last lane its mask names
// arrives; then every lane's result is computed at once from the values all of them brought.
#include "engine.h"

namespace ddpm_emu {
namespace engine {

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::ShflIdx: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::SyncWarp: return "__syncwarp";
    case WarpOp::Mma: return "mma.sync.m16n8k16";
    case WarpOp::Ldmatrix: return "ldmatrix";
  }
  return "?";
}

namespace {

// Value a shuffle reads from lane `src`; all-ones bits (a NaN, or -1) where CUDA leaves the value
// undefined (a source lane that does not exist or is not in the mask), so misuse shows in results.
uint64_t lane_value(Worker& w, unsigned warp, unsigned mask, int src) {
  const uint64_t poison = ~uint64_t(0);
  if (src < 0 || src >= 32 || !(mask >> src & 1u)) return poison;
  unsigned idx = warp * 32 + unsigned(src);
  if (idx >= w.n_threads) return poison;
  return w.fibers[idx].warp_value;
}

void complete_collective(Worker& w, unsigned warp, unsigned mask) {
  Fiber* lanes = &w.fibers[warp * 32];
  unsigned n_lanes = w.warp_threads[warp];
  uint64_t ballot = 0;
  bool all = true;
  for (unsigned l = 0; l < n_lanes; ++l) {
    if (!(mask >> l & 1u)) continue;
    bool p = lanes[l].warp_value != 0;
    ballot |= uint64_t(p) << l;
    all = all && p;
  }
  for (unsigned l = 0; l < n_lanes; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber& f = lanes[l];
    int width = f.warp_width;
    int base = int(l) & ~(width - 1);
    int pos = int(l) & (width - 1);
    uint64_t r = f.warp_value;
    switch (f.warp_op) {
      case WarpOp::ShflIdx: r = lane_value(w, warp, mask, base + (f.warp_arg & (width - 1))); break;
      case WarpOp::ShflUp:
        if (pos >= f.warp_arg) r = lane_value(w, warp, mask, int(l) - f.warp_arg);
        break;
      case WarpOp::ShflDown:
        if (pos + f.warp_arg < width) r = lane_value(w, warp, mask, int(l) + f.warp_arg);
        break;
      case WarpOp::ShflXor: {
        int src = int(l) ^ f.warp_arg;
        if (src < base + width) r = lane_value(w, warp, mask, src);  // later groups read their own
        break;
      }
      case WarpOp::Ballot: r = ballot; break;
      case WarpOp::Any: r = ballot != 0; break;
      case WarpOp::All: r = all; break;
      case WarpOp::SyncWarp: r = 0; break;
      case WarpOp::Mma:
      case WarpOp::Ldmatrix: break;  // complete_matrix_collective
    }
    f.warp_result = r;
    f.state = State::Runnable;
  }
}

}  // namespace

// Registers the running lane at collective `op` (its inputs already in the fiber) and returns when
// the collective is complete: at once if this lane is the last the mask names, else after the
// scheduler resumes it. Lanes that exited, or met at another collective, are errors.
void warp_arrive(Worker& w, Fiber& f, WarpOp op, unsigned mask, const char* file, int line) {
  f.state = State::AtWarp;
  f.warp_op = op;
  f.warp_mask = mask;
  f.warp_file = file;
  f.warp_line = line;
  // Complete when every existing lane named in the mask waits at a collective with this mask.
  Fiber* lanes = &w.fibers[f.warp * 32];
  unsigned n_lanes = w.warp_threads[f.warp];
  bool complete = true;
  for (unsigned l = 0; l < n_lanes && complete; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber& o = lanes[l];
    if (o.state == State::Done)
      fail_running(w, format("%s at %s:%d: mask 0x%08x names lane %u of warp %u, which has exited", op_name(op), file,
                             line, mask, l, f.warp));
    if (o.state != State::AtWarp || o.warp_mask != mask) complete = false;
  }
  if (!complete) return block_running(w);
  for (unsigned l = 0; l < n_lanes; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (lanes[l].warp_op != op)
      fail_running(w, format("lanes of warp %u met at different warp collectives: %s at %s:%d and %s at %s:%d", f.warp,
                             op_name(op), file, line, op_name(lanes[l].warp_op), lanes[l].warp_file,
                             lanes[l].warp_line));
    if (is_matrix_op(op) && lanes[l].warp_arg != f.warp_arg)
      fail_running(w, format("lanes of warp %u met at different forms of %s at %s:%d and %s:%d", f.warp, op_name(op),
                             file, line, lanes[l].warp_file, lanes[l].warp_line));
  }
  if (is_matrix_op(op)) return complete_matrix_collective(w, f.warp);
  complete_collective(w, f.warp, mask);
}

}  // namespace engine

using namespace engine;

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, const char* file, int line) {
  Worker& w = worker();
  Fiber& f = *w.running;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail_running(w, format("%s with width %d (must be a power of two up to 32) at %s:%d", op_name(op), width, file, line));
  if (!(mask >> f.lane & 1u))
    fail_running(w, format("%s called by lane %u whose bit is not in mask 0x%08x at %s:%d", op_name(op), f.lane, mask, file, line));
  f.warp_value = bits;
  f.warp_arg = arg;
  f.warp_width = width;
  warp_arrive(w, f, op, mask, file, line);
  return f.warp_result;
}

}  // namespace ddpm_emu
