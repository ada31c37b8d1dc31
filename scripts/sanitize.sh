#!/usr/bin/env bash
# The test suite under sanitizers, each in its own build (CUDA off). Any report fails its test.
# Not in CI: a second full build takes about 40 minutes on 2 cores.
#   scripts/sanitize.sh [ctest args]           AddressSanitizer and UBSan, build-asan/ (the whole
#                                              suite: about 8 min of tests, 3.5 in build/)
#   scripts/sanitize.sh --thread [ctest args]  ThreadSanitizer, build-tsan/: the communication
#                                              threads (MPI progress engine, watchdog) against
#                                              the compute thread, and the emulated GPU's
#                                              streams (its fibers are announced to TSan)
# Under --thread the emulated GPU entries take about 36 of the 50 minutes of tests;
# scripts/sanitize.sh --thread -E 'mulat|nccl' leaves them out (518 entries, about 13 min).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
if [ "${1:-}" = --thread ]; then
  shift
  build="${MOEFOLD_TSAN_BUILD_DIR:-$root/build-tsan}"
  flags="-fsanitize=thread"
  # Shared memory and loopback only: Open MPI's TCP transport reports its own lock orders.
  export OMPI_MCA_btl=self,vader
  export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 exitcode=66 report_signal_unsafe=0 suppressions=$root/scripts/tsan_openmpi.supp}"
else
  build="${MOEFOLD_ASAN_BUILD_DIR:-$root/build-asan}"
  flags="-fsanitize=address,undefined -fno-omit-frame-pointer"
  # Leaks are not checked: Open MPI's allocations at exit are reported from frames that cannot
  # be symbolised. Run a single-process test binary with ASAN_OPTIONS=detect_leaks=1 for them.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi
# CMake takes CXXFLAGS on a build folder's first configure; it passes them to the links too.
CXXFLAGS="$flags" MOEFOLD_BUILD_DIR="$build" MOEFOLD_CMAKE_ARGS="-DMOEFOLD_CUDA=OFF" \
  "$root/scripts/build.sh"
if ! grep -q -- "CMAKE_CXX_FLAGS:STRING=$flags" "$build/CMakeCache.txt"; then
  echo "sanitize: $build was configured without '$flags'; remove it first" >&2
  exit 1
fi
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
