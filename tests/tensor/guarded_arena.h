// Memory the host can touch only while it is open: one reservation of address space, closed
// (PROT_NONE) by default, opened and closed around every op of the stand-in device
// (host_device.h) with one mprotect over the used part. Host code that dereferences a device
// pointer outside an op then faults, as it would with a GPU, and the SIGSEGV handler names the
// address before aborting. Blocks are bump-allocated and never reused (freed ones are returned
// to the kernel with MADV_DONTNEED), which is plenty for the few steps of a test.
#pragma once

#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace moefold::testing {

class GuardedArena {
 public:
  static constexpr size_t kReserve = size_t{64} << 30;  // address space only (MAP_NORESERVE)

  GuardedArena() {
    void* base = mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("GuardedArena: mmap failed");
    base_ = static_cast<char*>(base);
    instance() = this;
    struct sigaction action {};
    action.sa_sigaction = &GuardedArena::on_fault;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, nullptr);
  }

  void* allocate(size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t size = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
    std::lock_guard<std::mutex> lock(mutex_);
    if (used_ + size > kReserve) throw std::runtime_error("GuardedArena: reservation exhausted");
    char* ptr = base_ + used_;
    used_ += size;
    if (open_ > 0) protect(ptr, size, PROT_READ | PROT_WRITE);
    return ptr;
  }
  void release(void* ptr, size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    madvise(ptr, (std::max<size_t>(bytes, 1) + page - 1) / page * page, MADV_DONTNEED);
  }
  bool contains(const void* ptr) const {
    const char* p = static_cast<const char*>(ptr);
    return p >= base_ && p < base_ + kReserve;
  }
  // Nested and from any thread: the memory is open while at least one op runs.
  void open() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (open_++ == 0 && used_ > 0) protect(base_, used_, PROT_READ | PROT_WRITE);
  }
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--open_ == 0 && used_ > 0) protect(base_, used_, PROT_NONE);
  }

 private:
  static void protect(char* ptr, size_t size, int flags) {
    if (mprotect(ptr, size, flags) != 0) std::abort();
  }
  static GuardedArena*& instance() {
    static GuardedArena* arena = nullptr;
    return arena;
  }
  static void on_fault(int, siginfo_t* info, void*) {
    GuardedArena* arena = instance();
    if (arena != nullptr && arena->contains(info->si_addr)) {
      char line[200];
      const int n = std::snprintf(line, sizeof(line),
                                  "host code touched device memory at %p outside a backend op "
                                  "(a host dereference of a device pointer); stack:\n",
                                  info->si_addr);
      (void)!write(STDERR_FILENO, line, static_cast<size_t>(n));
      void* frames[64];
      backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
    }
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }

  char* base_ = nullptr;
  size_t used_ = 0;
  int open_ = 0;
  std::mutex mutex_;
};

}  // namespace moefold::testing
