#!/usr/bin/env bash
# Configures and builds moefold into $MOEFOLD_BUILD_DIR (default: build/). Extra arguments are
# passed to `cmake --build` (e.g. --target tensor_tests). Builds are serialised with a lock so
# that several shells on one machine never compile at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOEFOLD_BUILD_DIR:-$root/build}"
jobs="${MOEFOLD_BUILD_JOBS:-$(nproc)}"
exec 9>"${TMPDIR:-/tmp}/moefold-build.lock"
flock 9
# ccache, when installed, lets worktrees of one checkout share compiled objects.
launcher=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$root")}" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache
            -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
# Configure every time (a few seconds) so that newly added files and targets are known.
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
  ${MOEFOLD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$jobs" "$@"
