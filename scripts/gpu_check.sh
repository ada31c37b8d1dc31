#!/usr/bin/env bash
# The one prepared GPU check, for a machine with one NVIDIA GPU, CUDA 13, Python with PyTorch,
# no -dev packages and no network; at most MOEFOLD_GPU_CHECK_SECONDS (590). Needs
# build-gpu/prep from scripts/gpu_prepare.sh (binaries, runtime libraries, data). Writes one
# report:
#   1. the gpu tests (every CUDA op against the CPU backend), the expert GEMMs of a step as
#      grouped cuBLAS calls against one call per expert, and the bf16 attention's flash kernels
#      against its chunked cuBLAS path;
#   2. tokens/s and MFU of configs/gpu_bench.yaml (bf16) against the device's bf16 dense peak,
#      and the same model in PyTorch eager (scripts/torch_moe_bench.py), bf16 autocast, then
#      float32 when time remains;
#   3. the demo model for N steps on the GPU (float32, then bf16) against the same steps on the
#      CPU (losses);
#   4. invariance on one GPU: the same steps with 2 ranks (data parallel, then expert parallel)
#      sharing the GPU, MPI staging, against 1 rank; the invariance suite (every layout, 2 and 4
#      ranks sharing the GPU, float32 and bf16 with the flash kernels);
#   5. a checkpoint saved on the GPU halfway and resumed, against the straight run; transformers'
#      loss on moefold's mixtral and qwen3_moe exports against moefold's;
#   6. the benchmark again for 3 steps under --kernel-profile: where the device time goes;
#   7. compute-sanitizer's memcheck and racecheck on the attention kernels' tests.
# The most wanted figures come first: a part that could end past the budget is skipped and says
# so.
#   scripts/gpu_check.sh [report-file]   (default: $OUT/gpu_check_report.txt or ./gpu_check_report.txt)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
prep="$root/build-gpu/prep"
report="${1:-${OUT:-.}/gpu_check_report.txt}"
steps="${MOEFOLD_GPU_CHECK_STEPS:-10}"
# Under $OUT when the device tool runs it, so every log and metrics file comes back with the report.
runs="${OUT:-$root/runs}/gpu_check"
mkdir -p "$(dirname "$report")" "$runs"
: >"$report"
say() { echo "$*" | tee -a "$report"; }
section() { say ""; say "== $* ($(date -u +%H:%M:%S))"; }
# The check's time budget (the device tool stops a command at 600 s; less leaves room for a
# rerun): a part that could end past it is skipped and says so.
budget="${MOEFOLD_GPU_CHECK_SECONDS:-590}"
fits() {  # fits SECONDS-NEEDED WHAT
  if ((SECONDS + $1 > budget)); then
    say "$2: skipped, ${SECONDS} s into the check (budget ${budget} s)"
    return 1
  fi
}

[ -x "$prep/bin/moefold" ] || { say "no $prep/bin/moefold: run scripts/gpu_prepare.sh first"; exit 1; }
if [ ! -d "$prep/root" ]; then
  mkdir -p "$prep/root" && tar -C "$prep/root" -xJf "$prep/runtime.tar.xz"
fi
r="$prep/root"
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
lib="$r/usr/lib/x86_64-linux-gnu"
# The carried libraries are Debian's, for moefold's binaries only: Python (PyTorch, transformers)
# keeps the machine's own.
host_ld="${LD_LIBRARY_PATH:-}"
py() { LD_LIBRARY_PATH="$host_ld" python3 "$@"; }
export LD_LIBRARY_PATH="$lib:$lib/openblas-pthread:$r/lib/x86_64-linux-gnu:$cuda_home/lib64:${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$r/usr" PMIX_INSTALL_PREFIX="$r/usr/lib/x86_64-linux-gnu/pmix2"
export PATH="$r/usr/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_mtl='^ofi,psm,psm2' OMPI_MCA_osc='^ucx'
bin="$prep/bin/moefold"
data="$prep/data/sotu_gpt2_text_document"

