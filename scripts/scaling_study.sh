#!/usr/bin/env bash
# Scaling study: trains one recipe under several layouts for the same number of steps and prints
# one table of what a scaling study compares: tokens/s, TFLOP/s, MFU and rank 0's peak memory
# (means over the steps after the first WARMUP, default 2), and the final losses, which agree
# across layouts when the global batch is the same (parallelism invariance).
#
#   scripts/scaling_study.sh [--config RECIPE] [--steps N] [--out DIR] [--set KEY=VALUE ...]
#                            [--plan [--cluster FILE]] LAYOUT [LAYOUT ...]
#   LAYOUT = NAME:RANKS[:KEY=VALUE[,KEY=VALUE...]]   (recipe overrides of that layout)
#
# e.g. scripts/scaling_study.sh --steps 10 one:1 dp2:2 \
#        tp2:2:parallel.tensor_model_parallel_size=2 \
#        ep2:2:parallel.expert_model_parallel_size=2,parallel.moe_fssdp=true
# Writes DIR/<NAME>/metrics.jsonl per layout, DIR/summary.csv and DIR/summary.md (default DIR:
# runs/scaling). Ranks beyond the cores are oversubscribed with one BLAS thread each.
# --plan adds `moefold plan`'s prediction for every layout beside the measured row (cluster file
# default clusters/this_machine.yaml; rank 0's memory is pipeline stage 0's) and plots measured
# against predicted tokens/s, MFU and memory to DIR/plan_vs_measured.png (gnuplot).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$root/configs/demo.yaml"
steps=10
out="$root/runs/scaling"
overrides=()
layouts=()
plan=0
cluster="$root/clusters/this_machine.yaml"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --set) overrides+=(--set "$2"); shift 2 ;;
    --plan) plan=1; shift ;;
    --cluster) cluster="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
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
header="layout,ranks,tokens_per_s,tflops,mfu,peak_memory_mib,step_seconds,lm_loss,grad_norm"
if [ "$plan" = 1 ]; then
  header="$header,plan_tokens_per_s,plan_mfu,plan_peak_memory_mib,plan_step_seconds"
fi
echo "$header" > "$csv"
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
    | @csv' "$dir/metrics.jsonl" | tr -d '"' | tr -d '\n' >> "$csv"
  if [ "$plan" = 1 ]; then
    "$bin" plan --config "$config" --cluster "$cluster" --gpus "$ranks" \
      ${overrides[@]+"${overrides[@]}"} ${layout_sets[@]+"${layout_sets[@]}"} --json > "$dir/plan.json"
    jq -r --argjson ranks "$ranks" '",\(.tokens_per_s_per_gpu * $ranks),\(.mfu),\(.memory_bytes_by_stage[0] / 1048576),\(.step_seconds)"' \
      "$dir/plan.json" | tr -d '\n' >> "$csv"
  fi
  echo >> "$csv"
done

if [ "$plan" = 0 ]; then
  {
    echo "| layout | ranks | tokens/s | TFLOP/s | MFU | peak MiB (rank 0) | s/step | final lm loss | final grad norm |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    tail -n +2 "$csv" | awk -F, '{printf "| %s | %s | %.0f | %.3f | %.1f%% | %.0f | %.3f | %.6f | %.6f |\n",
                                  $1, $2, $3, $4, 100 * $5, $6, $7, $8, $9}'
  } > "$out/summary.md"
else
  {
    echo "| layout | ranks | tokens/s | planned | error | MFU | planned | peak MiB (rank 0) | planned | error | final lm loss |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    tail -n +2 "$csv" | awk -F, '{printf "| %s | %s | %.0f | %.0f | %+.1f%% | %.1f%% | %.1f%% | %.0f | %.0f | %+.1f%% | %.6f |\n",
                                  $1, $2, $3, $10, 100 * ($10 / $3 - 1), 100 * $5, 100 * $11,
                                  $6, $12, 100 * ($12 / $6 - 1), $8}'
  } > "$out/summary.md"
  command -v gnuplot >/dev/null || { echo "scaling_study.sh: --plan plots need gnuplot (scripts/install_deps.sh)" >&2; exit 1; }
  gnuplot <<GNUPLOT
set terminal pngcairo size 1500,480 noenhanced
set output "$out/plan_vs_measured.png"
set datafile separator ","
set key below
set style data linespoints
set xtics rotate by -30
set grid ytics
set multiplot layout 1,3 title "measured (points) and planned (lines) per layout"
set title "tokens/s"
plot "$csv" every ::1 using 0:3:xtic(1) title "measured" with points pt 7 ps 1.5, \
     "" every ::1 using 0:10 title "planned" with linespoints pt 4
set title "MFU"
plot "$csv" every ::1 using 0:(100*\$5):xtic(1) title "measured %" with points pt 7 ps 1.5, \
     "" every ::1 using 0:(100*\$11) title "planned %" with linespoints pt 4
set title "peak memory, rank 0 (MiB)"
plot "$csv" every ::1 using 0:6:xtic(1) title "measured" with points pt 7 ps 1.5, \
     "" every ::1 using 0:12 title "planned" with linespoints pt 4
unset multiplot
GNUPLOT
fi
cat "$out/summary.md"
echo "scaling study done: $out/summary.md, $out/summary.csv, per-layout metrics in $out/<layout>/"
if [ "$plan" = 1 ]; then echo "measured against planned: $out/plan_vs_measured.png"; fi
