// The emulator engine's internals, shared by its three parts (nothing here is seen by kernels or
// the Rust side):
// - fiber.cpp: fibers, their stacks and the hand-written context switch;
// - warp.cpp: warp collectives (shuffles, votes, __syncwarp);
// - runtime.cpp: block barriers, the scheduler loop and the entry point ddpm_emu_run_block;
// - async_copy.cpp: cp.async's per-thread queues of copies done at wait time.
#pragma once
#include "cuda_host.h"
#include "registry.h"

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
namespace engine {

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
  // tensor-core collectives (warp_matrix.cpp): this lane's registers in and out
  uint32_t matrix_in[10];
  uint32_t matrix_out[4];
};

// One cp.async, recorded at issue and performed at the cp_async_wait that covers it.
struct AsyncCopy {
  char* dst;
  const char* src;
  int bytes, src_bytes;
  const char* file;
  int line;
};
// One thread's cp.asyncs in issue order: copies[done..] are pending; group_ends[ends_done..] are
// the committed groups (each the end index of its copies); copies past the last end are uncommitted.
struct AsyncQueue {
  std::vector<AsyncCopy> copies;
  std::vector<size_t> group_ends;
  size_t done = 0, ends_done = 0;
};

// Looks up the live device buffer holding `addr` (src/gpu/emu.rs): 1 with its range, or 0.
typedef int (*FindLiveFn)(const void* ctx, uint64_t addr, uint64_t* start, uint64_t* len);

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
  // cp.async (async_copy.cpp): one queue per thread, the launch's live-buffer lookup and the last
  // buffer it found (a cache, reset per block).
  std::vector<AsyncQueue> async_queues;
  size_t dynamic_shared_bytes = 0;
  FindLiveFn find_live = nullptr;
  const void* find_live_ctx = nullptr;
  uint64_t live_lo = 0, live_hi = 0;
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

// One per worker thread, made on first use and kept for the thread's life.
extern __thread Worker* tls_worker;
inline Worker& worker() {
  if (!tls_worker) tls_worker = new Worker();
  return *tls_worker;
}

// printf into a std::string (messages of at most 1 KiB).
std::string format(const char* fmt, ...);

// fiber.cpp
void init_fiber(Fiber& f, char* stack_top);
// Runs fiber f until it blocks or finishes.
void switch_to_fiber(Worker& w, Fiber& f);
// Blocks the running fiber until the scheduler resumes it.
void block_running(Worker& w);
// Ends the running fiber with an error (the first error of a block is the one reported).
[[noreturn]] void fail_running(Worker& w, std::string msg);
bool ensure_stacks(Worker& w, unsigned n);

// warp.cpp
const char* op_name(WarpOp op);
void warp_arrive(Worker& w, Fiber& f, WarpOp op, unsigned mask, const char* file, int line);

// warp_matrix.cpp
inline bool is_matrix_op(WarpOp op) { return op == WarpOp::Mma || op == WarpOp::Ldmatrix; }
// Computes every lane's matrix_out once all 32 lanes of `warp` have arrived, and resumes them.
void complete_matrix_collective(Worker& w, unsigned warp);

// async_copy.cpp
// Empties every thread's queue (block start).
void reset_async(Worker& w, unsigned n_threads);
// Fails the running fiber if it exits with cp.asyncs still pending.
void check_async_at_exit(Worker& w, const Fiber& f);

// runtime.cpp
// "kernels/x.cu" rather than the build's absolute path.
const char* short_path(const char* file);

}  // namespace engine
}  // namespace ddpm_emu
