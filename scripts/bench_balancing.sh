#!/usr/bin/env bash
# Expert-load balancing benchmark on the demo model (configs/demo.yaml), three runs of the same
# length and seed that differ only in how the router is balanced:
#   aux   softmax router, aux_loss (the demo's own setting, moe_aux_loss_coeff 1e-2)
#   bias  sigmoid router, aux-loss-free expert bias, no balance loss
#   none  softmax router, no balance loss and no bias
# Prints, per run, the expert-load imbalance (max/mean tokens per expert, averaged over the MoE
# layers) at a few points of training and its mean over the last quarter of the steps, then draws
# each run's plots (expert-load heat maps) with scripts/plot_metrics.
#   scripts/bench_balancing.sh [ITERS]     (default 50; BIAS_RATE=1e-2, RUNS_DIR=runs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
iters="${1:-50}"
bias_rate="${BIAS_RATE:-1e-2}"  # above the 1e-3 default so that a run this short shows the effect
runs="${RUNS_DIR:-runs}"
bin="${MOEFOLD_BUILD_DIR:-$root/build}/launch/moefold"
[ -x "$bin" ] || scripts/build.sh --target moefold

declare -A settings=(
  [aux]="--set moe.moe_router_load_balancing_type=aux_loss --set moe.moe_aux_loss_coeff=1.0e-2"
  [bias]="--set moe.moe_router_score_function=sigmoid --set moe.moe_router_enable_expert_bias=true
          --set moe.moe_router_bias_update_rate=$bias_rate
          --set moe.moe_router_load_balancing_type=none"
  [none]="--set moe.moe_router_load_balancing_type=none"
)
order=(aux bias none)

for name in "${order[@]}"; do
  dir="$runs/bal_$name"
  rm -rf "$dir"  # the metrics file is appended to; start each run clean
  echo "== $name: $iters iterations into $dir"
  # shellcheck disable=SC2086  # the settings are whitespace-separated arguments on purpose
  mpirun --allow-run-as-root -np 1 -x OPENBLAS_NUM_THREADS=1 "$bin" train \
    --config configs/demo.yaml --set training.train_iters="$iters" \
    --set training.eval_interval=0 --set logging.log_interval=10 \
    --set logging.run_dir="$dir" ${settings[$name]}
done

# Imbalance of one iteration = mean over MoE layers of max/mean tokens per expert; "worst" is
# the largest over the layers.
summary() {
  jq -rs --argjson n "$iters" '
    [.[] | select(.kind == "train")
         | {i: .iteration, imb: ([.moe[].max_over_mean] | add / length),
            worst: ([.moe[].max_over_mean] | max), lm: .lm_loss}] as $r
    | def at($k): (first($r[] | select(.i == $k) | .imb) // null);
      ($r | map(select(.i > $n - ([1, ($n / 4 | floor)] | max)))) as $tail
    | [at(1), at(($n / 4 | floor)), at(($n / 2 | floor)), at($n),
       ($tail | map(.imb) | add / length), ($tail | map(.worst) | add / length), ($r[-1].lm)]
    | map(if . == null then "-" else (. * 1000 | round / 1000) end) | @tsv' "$1"
}

printf '\n%-6s %8s %8s %8s %8s %14s %14s %8s\n' run "it 1" "it $((iters / 4))" "it $((iters / 2))" \
  "it $iters" "last 1/4 mean" "last 1/4 worst" "lm loss"
for name in "${order[@]}"; do
  read -r a b c d tail worst lm < <(summary "$runs/bal_$name/metrics.jsonl")
  printf '%-6s %8s %8s %8s %8s %14s %14s %8s\n' "$name" "$a" "$b" "$c" "$d" "$tail" "$worst" "$lm"
done
echo "(max/mean tokens per expert of the global batch, mean over the MoE layers; 'worst' = the"
echo " most imbalanced layer; 1.0 = perfectly balanced)"

for name in "${order[@]}"; do
  scripts/plot_metrics "$runs/bal_$name/metrics.jsonl" "$runs/bal_$name/plots"
done
