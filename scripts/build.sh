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
# Configure every time (a few seconds) so that newly added files and targets are known.
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${MOEFOLD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$jobs" "$@"
