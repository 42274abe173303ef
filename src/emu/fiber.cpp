// Fibers: each CUDA thread of a block runs on its own user-space stack, switched by hand-written
// x86-64 code (saving only callee-saved registers and the FP control words), or ucontext on other
// architectures. See runtime.cpp for the scheduling they serve.
#include "engine.h"

#include <sys/mman.h>
#include <unistd.h>

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
namespace engine {

[[noreturn]] void back_to_scheduler_forever(Worker& w);

void fiber_main(Fiber* f) {
  Worker& w = worker();
#if DDPM_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &w.scheduler_stack_bottom, &w.scheduler_stack_size);
#endif
  w.kernel->entry(w.args);
  check_async_at_exit(w, *f);
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

void switch_to_fiber(Worker& w, Fiber& f) {
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

}  // namespace engine
}  // namespace ddpm_emu