section "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$report"
say "moefold: $("$bin" --version 2>&1 | head -1)"

section "1. gpu tests (cuda_tests: every CUDA op against the CPU backend)"
timeout 180 "$prep/bin/cuda_tests" >"$runs/cuda_tests.log" 2>&1
say "exit $? ; $(grep -E '^\[  (PASSED|FAILED) ' "$runs/cuda_tests.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]|Failure|error' "$runs/cuda_tests.log" | head -20 | tee -a "$report"
timeout 60 "$prep/bin/moefold_bench_expert_gemm" --benchmark_min_time=0.2 \
  >"$runs/expert_gemm_bench.log" 2>&1
say "expert GEMM bench exit $? (args: experts/bf16/grouped)"
grep -E '^BM_' "$runs/expert_gemm_bench.log" | tee -a "$report"
timeout 60 "$prep/bin/moefold_bench_attention" --benchmark_min_time=0.2 \
  >"$runs/attention_bench.log" 2>&1
say "attention bench exit $? (args: seq/head_dim/flash/backward; flash 0 = chunked cuBLAS)"
grep -E '^BM_' "$runs/attention_bench.log" | tee -a "$report"

section "2. benchmark configs/gpu_bench.yaml (bf16) and PyTorch eager"
rm -rf "$runs/bench"
timeout 300 "$bin" train --config configs/gpu_bench.yaml --set logging.run_dir="$runs/bench" \
  --set data.data_path="$data" >"$runs/bench.log" 2>&1
say "moefold exit $?; $(tail -1 "$runs/bench.log")"
say "$(grep -m1 -i 'peak' "$runs/bench.log")"
# Which bf16 attention path each shape took, with both timings (the first step times both).
grep 'moefold train: attention' "$runs/bench.log" | tee -a "$report"
py - "$runs/bench/metrics.jsonl" <<'EOF' 2>&1 | tee -a "$report"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][2:]  # after 2 warm-up steps
tps = sum(r["tokens_per_s"] for r in rows) / len(rows)
tflops = sum(r["tflops"] for r in rows) / len(rows)
mfu = sum(r["mfu"] for r in rows) / len(rows)
print(f"moefold bf16: {tps:.0f} tokens/s, {tflops:.1f} TFLOP/s, MFU {100*mfu:.1f}% of the "
      f"device's bf16 dense peak (Backend::known_peak_flops), peak memory "
      f"{rows[-1]['peak_memory_bytes']/2**30:.1f} GiB, over {len(rows)} steps")
EOF
# The planner's prediction of the same run on this GPU model, beside the measurement.
case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" in
  *H200*) cluster=clusters/h200.yaml ;;
  *H100*) cluster=clusters/dgx_h100.yaml ;;
  *) cluster= ;;
esac
if [ -n "$cluster" ]; then
  say "planner ($cluster): $("$bin" plan --config configs/gpu_bench.yaml --cluster "$cluster" \
    --gpus 1 2>&1 | grep -m1 -E '^MFU|error')"
fi
for dtype in bfloat16 float32; do
  # float32 only when it leaves the sections after it their 350 s.
  if [ "$dtype" = float32 ]; then need=$((150 + 350)); else need=150; fi
  fits "$need" "pytorch $dtype" || continue
  timeout 150 env LD_LIBRARY_PATH="$host_ld" python3 scripts/torch_moe_bench.py --steps 4 --accumulate 8 --dtype "$dtype" \
    >"$runs/torch_$dtype.log" 2>&1
  say "pytorch $dtype: exit $?; $(tail -1 "$runs/torch_$dtype.log")"
