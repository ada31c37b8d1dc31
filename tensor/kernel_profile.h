// A GPU run's kernel profile as a table (`moefold train --kernel-profile FILE`): every kernel,
// copy and memset the device ran, summed by name, the largest first, with each kernel's launch
// resources (threads per block, registers per thread, shared memory per block: what decides
// how many of its blocks an SM holds). Where a step's device time goes, without a system
// profiler on the machine. The CUDA backend records the activity
// (tensor/cuda/kernel_profiler.cpp, CUPTI); this file only names and sums it, so the CPU tests
// check the table.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace moefold {

struct KernelRecord {
  std::string name;     // a demangled kernel name, or "memcpy HtoD" and the like
  int64_t duration_ns;  // device time from its start to its end
  // A kernel's launch (0 for copies and memsets): threads per block, registers per thread,
  // static and dynamic shared memory per block.
  int block_threads = 0, registers = 0;
  int64_t shared_bytes = 0;
};

// A demangled kernel signature without its return type, namespaces and parameters, template
// arguments kept: "void moefold::cuda::(anonymous namespace)::k<128>(float const*, int)" is
// "k<128>". Library kernels without a signature (cuBLAS's) are kept whole.
std::string short_kernel_name(std::string_view demangled);

// The table: per name its calls, total and mean device time, share of the summed device time
// and launch resources (its first launch's), the `top` largest then one line for the rest; the
// header gives the wall seconds the
// profile spans and the device time summed over every record (kernels on several streams can
// overlap, so that sum may exceed the wall time).
std::string format_kernel_profile(std::span<const KernelRecord> records, double wall_seconds,
                                  int top);

}  // namespace moefold
