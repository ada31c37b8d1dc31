#!/usr/bin/env bash
# Scaling study: trains one recipe under several layouts for the same number of steps and prints
# one table of what a scaling study compares: tokens/s, TFLOP/s, MFU and rank 0's peak memory
# (means over the steps after the first WARMUP, default 2), and the final losses, which agree
# across layouts when the global batch is the same (parallelism invariance).
#
#   scripts/scaling_study.sh [--config RECIPE] [--steps N] [--out DIR] [--set KEY=VALUE ...]
#                            LAYOUT [LAYOUT ...]
#   LAYOUT = NAME:RANKS[:KEY=VALUE[,KEY=VALUE...]]   (recipe overrides of that layout)
#
# e.g. scripts/scaling_study.sh --steps 10 one:1 dp2:2 \
#        tp2:2:parallel.tensor_model_parallel_size=2 \
#        ep2:2:parallel.expert_model_parallel_size=2,parallel.moe_fssdp=true
# Writes DIR/<NAME>/metrics.jsonl per layout, DIR/summary.csv and DIR/summary.md (default DIR:
# runs/scaling). Ranks beyond the cores are oversubscribed with one BLAS thread each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$root/configs/demo.yaml"
steps=10
out="$root/runs/scaling"
overrides=()
layouts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --set) overrides+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "scaling_study.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) layouts+=("$1"); shift ;;
  esac
done
if [ ${#layouts[@]} -eq 0 ]; then
  echo "scaling_study.sh: no LAYOUT given (see --help)" >&2
  exit 2
fi
warmup="${WARMUP:-2}"
if [ "$steps" -le "$warmup" ]; then warmup=0; fi
bin="${MOEFOLD_BUILD_DIR:-$root/build}/launch/moefold"
[ -x "$bin" ] || "$root/scripts/build.sh" --target moefold
command -v jq >/dev/null || { echo "scaling_study.sh: needs jq (scripts/install_deps.sh)" >&2; exit 1; }

mkdir -p "$out"
csv="$out/summary.csv"
echo "layout,ranks,tokens_per_s,tflops,mfu,peak_memory_mib,step_seconds,lm_loss,grad_norm" > "$csv"
for layout in "${layouts[@]}"; do
  IFS=: read -r name ranks settings <<< "$layout"
  if [ -z "$name" ] || ! [[ "$ranks" =~ ^[1-9][0-9]*$ ]]; then
    echo "scaling_study.sh: bad LAYOUT '$layout' (want NAME:RANKS[:KEY=VALUE,...])" >&2
    exit 2
  fi
  layout_sets=()
  if [ -n "$settings" ]; then
    IFS=, read -r -a pairs <<< "$settings"
    for pair in "${pairs[@]}"; do layout_sets+=(--set "$pair"); done
  fi
  dir="$out/$name"
  rm -rf "$dir"  # metrics files are appended to: start each layout clean
  echo "== $name: $ranks rank(s) ${settings:+($settings)}"
  mpirun --allow-run-as-root --oversubscribe -np "$ranks" -x OPENBLAS_NUM_THREADS=1 \
    "$bin" train --config "$config" --set training.train_iters="$steps" \
    --set training.eval_interval=0 --set checkpoint.save= --set checkpoint.save_interval=0 \
    --set checkpoint.keep_last=0 \
    --set logging.log_interval="$steps" \
    --set logging.run_dir="$dir" --set logging.metrics_path="$dir/metrics.jsonl" \
    ${overrides[@]+"${overrides[@]}"} ${layout_sets[@]+"${layout_sets[@]}"}
  jq -rs --arg name "$name" --argjson ranks "$ranks" --argjson warmup "$warmup" '
    [.[] | select(.kind == "train")] as $all
    | ($all | .[$warmup:]) as $s
    | def mean(f): ($s | map(f) | add) / ($s | length);
      [$name, $ranks, mean(.tokens_per_s), mean(.tflops), mean(.mfu),
       ($all | map(.peak_memory_bytes) | max / 1048576), mean(.step_seconds),
       $all[-1].lm_loss, $all[-1].grad_norm]
    | @csv' "$dir/metrics.jsonl" | tr -d '"' >> "$csv"
done

{
  echo "| layout | ranks | tokens/s | TFLOP/s | MFU | peak MiB (rank 0) | s/step | final lm loss | final grad norm |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  tail -n +2 "$csv" | awk -F, '{printf "| %s | %s | %.0f | %.3f | %.1f%% | %.0f | %.3f | %.6f | %.6f |\n",
                                $1, $2, $3, $4, 100 * $5, $6, $7, $8, $9}'
} > "$out/summary.md"
cat "$out/summary.md"
echo "scaling study done: $out/summary.md, $out/summary.csv, per-layout metrics in $out/<layout>/"