done
# The demo model on the prepared data, N steps, no evaluation or checkpoints.
demo() {  # name ranks device [extra --set ...]
  local name="$1" ranks="$2" device="$3"
  shift 3
  rm -rf "${runs:?}/$name"
  timeout 240 mpirun --allow-run-as-root --oversubscribe -np "$ranks" -x LD_LIBRARY_PATH \
    -x OPAL_PREFIX -x PMIX_INSTALL_PREFIX -x OPENBLAS_NUM_THREADS "$bin" train \
    --config configs/demo.yaml --set training.device="$device" \
    --set training.train_iters="$steps" --set training.eval_interval=0 \
    --set checkpoint.save= --set checkpoint.save_interval=0 --set checkpoint.keep_last=0 \
    --set optimizer.lr_warmup_iters=2 \
    --set data.corpus= --set data.data_path="$data" \
    --set data.tokenizer_type=null --set model.vocab_size=50304 \
    --set logging.run_dir="$runs/$name" "$@" >"$runs/$name.log" 2>&1
  local status=$?
  say "$name: exit $status; $(grep -m1 -E 'error|done' "$runs/$name.log" || tail -1 "$runs/$name.log")"
}
losses() { py - "$@" <<'EOF'
import json, sys
runs = [[json.loads(l) for l in open(p) if '"train"' in l] for p in sys.argv[1:]]
a, b = runs
n = min(len(a), len(b))
diffs = [abs(x["lm_loss"] - y["lm_loss"]) for x, y in zip(a, b)]
print(f"steps compared {n}; first losses {a[0]['lm_loss']:.5f} vs {b[0]['lm_loss']:.5f}; "
      f"last {a[n-1]['lm_loss']:.5f} vs {b[n-1]['lm_loss']:.5f}; max |diff| {max(diffs):.2e}; "
      f"tokens/s {a[n-1]['tokens_per_s']:.0f} vs {b[n-1]['tokens_per_s']:.0f}")
EOF
}

section "3. demo, $steps steps: GPU against CPU (1 rank each)"
demo cpu_1rank 1 cpu
demo gpu_1rank 1 cuda
say "gpu vs cpu: $(losses "$runs/gpu_1rank/metrics.jsonl" "$runs/cpu_1rank/metrics.jsonl" 2>&1)"
# The bf16 path (tensor-core GEMMs and attention, bf16 layer kernels) against float32 on CPU:
# the losses should agree to bf16's precision.
demo gpu_1rank_bf16 1 cuda --set training.bf16=true
say "gpu bf16 vs cpu float32: $(losses "$runs/gpu_1rank_bf16/metrics.jsonl" "$runs/cpu_1rank/metrics.jsonl" 2>&1)"

section "4. invariance on one GPU: 2 ranks (DP=2) sharing it, MPI staging, against 1 rank"
demo gpu_2ranks 2 cuda --set training.share_devices=true --set parallel.communicator=mpi
say "2 ranks vs 1: $(losses "$runs/gpu_2ranks/metrics.jsonl" "$runs/gpu_1rank/metrics.jsonl" 2>&1)"

demo gpu_2ranks_ep2 2 cuda --set training.share_devices=true --set parallel.communicator=mpi \
  --set parallel.expert_model_parallel_size=2
say "EP=2 (all-to-all staged) vs 1 rank: $(losses "$runs/gpu_2ranks_ep2/metrics.jsonl" "$runs/gpu_1rank/metrics.jsonl" 2>&1)"

