#!/usr/bin/env bash
# Load-driven FSSDP against plain EP under Zipf-skewed routing (tests/bench/
# fssdp_placement_bench.cpp): one MoE layer over 4 ranks (or $RANKS), spare slots $1 (default 2).
# Waiting ranks yield their core (mpi_yield_when_idle), which matters when ranks outnumber cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOEFOLD_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh" --target moefold_bench_fssdp_placement >/dev/null
mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -np "${RANKS:-4}" \
  -x OPENBLAS_NUM_THREADS=1 \
  "$build/tests/bench/moefold_bench_fssdp_placement" "${1:-2}"
