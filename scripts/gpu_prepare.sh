#!/usr/bin/env bash
# Prepares the one-GPU check (scripts/gpu_check.sh) on this machine, for a GPU machine that has
# CUDA 13 (driver, cuBLAS), CMake and Python+PyTorch but none of Debian's -dev packages and no
# network. Builds moefold and the gpu tests for sm_90 (no NCCL: one GPU needs none) into
# build-gpu/, then gathers into build-gpu/prep/ (carry that folder, under 64 MiB):
#   bin/      the stripped binaries
#   runtime.tar.xz  every shared library they load that is not glibc or the CUDA toolkit's
#             cuBLAS, CUPTI (for --kernel-profile), and Open MPI's mpirun/orted with their plugins (the same files Debian's
#             packages install; gpu_check.sh unpacks them under build-gpu/prep/root and points
#             LD_LIBRARY_PATH and OPAL_PREFIX there, never into /)
#   data/     the tokenized State of the Union corpus for the demo and the benchmark
#   hf_check/ tiny mixtral and qwen3_moe exports with moefold's loss on a batch (hf_check.py)
#   scripts/gpu_prepare.sh [--no-build]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="$root/build-gpu"
prep="$build/prep"

if [ "${1:-}" != "--no-build" ]; then
  MOEFOLD_BUILD_DIR="$build" MOEFOLD_CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90 -DMOEFOLD_NCCL=OFF -DMOEFOLD_CUDA=ON" \
    scripts/build.sh --target moefold cuda_tests device_invariance moefold_bench_expert_gemm \
    moefold_bench_attention interop_tests
fi
# The demo's corpus, tokenized as `moefold train` with data.corpus: sotu tokenizes it.
if [ ! -f data_cache/sotu/sotu_gpt2_text_document.bin ]; then
  scripts/fetch_data.sh
  "$build/launch/moefold" preprocess --input data_cache/sotu/sotu.jsonl --tokenizer gpt2 \
    --output data_cache/sotu/sotu_gpt2_text_document --append-eod
fi

rm -rf "$prep"
mkdir -p "$prep/bin" "$prep/data" "$prep/stage"
for binary in "$build/launch/moefold" "$build/tests/tensor/cuda_tests" \
  "$build/tests/trainer/device_invariance" "$build/tests/bench/moefold_bench_expert_gemm" \
  "$build/tests/bench/moefold_bench_attention"; do
  strip -o "$prep/bin/$(basename "$binary")" "$binary"
done
cp data_cache/sotu/sotu_gpt2_text_document.bin data_cache/sotu/sotu_gpt2_text_document.idx \
   "$prep/data/"
# Tiny mixtral and qwen3_moe exports with a batch and moefold's loss on it, for transformers there
# (scripts/hf_check.py).
OPENBLAS_NUM_THREADS=1 MOEFOLD_HF_CHECK_OUT="$prep/hf_check" "$build/tests/interop/interop_tests" \
  --gtest_filter='HfReference.*' >"$build/hf_reference.log" 2>&1 ||
  { echo "the HfReference tests failed: $build/hf_reference.log"; exit 1; }

# Libraries: the ldd closure of the binaries and of Open MPI's programs and plugins, minus glibc
# (the host's must be used) and the CUDA toolkit's libraries (the GPU machine's match its driver).
stage="$prep/stage"
ompi_lib=/usr/lib/x86_64-linux-gnu/openmpi
files=("$prep/bin/moefold" "$prep/bin/cuda_tests" "$prep/bin/device_invariance"
       "$prep/bin/moefold_bench_expert_gemm" "$prep/bin/moefold_bench_attention"
       /usr/bin/orterun /usr/bin/orted)
# Every Open MPI plugin except the network fabrics a one-node run does not use (UCX, OFI, PSM,
# InfiniBand verbs), whose libraries are large.
mapfile -t plugins < <(find "$ompi_lib/lib/openmpi3" -name 'mca_*.so' \
  ! -name '*ucx*' ! -name '*ofi*' ! -name '*psm*' ! -name '*openib*' ! -name '*verbs*')
files+=("${plugins[@]}")
mapfile -t libs < <(for f in "${files[@]}"; do ldd "$f" 2>/dev/null; done \
  | awk '/=> \// {print $3}' | sort -u \
  | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64|libresolv)\.so' \
  | grep -vE '^/usr/local/cuda|libcuda\.so|libnvidia')
for lib in "${libs[@]}"; do
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done
# Open MPI: its programs, plugins, help texts and the PMIx plugins, at their Debian paths.
mkdir -p "$stage/usr/bin" "$stage$ompi_lib/lib/openmpi3" "$stage/usr/share"
cp -L /usr/bin/orterun /usr/bin/orted "$stage/usr/bin/"
ln -sf orterun "$stage/usr/bin/mpirun"
cp -L "${plugins[@]}" "$stage$ompi_lib/lib/openmpi3/"
cp -r /usr/share/openmpi "$stage/usr/share/"
[ -d /usr/lib/x86_64-linux-gnu/pmix2 ] && cp -r /usr/lib/x86_64-linux-gnu/pmix2 "$stage/usr/lib/x86_64-linux-gnu/"
[ -d /usr/share/pmix ] && cp -r /usr/share/pmix "$stage/usr/share/"
# CUPTI for --kernel-profile (loaded at run time, so ldd does not list it), in case the GPU
# machine's toolkit lacks it.
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
cp -L "$(find -L "$cuda_home/lib64" "$cuda_home/extras/CUPTI/lib64" -name 'libcupti.so.13' \
  2>/dev/null | head -1)" "$stage/usr/lib/x86_64-linux-gnu/"
tar -C "$stage" -cJf "$prep/runtime.tar.xz" .
rm -rf "$stage"
echo "prepared $(du -sh "$prep" | cut -f1) in $prep:"
du -sh "$prep"/* | sed 's/^/  /'
