#!/usr/bin/env bash
# The main job: install what is missing, build, fetch and preprocess the State of the Union
# corpus (once, cached), then pretrain the default demo MoE under mpirun.
#   scripts/demo.sh [extra moefold train arguments, e.g. --set training.train_iters=20]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install_deps.sh --data
scripts/build.sh --target moefold
data_dir="${MOEFOLD_DATA_DIR:-$root/data_cache}"
bin="${MOEFOLD_BUILD_DIR:-$root/build}/launch/moefold"
prefix="$data_dir/sotu/sotu_text_document"
if [ ! -f "$prefix.idx" ] || [ ! -f "$prefix.bin" ]; then
  "$bin" preprocess --input "$data_dir/sotu/sotu.jsonl" --tokenizer gpt2 \
    --vocab-file "$data_dir/gpt2/encoder.json" --merge-file "$data_dir/gpt2/vocab.bpe" \
    --output "$prefix" --append-eod
fi
ranks="${MOEFOLD_DEMO_RANKS:-1}"
mpirun --allow-run-as-root --oversubscribe -np "$ranks" -x OPENBLAS_NUM_THREADS \
  "$bin" train --config configs/demo.yaml "$@"
