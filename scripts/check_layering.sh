#!/usr/bin/env bash
# Checks that dependencies point one way (DESIGN.md):
#   launch → {trainer, planner, interop} → {model, optim, data, checkpoint} → parallel → tensor
# (planner and interop read recipes through trainer's parser, so they may include trainer/)
# by the project includes of each folder, and that no file outside tensor/ includes a backend's
# kernels (tensor/cpu/, tensor/cuda/) — the layers call tensor/ops.h. Tests of the CPU kernels
# and the kernel benchmarks are the exception. Prints each violation; exits 1 if any.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

declare -A allowed=(
  [tensor]="tensor"
  [parallel]="parallel tensor"
  [model]="model parallel tensor"
  [optim]="optim parallel tensor"
  [data]="data parallel tensor"
  # Checkpoints store the model's parameters and the optimizer's moments by their layouts.
  [checkpoint]="checkpoint model optim parallel tensor"
  [trainer]="trainer model optim data checkpoint parallel tensor"
  [planner]="planner trainer model optim data checkpoint parallel tensor"
  [interop]="interop trainer model optim data checkpoint parallel tensor"
  [launch]="launch planner interop trainer model optim data checkpoint parallel tensor"
)
project_dirs="tensor parallel model optim data checkpoint trainer planner interop launch"

status=0
for dir in "${!allowed[@]}"; do
  [ -d "$dir" ] || continue
  while IFS=: read -r file line include; do
    target="${include#*\"}"
    top="${target%%/*}"
    case " $project_dirs " in *" $top "*) ;; *) continue ;; esac
    case " ${allowed[$dir]} " in
      *" $top "*) ;;
      *) echo "$file:$line: $dir/ must not include $target"; status=1 ;;
    esac
  done < <(grep -rnE '^#include "[a-z_]+/' "$dir" --include='*.h' --include='*.cpp' \
             --include='*.cu' --include='*.cuh' | sed -E 's/^([^:]+):([0-9]+):#include "([^"]+)".*/\1:\2:"\3/')
done

while IFS= read -r hit; do
  case "$hit" in
    tensor/*|tests/tensor/*|tests/bench/kernels_bench.cpp:*) ;;
    *) echo "$hit: only tensor/ may include a backend's kernels (use tensor/ops.h)"; status=1 ;;
  esac
done < <(grep -rnE '^#include "tensor/(cpu|cuda)/' --include='*.h' --include='*.cpp' \
           --include='*.cu' . | sed 's|^\./||' | grep -v '^build' || true)

[ "$status" -eq 0 ] && echo "layering: every include points down the dependency order"
exit "$status"
