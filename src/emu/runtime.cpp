// The emulator's execution engine: runs one CUDA block on the calling worker thread, each CUDA
// thread as a fiber (a user-space stack plus a hand-written context switch: an OS thread per CUDA
// thread, or ucontext's syscall per switch, would be far too slow). The Rust side
// (src/gpu/emu.rs) spreads a grid's blocks over worker threads and calls ddpm_emu_run_block.
//
// Scheduling: fibers run in order until each blocks (at __syncthreads or a warp collective) or
// exits. A warp collective completes when the last lane named in its mask arrives; a block
// barrier completes when every thread waits at the same __syncthreads. Anything else (threads at
// different barriers, exited threads missing from a barrier, a collective that can never
// complete) is reported as an error naming the kernel, never a hang.
//
// The engine's parts: fiber.cpp (stacks and context switch), warp.cpp (warp collectives) and this
// file (block barriers, the scheduler loop, ddpm_emu_run_block); engine.h holds what they share.
#include "engine.h"

#include <cstring>

namespace ddpm_emu {

__thread ThreadState* current_thread;
__thread BlockState* current_block;

namespace engine {

__thread Worker* tls_worker;

std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

const char* short_path(const char* file) {
  const char* k = strstr(file, "kernels/");
  return k ? k : file;
}

namespace {

// Called when no fiber can run: either every live thread waits at one barrier (release it) or the
// block is stuck (report why). Returns false with w.error set when stuck.
bool resolve_block_wait(Worker& w) {
  unsigned done = 0, at_bar = 0, at_warp = 0;
  const Fiber* first_bar = nullptr;
  const Fiber* other_bar = nullptr;
  const Fiber* first_warp = nullptr;
  for (unsigned i = 0; i < w.n_threads; ++i) {
    const Fiber& f = w.fibers[i];
    if (f.state == State::Done) ++done;
    if (f.state == State::AtWarp && !first_warp) first_warp = &f;
    if (f.state == State::AtWarp) ++at_warp;
    if (f.state != State::AtBarrier) continue;
    ++at_bar;
    if (!first_bar) first_bar = &f;
    else if (!other_bar && (f.bar_line != first_bar->bar_line || strcmp(f.bar_file, first_bar->bar_file) != 0))
      other_bar = &f;
  }
  if (at_warp) {
    const Fiber& f = *first_warp;
    w.error = format("%s at %s:%d can never complete: lane %u of warp %u waits with mask 0x%08x, but some lanes of "
                     "that mask are at a __syncthreads, another collective or have exited (%u threads waiting at "
                     "__syncthreads, %u exited)",
                     op_name(f.warp_op), short_path(f.warp_file), f.warp_line, f.lane, f.warp, f.warp_mask, at_bar, done);
    return false;
  }
  if (done) {
    w.error = format("divergent __syncthreads: %u of %u threads wait at %s:%d while %u threads have already exited",
                     at_bar, w.n_threads, short_path(first_bar->bar_file), first_bar->bar_line, done);
    return false;
  }
  if (other_bar) {
    w.error = format("divergent __syncthreads: threads wait at different barriers, %s:%d (thread %u) and %s:%d (thread %u)",
                     short_path(first_bar->bar_file), first_bar->bar_line, first_bar->linear,
                     short_path(other_bar->bar_file), other_bar->bar_line, other_bar->linear);
    return false;
  }
  int count = 0, all = 1, any = 0;
  for (unsigned i = 0; i < w.n_threads; ++i) {
    count += w.fibers[i].bar_pred;
    all &= w.fibers[i].bar_pred;
    any |= w.fibers[i].bar_pred;
  }
  for (unsigned i = 0; i < w.n_threads; ++i) {
    Fiber& f = w.fibers[i];
    switch (f.bar_op) {
      case BarrierOp::Plain: f.bar_result = 0; break;
      case BarrierOp::Count: f.bar_result = count; break;
      case BarrierOp::And: f.bar_result = all; break;
      case BarrierOp::Or: f.bar_result = any; break;
    }
    f.state = State::Runnable;
  }
  return true;
}

}  // namespace
}  // namespace engine

using namespace engine;

int sync_block(BarrierOp op, int predicate, const char* file, int line) {
  Worker& w = worker();
  Fiber& f = *w.running;
  f.state = State::AtBarrier;
  f.bar_op = op;
  f.bar_pred = predicate != 0;
  f.bar_file = file;
  f.bar_line = line;
  block_running(w);
  return f.bar_result;
}

void kernel_fail(const char* what, const char* file, int line) {
  Worker& w = worker();
  fail_running(w, format("%s at %s:%d (thread %u,%u,%u)", what, file, line, w.running->pub.thread_idx.x,
                         w.running->pub.thread_idx.y, w.running->pub.thread_idx.z));
}

}  // namespace ddpm_emu