section "4a. the invariance suite on one GPU: every layout at 2 and 4 ranks sharing it"
# Each layout's losses and gradient norms against one GPU process, float32 and bf16 (flash).
for ranks in 2 4; do
  fits 150 "np$ranks" || continue
  timeout 150 mpirun --allow-run-as-root --oversubscribe -np "$ranks" -x LD_LIBRARY_PATH \
    -x OPAL_PREFIX -x PMIX_INSTALL_PREFIX -x OPENBLAS_NUM_THREADS -x MOEFOLD_TEST_REAL_GPU=1 \
    "$prep/bin/device_invariance" --gtest_filter='Layouts/RealGpuInvariance.*' --gtest_color=no \
    >"$runs/gpu_invariance_np$ranks.log" 2>&1
  say "np$ranks: exit $?; $(grep -E '^\[  (PASSED|FAILED) ' "$runs/gpu_invariance_np$ranks.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]|^\[rank' "$runs/gpu_invariance_np$ranks.log" | head -10 | tee -a "$report"
done

section "5. save on the GPU at step $((steps / 2)), resume, and match the straight run"
half=$((steps / 2))
demo gpu_save 1 cuda --set checkpoint.save="$runs/ckpt" --set checkpoint.save_interval="$half"
demo gpu_resume 1 cuda --set checkpoint.load="$runs/ckpt/iter_$(printf %07d "$half")"
py - "$runs/gpu_resume/metrics.jsonl" "$runs/gpu_save/metrics.jsonl" <<'EOF' 2>&1 | tee -a "$report"
import json, sys
resumed, straight = ({r["iteration"]: r["lm_loss"] for r in map(json.loads, open(p))
                      if r.get("kind") == "train"} for p in sys.argv[1:])
common = sorted(set(resumed) & set(straight))
diffs = [abs(resumed[i] - straight[i]) for i in common]
print(f"resumed steps {common[0] if common else '-'}..{common[-1] if common else '-'}: "
      f"max |lm loss diff| vs the straight run {max(diffs) if diffs else float('nan'):.2e} "
      f"(0 = exact resume)")
EOF

section "5a. transformers on moefold's exports: mixtral, and qwen3_moe with q/k norms"
# Prepared by gpu_prepare.sh (tests/interop/hf_reference_test.cpp): the loss transformers gives
# each export on a fixed batch against moefold's.
for format in mixtral qwen3_moe; do
  fits 60 "hf_check $format" || continue
  timeout 60 env LD_LIBRARY_PATH="$host_ld" python3 scripts/hf_check.py "$prep/hf_check/$format" \
    >"$runs/hf_check_$format.log" 2>&1
  say "$format: exit $?; $(tail -1 "$runs/hf_check_$format.log")"
done

section "6. kernel profile: the benchmark's kernels, copies and memsets by device time (3 steps)"
if fits 120 "kernel profile"; then
  rm -rf "$runs/bench_profiled"
  timeout 120 "$bin" train --config configs/gpu_bench.yaml --set training.train_iters=3 \
    --set logging.run_dir="$runs/bench_profiled" --set data.data_path="$data" \
    --kernel-profile "$runs/kernel_profile.txt" >"$runs/bench_profiled.log" 2>&1
  say "exit $?; $(grep -m1 -E 'error|kernel profile' "$runs/bench_profiled.log")"
  head -32 "$runs/kernel_profile.txt" 2>/dev/null | tee -a "$report"
fi

section "7. compute-sanitizer on the attention kernels: memcheck, then racecheck (shared memory)"
sanitizer="$(command -v compute-sanitizer || echo "$cuda_home/bin/compute-sanitizer")"
if [ ! -x "$sanitizer" ]; then
  say "skipped: no compute-sanitizer on this machine"
else
  for tool in memcheck racecheck; do
    fits 90 "$tool" || continue
    filter='FlashAttention.*'
    [ "$tool" = memcheck ] && filter='FlashAttention.*:CudaShapes.AttentionOverChunks*'
    timeout 90 "$sanitizer" --tool "$tool" --error-exitcode 9 "$prep/bin/cuda_tests" \
      --gtest_filter="$filter" >"$runs/sanitizer_$tool.log" 2>&1
    say "$tool: exit $? (9: errors found); $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$runs/sanitizer_$tool.log")"
    grep -m6 -E '^========= (Invalid|Error|Race|.*hazard)' "$runs/sanitizer_$tool.log" | tee -a "$report"
  done
fi

section "done"
echo "report: $report"
