#!/usr/bin/env bash
# The test suite from a fresh clone: install what is missing, build, run every ctest entry
# (unit tests and the multi-rank tests under mpirun).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install_deps.sh --data
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
ctest --test-dir "${MOEFOLD_BUILD_DIR:-$root/build}" --output-on-failure -j "$(nproc)" "$@"
# The parsers under libFuzzer for a bounded time (fuzz/, at most a minute in all).
scripts/fuzz.sh
