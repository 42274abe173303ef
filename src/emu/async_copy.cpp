// cp.async in the emulator (kernels/tensor_core.cuh's cp_async / cp_async_commit / cp_async_wait),
// after the PTX ISA ("cp.async", "cp.async.commit_group", "cp.async.wait_group"):
// - each thread keeps a FIFO of its copies, bundled into groups by commit_group;
// - at issue the addresses are checked (destination in the block's dynamic shared memory, source
//   not in shared memory and inside a live device buffer, both aligned to the copy size) and the
//   destination is filled with poison (0xFF bytes: NaN in f32 and bf16) at once;
// - the copy itself happens at the wait_group that covers it: wait_group N completes all but the N
//   newest committed groups of this thread, reading the source then and zero-filling the bytes past
//   src-size. Uncommitted copies belong to no group, and wait_group leaves them pending (PTX:
//   wait_all is commit_group followed by wait_group 0);
// - a thread that exits with copies pending is an error.
// So a kernel that reads a stage before its wait, or another warp's part without a __syncthreads
// after the writer's wait (run the fibers reversed, see runtime.cpp), reads NaN.
#include "engine.h"

namespace ddpm_emu {
namespace engine {

void reset_async(Worker& w, unsigned n_threads) {
  if (w.async_queues.size() < n_threads) w.async_queues.resize(n_threads);
  for (unsigned i = 0; i < n_threads; ++i) {
    AsyncQueue& q = w.async_queues[i];
    q.copies.clear();
    q.group_ends.clear();
    q.done = q.ends_done = 0;
  }
  w.live_lo = w.live_hi = 0;
}

void check_async_at_exit(Worker& w, const Fiber& f) {
  const AsyncQueue& q = w.async_queues[f.linear];
  if (q.done == q.copies.size()) return;
  const AsyncCopy& c = q.copies[q.done];
  fail_running(w, format("cp.async group(s) still pending at thread exit, issued at %s:%d (thread %u,%u,%u; %zu "
                         "copies never waited for)",
                         short_path(c.file), c.line, f.pub.thread_idx.x, f.pub.thread_idx.y, f.pub.thread_idx.z,
                         q.copies.size() - q.done));
}

namespace {

[[noreturn]] void fail_copy(Worker& w, const char* file, int line, const std::string& what) {
  const uint3 t = w.running->pub.thread_idx;
  fail_running(w, format("cp.async at %s:%d (thread %u,%u,%u): %s", short_path(file), line, t.x, t.y, t.z,
                         what.c_str()));
}

bool in_dynamic_shared(const Worker& w, const void* p, size_t bytes) {
  const char* lo = w.dynamic_shared.data();
  const char* c = static_cast<const char*>(p);
  return c >= lo && c <= lo + w.dynamic_shared_bytes && bytes <= size_t(lo + w.dynamic_shared_bytes - c);
}

// Whether [p, p + bytes) lies inside one live device buffer; the last buffer found is cached.
bool in_live_buffer(Worker& w, const void* p, size_t bytes) {
  uint64_t a = reinterpret_cast<uintptr_t>(p);
  if (a >= w.live_lo && a + bytes <= w.live_hi && a + bytes >= a) return true;
  uint64_t start = 0, len = 0;
  if (!w.find_live || !w.find_live(w.find_live_ctx, a, &start, &len)) return false;
  w.live_lo = start;
  w.live_hi = start + len;
  return a + bytes <= w.live_hi && a + bytes >= a;
}

void check_issue(Worker& w, void* dst, const void* src, int bytes, int src_bytes, const char* file, int line) {
  if (bytes != 4 && bytes != 8 && bytes != 16) fail_copy(w, file, line, format("copy size %d (4, 8 or 16)", bytes));
  if (src_bytes < 0 || src_bytes > bytes)
    fail_copy(w, file, line, format("src-size %d outside 0..%d", src_bytes, bytes));
  if (!in_dynamic_shared(w, dst, size_t(bytes)))
    fail_copy(w, file, line,
              format("destination %p is not in the block's dynamic shared memory (%zu bytes): the emulator's "
                     "cp.async writes only DYNAMIC_SHARED memory, never a static __shared__ array or global memory",
                     dst, w.dynamic_shared_bytes));
  if (reinterpret_cast<uintptr_t>(dst) % unsigned(bytes))
    fail_copy(w, file, line, format("destination %p is not aligned to the copy size %d", dst, bytes));
  const char* smem = w.dynamic_shared.data();
  if (static_cast<const char*>(src) >= smem && static_cast<const char*>(src) < smem + w.dynamic_shared.size())
    fail_copy(w, file, line, format("source %p is in shared memory (cp.async copies global to shared)", src));
  if (reinterpret_cast<uintptr_t>(src) % unsigned(bytes))
    fail_copy(w, file, line, format("source %p is not aligned to the copy size %d", src, bytes));
  // Only src-size bytes are read: a zero-fill-only copy (src-size 0) reads nothing.
  if (src_bytes > 0 && !in_live_buffer(w, src, size_t(src_bytes)))
    fail_copy(w, file, line, format("source %p..+%d is not inside any live device buffer", src, src_bytes));
}

void complete(const AsyncCopy& c) {
  std::memcpy(c.dst, c.src, size_t(c.src_bytes));
  std::memset(c.dst + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
}

}  // namespace
}  // namespace engine

using namespace engine;

void cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line) {
  Worker& w = worker();
  check_issue(w, dst, src, bytes, src_bytes, file, line);
  std::memset(dst, 0xff, size_t(bytes));
  w.async_queues[w.running->linear].copies.push_back(
      AsyncCopy{static_cast<char*>(dst), static_cast<const char*>(src), bytes, src_bytes, file, line});
}

void cp_async_commit() {
  Worker& w = worker();
  AsyncQueue& q = w.async_queues[w.running->linear];
  q.group_ends.push_back(q.copies.size());
}

void cp_async_wait(int n, const char* file, int line) {
  Worker& w = worker();
  if (n < 0) fail_copy(w, file, line, format("cp.async.wait_group %d (N must be >= 0)", n));
  AsyncQueue& q = w.async_queues[w.running->linear];
  while (q.group_ends.size() - q.ends_done > size_t(n)) {
    size_t end = q.group_ends[q.ends_done++];
    for (; q.done < end; ++q.done) complete(q.copies[q.done]);
  }
  if (q.done == q.copies.size() && q.ends_done == q.group_ends.size()) {
    q.copies.clear();
    q.group_ends.clear();
    q.done = q.ends_done = 0;
  }
}

}  // namespace ddpm_emu
