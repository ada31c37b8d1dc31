#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (into build-fuzz/) and runs each on its
# committed seed corpus (fuzz/corpus/<target>/) for a bounded time: MOEFOLD_FUZZ_SECONDS in all
# (default 48), shared evenly. A crash fails with the input that caused it; turn it into a
# regression test and add the input to the corpus. Without clang it says so and succeeds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOEFOLD_FUZZ_BUILD_DIR:-$root/build-fuzz}"
total="${MOEFOLD_FUZZ_SECONDS:-48}"
clang="$(command -v clang++-14 || command -v clang++ || true)"
if [[ -z "$clang" ]]; then
  echo "[fuzz] skipped: no clang++ (Debian: apt-get install clang-14 libclang-rt-14-dev)"
  exit 0
fi
(
  exec 9>"${TMPDIR:-/tmp}/moefold-build.lock"
  flock 9
  cmake -S "$root/fuzz" -B "$build" -DCMAKE_CXX_COMPILER="$clang" -DCMAKE_BUILD_TYPE=Release \
    >/dev/null
  cmake --build "$build" -j "${MOEFOLD_BUILD_JOBS:-$(nproc)}"
)
targets=(recipe indexed_dataset tokenizer checkpoint_meta)
per=$((total / ${#targets[@]}))
status=0
for target in "${targets[@]}"; do
  work="$(mktemp -d)"
  echo "[fuzz] ${target}_fuzzer for ${per} s"
  if ! "$build/${target}_fuzzer" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/" -print_final_stats=0 "$work" "$root/fuzz/corpus/$target" \
      >"$work/log" 2>&1; then
    echo "[fuzz] ${target}_fuzzer FAILED; its input and log are in $work:"
    tail -n 30 "$work/log"
    status=1
  else
    grep -E "^#[0-9]+.*DONE" "$work/log" | tail -n 1 || true
    rm -rf "$work"
  fi
done
exit "$status"
