#!/usr/bin/env bash
# Installs what building and testing pi0 needs (Debian packages + numpy/pytest), idempotent.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
need=""
for p in cmake gcc make pkg-config libcjson-dev libopenblas-dev python3 python3-pip; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $need
fi
if ! python3 -c "import numpy, pytest" 2>/dev/null; then
  python3 -m pip install -q numpy pytest 2>/dev/null || python3 -m pip install -q --break-system-packages numpy pytest
fi
# nvcc is optional: the CUDA backend is built when it is found.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "note: nvcc found at /usr/local/cuda/bin; add it to PATH to build the CUDA backend"
fi
