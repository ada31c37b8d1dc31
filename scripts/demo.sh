#!/usr/bin/env bash
# The main job: install what is missing, build, fetch the State of the Union corpus (once,
# cached; the trainer tokenizes it on first use), then pretrain the default demo MoE under mpirun.
#   scripts/demo.sh [extra moefold train arguments, e.g. --set training.train_iters=20]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install_deps.sh --data
scripts/build.sh --target moefold
bin="${MOEFOLD_BUILD_DIR:-$root/build}/launch/moefold"
ranks="${MOEFOLD_DEMO_RANKS:-2}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"  # one BLAS thread per rank
mpirun --allow-run-as-root --oversubscribe -np "$ranks" -x OPENBLAS_NUM_THREADS \
  "$bin" train --config configs/demo.yaml "$@"
scripts/plot_metrics runs/demo/metrics.jsonl runs/demo/plots
echo "demo done: metrics runs/demo/metrics.jsonl, plots runs/demo/plots/*.png," \
     "checkpoints runs/demo/checkpoints (resume: add --load runs/demo/checkpoints)"
