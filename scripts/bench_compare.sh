#!/usr/bin/env bash
# Side-by-side throughput of two moefold binaries on the same recipe, alternating A and B so
# that both see the same machine load. For each rank count, prints each run's mean tokens/s over
# steps 3.. and the mean of B over A. Used to check that a change keeps the demo's speed:
#   scripts/bench_compare.sh OLD/moefold build/launch/moefold [--steps 10] [--rounds 2]
#       [--ranks "1 2"] [--config configs/demo.yaml] [--b-set KEY=VALUE ...]
# --b-set applies a recipe override to B only, e.g. the cost of bf16 with one binary:
#   scripts/bench_compare.sh build/launch/moefold build/launch/moefold --b-set training.bf16=true
set -euo pipefail
a="$1" b="$2"; shift 2
steps=10 rounds=2 ranks="1 2" config=configs/demo.yaml b_sets=()
while (($#)); do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --b-set) b_sets+=(--set "$2"); shift 2 ;;
    *) echo "bench_compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="$(mktemp -d)"
run() {  # binary ranks tag [overrides...] → mean tokens/s of steps 3..
  local binary="$1" ranks="$2" dir="$out/$3"
  shift 3
  mpirun --oversubscribe -np "$ranks" -x OPENBLAS_NUM_THREADS=1 "$binary" train --config "$config" "$@" \
    --set training.train_iters="$steps" --set training.eval_interval=0 \
    --set optimizer.lr_warmup_iters=2 --set checkpoint.save="$dir/checkpoints" \
    --set logging.run_dir="$dir" \
    >"$dir.log" 2>&1 || { echo "bench_compare: $binary failed, see $dir.log" >&2; exit 1; }
  jq -s '[.[] | select(.iteration >= 3) | .tokens_per_s] | add / length' "$dir/metrics.jsonl"
}
for n in $ranks; do
  sa=0 sb=0
  for ((r = 1; r <= rounds; ++r)); do
    ta=$(run "$a" "$n" "a_${n}_$r"); tb=$(run "$b" "$n" "b_${n}_$r" ${b_sets[@]+"${b_sets[@]}"})
    echo "ranks $n round $r: A $ta tok/s, B $tb tok/s"
    sa=$(awk "BEGIN {print $sa + $ta}"); sb=$(awk "BEGIN {print $sb + $tb}")
  done
  awk "BEGIN {printf \"ranks $n: B/A = %.3f\\n\", $sb / $sa}"
done
rm -rf "$out"
