// The emulation's scheduler: a block's threads are fibers (Boost.Context) that run one after
// another until each waits at a barrier or returns; then the barriers whose whole scope waits
// open.
#include "tests/tensor/cuda_emulation/cuda_emulation.h"

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace moefold::cuda_emulation {
namespace {

namespace context = boost::context;

constexpr unsigned kWarp = 32;
constexpr size_t kStackBytes = size_t{256} << 10;  // kernels' register arrays live here
constexpr std::align_val_t kSharedAlignment{128};

enum class Wait { kNone, kWarp, kBlock, kDone };

// The sanitizers must be told of every switch between the scheduler's stack and a fiber's.
// AddressSanitizer: an exception thrown on a fiber (a failed check, a discarded fiber's
// unwinding) unpoisons the stack it runs on. ThreadSanitizer keeps a call stack per context, so
// each fiber has its own (`tsan`), and a switch orders what ran before it before what runs after,
// as the scheduler does. Contexts are kept with the stacks, as creating one is costly; Boost's
// fiber entry never returns, so under TSan this file records no calls (CMakeLists.txt), lest a
// reused context's call stack grow. No-ops without them.
void start_switch([[maybe_unused]] void** fake_stack, [[maybe_unused]] const void* bottom,
                  [[maybe_unused]] size_t size, [[maybe_unused]] void* tsan) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(tsan, 0);
#endif
}
void finish_switch([[maybe_unused]] void* fake_stack, [[maybe_unused]] const void** bottom_old,
                   [[maybe_unused]] size_t* size_old) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, bottom_old, size_old);
#endif
}
void* current_tsan_context() {
#if defined(__SANITIZE_THREAD__)
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}
void* new_tsan_context() {
#if defined(__SANITIZE_THREAD__)
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}

// Thrown on a fiber that the scheduler resumes only to unwind it (its block failed).
struct Discarded {};

// Gives a fiber one of the stacks that the launches keep.
class KeptStack {
 public:
  explicit KeptStack(char* base) : base_(base) {}
  context::stack_context allocate() {
    context::stack_context stack;
    stack.size = kStackBytes;
    stack.sp = base_ + kStackBytes;
    return stack;
  }
  void deallocate(context::stack_context&) noexcept {}

 private:
  char* base_;
};

// A fiber's stack, kept for the next launches, with its ThreadSanitizer context.
struct FiberStack {
  std::unique_ptr<char[]> memory = std::make_unique_for_overwrite<char[]>(kStackBytes);
  void* tsan = new_tsan_context();
};

struct Fiber {
  context::fiber suspended;  // empty while it runs and once it returned
  const FiberStack* stack = nullptr;
  Wait wait = Wait::kNone;
  std::source_location site;
};

struct Grid {
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  context::fiber scheduler;  // where a waiting fiber goes back to
  const void* scheduler_bottom = nullptr;  // the scheduler's stack, for ASan
  size_t scheduler_size = 0;
  void* scheduler_tsan = current_tsan_context();
  bool discarding = false;
  unsigned current = 0;
  // The block's dynamic shared memory: exactly the launch's bytes, 128-byte aligned as
  // launch_utils.cuh declares it.
  struct FreeAligned {
    void operator()(unsigned char* p) const { ::operator delete[](p, kSharedAlignment); }
  };
  std::unique_ptr<unsigned char[], FreeAligned> shared;
  std::vector<uint64_t> exchange;
  std::string error;
};

Grid* running = nullptr;

