#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UBSan, in its own build (build-asan/, CUDA
# off; the emulated GPU and NCCL suites still run). Not in CI: a second full build takes about
# 40 minutes on 2 cores, and the tests about 8 (3.5 in build/). Extra arguments go to ctest
# (e.g. -R Router). Any memory error or undefined behaviour fails its test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MOEFOLD_BUILD_DIR="${MOEFOLD_ASAN_BUILD_DIR:-$root/build-asan}"
# CMake takes CXXFLAGS on a build folder's first configure; it passes them to the links too.
export CXXFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"
MOEFOLD_CMAKE_ARGS="-DMOEFOLD_CUDA=OFF" "$root/scripts/build.sh"
if ! grep -q -- '-fsanitize=address' "$MOEFOLD_BUILD_DIR/CMakeCache.txt"; then
  echo "sanitize: $MOEFOLD_BUILD_DIR was configured without sanitizers; remove it first" >&2
  exit 1
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# Leaks are not checked: Open MPI's allocations at exit are reported from frames that cannot be
# symbolised. Run a single-process test binary with ASAN_OPTIONS=detect_leaks=1 for them.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest --test-dir "$MOEFOLD_BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
