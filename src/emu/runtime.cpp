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
#include "cuda_host.h"
#include "registry.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// Built with AddressSanitizer (DDPM_EMU_ASAN=1, see build/emulator.rs): ASan must be told of every
// switch between stacks, and a fiber stack reused for a new block must be cleared of the poisoned
// redzones its abandoned frames left.
#if defined(__SANITIZE_ADDRESS__)
#define DDPM_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define DDPM_EMU_ASAN 0
#endif

namespace ddpm_emu {

__thread ThreadState* current_thread;
__thread BlockState* current_block;

namespace {

constexpr size_t kStackBytes = 128 * 1024;  // generous: host code keeps register arrays on the stack
constexpr size_t kGuardBytes = 4096;        // an overflow faults instead of corrupting a neighbour
constexpr unsigned kMaxThreads = 1024;

enum class State : uint8_t { Runnable, AtBarrier, AtWarp, Done };

struct Fiber {
  ThreadState pub;  // what kernel code reads through threadIdx
  State state;
  unsigned linear, lane, warp;
#if defined(__x86_64__)
  void* sp;
#else
  ucontext_t ctx;
#endif
  char* stack_bottom;  // lowest usable byte (above the guard page)
  void* asan_fake_stack;
  // barrier
  BarrierOp bar_op;
  int bar_pred, bar_result, bar_line;
  const char* bar_file;
  // warp collective
  WarpOp warp_op;
  unsigned warp_mask;
  uint64_t warp_value, warp_result;
  int warp_arg, warp_width, warp_line;
  const char* warp_file;
};

struct Worker {
  char* stacks = nullptr;
  std::vector<Fiber> fibers;
  std::vector<char> dynamic_shared;
  BlockState block{};
  const ddpm_emu_kernel* kernel = nullptr;
  void** args = nullptr;
  Fiber* running = nullptr;
  std::string error;
  unsigned n_threads = 0;
  unsigned warp_threads[kMaxThreads / 32] = {};
#if defined(__x86_64__)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler_ctx;
#endif
  // The scheduler's (worker thread's) stack, as ASan reports it when a fiber starts.
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
};

__thread Worker* tls_worker;

Worker& worker() {
  if (!tls_worker) tls_worker = new Worker();  // one per worker thread, kept for the thread's life
  return *tls_worker;
}

std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace
}  // namespace ddpm_emu

#if defined(__x86_64__)
// ddpm_emu_switch(save, load): saves callee-saved registers and the FP control words on the
// current stack, stores the stack pointer in *save, and resumes the context whose stack pointer is
// `load`. A new fiber's stack is laid out (see init_fiber) so that the final `ret` enters
// ddpm_emu_fiber_start with the fiber in rbx and the entry function in r12.
extern "C" void ddpm_emu_switch(void** save, void* load);
extern "C" void ddpm_emu_fiber_start();
asm(R"(
.text
.p2align 4
.hidden ddpm_emu_switch
.globl ddpm_emu_switch
.type ddpm_emu_switch,@function
ddpm_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size ddpm_emu_switch,.-ddpm_emu_switch

.p2align 4
.hidden ddpm_emu_fiber_start
.globl ddpm_emu_fiber_start
.type ddpm_emu_fiber_start,@function
ddpm_emu_fiber_start:
  movq %rbx, %rdi
  callq *%r12
  ud2
.size ddpm_emu_fiber_start,.-ddpm_emu_fiber_start
)");
#endif

namespace ddpm_emu {
namespace {

[[noreturn]] void back_to_scheduler_forever(Worker& w);

void fiber_main(Fiber* f) {
  Worker& w = worker();
#if DDPM_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
#endif
  w.kernel->entry(w.args);
  f->state = State::Done;
  back_to_scheduler_forever(w);
}

#if defined(__x86_64__)
void init_fiber(Fiber& f, char* stack_top) {
  uint64_t* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15));
  // Layout popped by ddpm_emu_switch, low to high: FP control words, r15, r14, r13, r12, rbx,
  // rbp, return address. After `ret`, rsp = top - 2 words: 16-byte aligned, as a call site needs.
  uint64_t* sp = top - 10;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  sp[0] = uint64_t(mxcsr) | (uint64_t(fpcw) << 32);
  sp[1] = 0;                                                   // r15
  sp[2] = 0;                                                   // r14
  sp[3] = 0;                                                   // r13
  sp[4] = reinterpret_cast<uint64_t>(&fiber_main);             // r12: entry
  sp[5] = reinterpret_cast<uint64_t>(&f);                      // rbx: argument
  sp[6] = 0;                                                   // rbp
  sp[7] = reinterpret_cast<uint64_t>(&ddpm_emu_fiber_start);   // return address
  f.sp = sp;
}
inline void raw_switch_to_fiber(Worker& w, Fiber& f) { ddpm_emu_switch(&w.scheduler_sp, f.sp); }
inline void raw_switch_to_scheduler(Worker& w, Fiber& f) { ddpm_emu_switch(&f.sp, w.scheduler_sp); }
#else
void fiber_trampoline(unsigned lo, unsigned hi) {
  fiber_main(reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | uintptr_t(lo)));
}
void init_fiber(Fiber& f, char* stack_top) {
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stack_top - (kStackBytes - kGuardBytes);
  f.ctx.uc_stack.ss_size = kStackBytes - kGuardBytes;
  f.ctx.uc_link = nullptr;
  uintptr_t p = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.ctx, (void (*)())fiber_trampoline, 2, unsigned(p), unsigned(p >> 32));
}
inline void raw_switch_to_fiber(Worker& w, Fiber& f) { swapcontext(&w.scheduler_ctx, &f.ctx); }
inline void raw_switch_to_scheduler(Worker& w, Fiber& f) { swapcontext(&f.ctx, &w.scheduler_ctx); }
#endif