std::string describe(const std::source_location& site) {
  return std::filesystem::path(site.file_name()).filename().string() + ":" +
         std::to_string(site.line());
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

void wait_at(Wait wait, const std::source_location& site) {
  Grid& g = *running;
  Fiber& f = g.fibers[g.current];
  f.wait = wait;
  f.site = site;
  void* fake_stack = nullptr;
  start_switch(&fake_stack, g.scheduler_bottom, g.scheduler_size, g.scheduler_tsan);
  g.scheduler = std::move(g.scheduler).resume();
  finish_switch(fake_stack, &g.scheduler_bottom, &g.scheduler_size);
  if (g.discarding) throw Discarded{};
}

std::string thread_name(unsigned t) {
  return "thread " + std::to_string(t) + " (warp " + std::to_string(t / kWarp) + ", block " +
         std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
         std::to_string(blockIdx.z) + ")";
}

// Opens every barrier whose scope all waits at it; throws where a scope can never meet.
void open_barriers(Grid& g) {
  bool opened = false;
  const unsigned threads = static_cast<unsigned>(g.fibers.size());
  for (unsigned w = 0; w * kWarp < threads; ++w) {
    const unsigned end = std::min(threads, (w + 1) * kWarp);  // the last warp may be partial
    Fiber* first = nullptr;
    for (unsigned t = w * kWarp; t < end; ++t) {
      if (g.fibers[t].wait == Wait::kWarp && first == nullptr) first = &g.fibers[t];
    }
    if (first == nullptr) continue;
    for (unsigned t = w * kWarp; t < end; ++t) {
      const Fiber& f = g.fibers[t];
      if (f.wait == Wait::kWarp && same_site(f.site, first->site)) continue;
      const std::string where = f.wait == Wait::kDone ? "returned"
                                : f.wait == Wait::kBlock
                                    ? "waits at __syncthreads " + describe(f.site)
                                    : "waits at " + describe(f.site);
      throw EmulationError("divergent warp: " + thread_name(t) + " " + where +
                           " while its warp waits at " + describe(first->site));
    }
    for (unsigned t = w * kWarp; t < end; ++t) g.fibers[t].wait = Wait::kNone;
    opened = true;
  }
  if (opened) return;
  const Fiber* first = nullptr;
  for (unsigned t = 0; t < threads; ++t) {
    const Fiber& f = g.fibers[t];
    if (f.wait == Wait::kBlock && first == nullptr) first = &f;
  }
  for (unsigned t = 0; t < threads; ++t) {
    const Fiber& f = g.fibers[t];
    if (f.wait == Wait::kBlock && same_site(f.site, first->site)) continue;
    throw EmulationError(
        "divergent block: " + thread_name(t) + " " +
        (f.wait == Wait::kDone ? std::string("returned") : "waits at " + describe(f.site)) +
        " while the rest of its block waits at __syncthreads " + describe(first->site));
  }
  for (Fiber& f : g.fibers) f.wait = Wait::kNone;
}

// Runs thread t until it waits at a barrier or returns; starts it on its first run.
void run_thread(Grid& g, unsigned t) {
  Fiber& f = g.fibers[t];
  if (!f.suspended) {
    f.suspended = context::fiber(
        std::allocator_arg, KeptStack(f.stack->memory.get()), [&g, t](context::fiber&& scheduler) {
          finish_switch(nullptr, &g.scheduler_bottom, &g.scheduler_size);
          g.scheduler = std::move(scheduler);
          try {
            (*g.body)();
          } catch (const Discarded&) {
          }
          g.fibers[t].wait = Wait::kDone;
          // this stack ends
          start_switch(nullptr, g.scheduler_bottom, g.scheduler_size, g.scheduler_tsan);
          return std::move(g.scheduler);
        });
  }
  void* fake_stack = nullptr;
  start_switch(&fake_stack, f.stack->memory.get(), kStackBytes, f.stack->tsan);
  f.suspended = std::move(f.suspended).resume();
  finish_switch(fake_stack, nullptr, nullptr);
}

// Unwinds the threads of a block that failed, each on its own stack, so that nothing is left
// suspended for Boost to unwind behind ASan's back.
void discard_threads(Grid& g) {
  g.discarding = true;
  for (unsigned t = 0; t < g.fibers.size(); ++t) {
    if (g.fibers[t].suspended) run_thread(g, t);
  }
}

void run_block(Grid& g) {
  for (Fiber& f : g.fibers) f.wait = Wait::kNone;
  const unsigned threads = static_cast<unsigned>(g.fibers.size());
  for (unsigned round = 0;; ++round) {
    bool all_done = true;
    for (unsigned i = 0; i < threads; ++i) {
      // Between two barriers the threads run one after another, in thread order and then in
      // reverse: a read of what another thread writes in the same stretch sees it in one of
      // the two orders at least, and differs from a GPU's.
      const unsigned t = round % 2 == 0 ? i : threads - 1 - i;
      Fiber& f = g.fibers[t];
      if (f.wait == Wait::kNone) {
        g.current = t;
        threadIdx = {t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y)};
        run_thread(g, t);
        if (!g.error.empty()) throw EmulationError(g.error);
      }
      all_done = all_done && f.wait == Wait::kDone;
    }
    if (all_done) return;
    open_barriers(g);
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024) {
    throw EmulationError("a block of " + std::to_string(threads) + " threads");
  }
  if (running != nullptr) throw EmulationError("a kernel launched from inside a kernel");
  // One kernel at a time in the process: `__shared__` arrays are static variables.
  static std::mutex one_grid;
  std::lock_guard<std::mutex> lock(one_grid);
  static std::vector<FiberStack> stacks;  // kept for the next launches
  while (stacks.size() < threads) stacks.emplace_back();
  Grid g;
  g.body = &body;
  g.fibers.resize(threads);
  for (size_t t = 0; t < threads; ++t) g.fibers[t].stack = &stacks[t];
  g.exchange.resize((threads + kWarp - 1) / kWarp * kWarp);
  if (shared_bytes > 0) {
    g.shared.reset(static_cast<unsigned char*>(::operator new[](shared_bytes, kSharedAlignment)));
  }
  gridDim = grid;
  blockDim = block;
  running = &g;
  struct Clear {
    ~Clear() { running = nullptr; }
  } clear;
  // A GPU runs blocks in no set order: every other launch runs them last to first, so a block
  // that needs another's writes without a kernel boundary between them shows in one order.
  static uint64_t launches = 0;
  const bool backwards = launches++ % 2 == 1;
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  for (uint64_t i = 0; i < blocks; ++i) {
    const uint64_t b = backwards ? blocks - 1 - i : i;
    blockIdx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                static_cast<unsigned>(b / (uint64_t{grid.x} * grid.y))};
    if (g.shared) std::memset(g.shared.get(), 0xA5, shared_bytes);  // a fresh block's garbage
    try {
      run_block(g);
    } catch (...) {
      discard_threads(g);
      throw;
    }
  }
}

void block_barrier(const std::source_location& site) { wait_at(Wait::kBlock, site); }
void warp_barrier(const std::source_location& site) { wait_at(Wait::kWarp, site); }

void fail(const std::string& what, const std::source_location& site) {
  Grid& g = *running;
  g.error = what + " at " + describe(site) + " in " + thread_name(g.current);
  wait_at(Wait::kDone, site);
  std::abort();  // resumed only to be discarded, where wait_at throws
}

unsigned char* block_shared_memory() { return running->shared.get(); }

unsigned lane_id() { return running->current % kWarp; }

uint64_t& exchange_slot(unsigned lane) {
  return running->exchange[running->current / kWarp * kWarp + lane];
}

}  // namespace moefold::cuda_emulation
