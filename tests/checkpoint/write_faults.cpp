#include "tests/checkpoint/write_faults.h"

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

namespace moefold::test {
namespace {

struct Plan {
  std::mutex mutex;
  std::atomic<bool> armed{false};
  std::string suffix;
  FaultCall call = FaultCall::kWrite;
  int error = EIO;
  int64_t injected = 0;
};

Plan& plan() {
  static Plan* p = new Plan();  // never destroyed: writes may happen during static destruction
  return *p;
}

std::string fd_path(int fd) {
  char link[64];
  std::snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  char target[PATH_MAX];
  const ssize_t n = ::readlink(link, target, sizeof(target) - 1);
  return n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
}

// Whether this call on `fd` is to fail; sets errno when it is.
bool should_fail(int fd, FaultCall call) {
  Plan& p = plan();
  if (!p.armed.load(std::memory_order_acquire)) return false;
  const int saved = errno;
  const std::string path = fd_path(fd);
  errno = saved;
  std::lock_guard<std::mutex> lock(p.mutex);
  if (call != p.call || path.size() < p.suffix.size() ||
      path.compare(path.size() - p.suffix.size(), p.suffix.size(), p.suffix) != 0) {
    return false;
  }
  ++p.injected;
  errno = p.error;
  return true;
}

template <typename F>
F real_function(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

void arm_write_fault(const char* path_suffix, FaultCall call, int error) {
  Plan& p = plan();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.suffix = path_suffix;
  p.call = call;
  p.error = error;
  p.injected = 0;
  p.armed.store(true, std::memory_order_release);
}

void disarm_write_faults() { plan().armed.store(false, std::memory_order_release); }

int64_t injected_write_faults() {
  std::lock_guard<std::mutex> lock(plan().mutex);
  return plan().injected;
}

}  // namespace moefold::test

using moefold::test::FaultCall;
using moefold::test::real_function;
using moefold::test::should_fail;

extern "C" {

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  static const auto real = real_function<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  return should_fail(fd, FaultCall::kWrite) ? -1 : real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  static const auto real =
      real_function<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  return should_fail(fd, FaultCall::kWrite) ? -1 : real(fd, buf, count, offset);
}

ssize_t write(int fd, const void* buf, size_t count) {
  static const auto real = real_function<ssize_t (*)(int, const void*, size_t)>("write");
  return should_fail(fd, FaultCall::kWrite) ? -1 : real(fd, buf, count);
}

int fsync(int fd) {
  static const auto real = real_function<int (*)(int)>("fsync");
  return should_fail(fd, FaultCall::kSync) ? -1 : real(fd);
}

int fdatasync(int fd) {
  static const auto real = real_function<int (*)(int)>("fdatasync");
  return should_fail(fd, FaultCall::kSync) ? -1 : real(fd);
}

}  // extern "C"