inline void switch_to_fiber(Worker& w, Fiber& f) {
#if DDPM_EMU_ASAN
  __sanitizer_start_switch_fiber(&w.scheduler_fake_stack, f.stack_bottom, kStackBytes - kGuardBytes);
#endif
  raw_switch_to_fiber(w, f);
#if DDPM_EMU_ASAN
  __sanitizer_finish_switch_fiber(w.scheduler_fake_stack, nullptr, nullptr);
#endif
}
inline void switch_to_scheduler(Worker& w, Fiber& f) {
#if DDPM_EMU_ASAN
  __sanitizer_start_switch_fiber(&f.asan_fake_stack, w.scheduler_stack_bottom, w.scheduler_stack_size);
#endif
  raw_switch_to_scheduler(w, f);
#if DDPM_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
#endif
}

[[noreturn]] void back_to_scheduler_forever(Worker& w) {
  switch_to_scheduler(w, *w.running);
  __builtin_trap();  // a finished or failed fiber is never resumed
}

// Blocks the running fiber until the scheduler resumes it.
void block_running(Worker& w) { switch_to_scheduler(w, *w.running); }

[[noreturn]] void fail_running(Worker& w, std::string msg) {
  if (w.error.empty()) w.error = std::move(msg);
  w.running->state = State::Done;
  back_to_scheduler_forever(w);
}

bool ensure_stacks(Worker& w, unsigned n) {
  if (w.stacks) return true;
  size_t total = size_t(kMaxThreads) * kStackBytes;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return false;
  w.stacks = static_cast<char*>(mem);
  for (unsigned i = 0; i < kMaxThreads; ++i) mprotect(w.stacks + i * kStackBytes, kGuardBytes, PROT_NONE);
  (void)n;
  return true;
}

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
  }
  return "?";
}

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
    }
    f.warp_result = r;
    f.state = State::Runnable;
  }
}

}  // namespace

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, const char* file, int line) {
  Worker& w = worker();
  Fiber& f = *w.running;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail_running(w, format("%s with width %d (must be a power of two up to 32) at %s:%d", op_name(op), width, file, line));
  if (!(mask >> f.lane & 1u))
    fail_running(w, format("%s called by lane %u whose bit is not in mask 0x%08x at %s:%d", op_name(op), f.lane, mask, file, line));
  f.state = State::AtWarp;
  f.warp_op = op;
  f.warp_mask = mask;
  f.warp_value = bits;
  f.warp_arg = arg;
  f.warp_width = width;
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
  if (complete) {
    for (unsigned l = 0; l < n_lanes; ++l)
      if ((mask >> l & 1u) && lanes[l].warp_op != op)
        fail_running(w, format("lanes of warp %u met at different warp collectives: %s at %s:%d and %s at %s:%d", f.warp,
                               op_name(op), file, line, op_name(lanes[l].warp_op), lanes[l].warp_file,
                               lanes[l].warp_line));
    complete_collective(w, f.warp, mask);
  } else {
    block_running(w);
  }
  return f.warp_result;
}

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

namespace {

const char* short_path(const char* file) {
  const char* k = strstr(file, "kernels/");
  return k ? k : file;
}

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
}  // namespace ddpm_emu

extern "C" {

struct ddpm_emu_launch {
  const ddpm_emu_kernel* kernel;
  void** args;
  uint32_t grid[3];
  uint32_t block[3];
  uint64_t dynamic_shared_bytes;
};

// Runs block (bx, by, bz) of a launch to completion on the calling thread. Returns 0, or 1 with a
// NUL-terminated message in `err` (the caller adds the kernel name and block index).
int ddpm_emu_run_block(const ddpm_emu_launch* l, uint32_t bx, uint32_t by, uint32_t bz, char* err, size_t err_len) {
  using namespace ddpm_emu;
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
  for (;;) {
    bool any_live = false;
    for (unsigned i = 0; i < n; ++i) {
      Fiber& f = w.fibers[i];
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