extern "C" {

struct ddpm_emu_launch {
  const ddpm_emu_kernel* kernel;
  void** args;
  uint32_t grid[3];
  uint32_t block[3];
  uint64_t dynamic_shared_bytes;
  // Finds the live device buffer holding an address (cp.async's source check); ctx is its first
  // argument. Null: no cp.async source is accepted.
  ddpm_emu::engine::FindLiveFn find_live;
  const void* find_live_ctx;
  // Nonzero: the scheduler runs the block's fibers in reverse order (see ddpm_emu_run_block).
  uint32_t reverse_fibers;
};

// Runs block (bx, by, bz) of a launch to completion on the calling thread. Returns 0, or 1 with a
// NUL-terminated message in `err` (the caller adds the kernel name and block index).
int ddpm_emu_run_block(const ddpm_emu_launch* l, uint32_t bx, uint32_t by, uint32_t bz, char* err, size_t err_len) {
  using namespace ddpm_emu;
  using namespace ddpm_emu::engine;
  Worker& w = worker();
  unsigned n = l->block[0] * l->block[1] * l->block[2];
  auto fail = [&](const std::string& msg) {
    snprintf(err, err_len, "%s", msg.c_str());
    return 1;
  };
  if (n == 0 || n > kMaxThreads) return fail(format("%u threads per block (limit %u)", n, kMaxThreads));
  if (!ensure_stacks(w, n)) return fail("cannot map fiber stacks");
  w.kernel = l->kernel;
  w.args = l->args;
  w.error.clear();
  w.n_threads = n;
  w.block.block_idx = uint3{bx, by, bz};
  w.block.block_dim = dim3(l->block[0], l->block[1], l->block[2]);
  w.block.grid_dim = dim3(l->grid[0], l->grid[1], l->grid[2]);
  // Shared memory is uninitialised on a GPU: fill it with NaN bytes so reads before writes show.
  w.dynamic_shared.assign(l->dynamic_shared_bytes ? l->dynamic_shared_bytes : 16, char(0xff));
  w.block.dynamic_shared = w.dynamic_shared.data();
  w.dynamic_shared_bytes = l->dynamic_shared_bytes;
  w.find_live = l->find_live;
  w.find_live_ctx = l->find_live_ctx;
  reset_async(w, n);
  if (w.fibers.size() < n) w.fibers.resize(n);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.linear = i;
    f.lane = i % 32;
    f.warp = i / 32;
    f.pub.thread_idx = uint3{i % l->block[0], (i / l->block[0]) % l->block[1], i / (l->block[0] * l->block[1])};
    f.state = State::Runnable;
    f.stack_bottom = w.stacks + size_t(i) * kStackBytes + kGuardBytes;
    f.asan_fake_stack = nullptr;
#if DDPM_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f.stack_bottom, kStackBytes - kGuardBytes);
#endif
    init_fiber(f, w.stacks + size_t(i + 1) * kStackBytes);
  }
  for (unsigned warp = 0; warp * 32 < n; ++warp) w.warp_threads[warp] = std::min(32u, n - warp * 32);

  current_block = &w.block;
  // Forward, fibers run in thread order between barriers; reversed (DDPM_EMU_REVERSE=1, or
  // gpu::FiberOrder::Reverse), the last warp runs first, so a warp that reads what another warp
  // wrote without a __syncthreads in between reads it before it is written (poison) once.
  const bool reverse = l->reverse_fibers != 0;
  for (;;) {
    bool any_live = false;
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = w.fibers[reverse ? n - 1 - k : k];
      if (f.state != State::Runnable) {
        any_live |= f.state != State::Done;
        continue;
      }
      w.running = &f;
      current_thread = &f.pub;
      switch_to_fiber(w, f);
      if (!w.error.empty()) return fail(w.error);
      any_live |= f.state != State::Done;
    }
    if (!any_live) break;
    bool runnable = false;
    for (unsigned i = 0; i < n && !runnable; ++i) runnable = w.fibers[i].state == State::Runnable;
    if (!runnable && !resolve_block_wait(w)) return fail(w.error);
  }
  current_thread = nullptr;
  current_block = nullptr;
  return 0;
}

}  // extern "C"
