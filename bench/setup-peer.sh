#!/usr/bin/env bash
# Creates bench/.venv and installs the Python peer's pinned packages (bench/peer/requirements.txt):
# FastAPI, uvicorn, sentence-transformers, hnswlib and torch. Safe to run again: pip skips
# packages that are already installed at the pinned version.
#
# Usage: bench/setup-peer.sh
# Environment:
#   PYTHON           interpreter that creates the venv (default: python3)
#   TORCH_INDEX_URL  extra package index with CPU-only torch builds (default: none, PyPI only)
#
# NOTE: PyPI has no CPU-only torch for Linux x86_64. The torch 2.15.0 wheel there is the CUDA
# build (539 MB), and it declares the CUDA runtime (cuda-toolkit 13.2.2 parts, cuDNN, NCCL,
# NVSHMEM, cuSPARSELt, triton) as dependencies, so this venv takes several GB of disk. Installing
# torch with --no-deps does not help because `import torch` then fails on the missing libcublasLt.
# The CUDA build runs on the CPU when no GPU is present. Where PyTorch's own CPU index is
# reachable, set TORCH_INDEX_URL to it: pip then prefers the `2.15.0+cpu` build, which matches the
# same `torch==2.15.0` pin. That route was not tried here because only PyPI is reachable.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
venv=$bench_dir/.venv
python=${PYTHON:-python3}

if [[ ! -x $venv/bin/python ]]; then
  echo "Creating the virtual environment $venv"
  "$python" -m venv "$venv"
fi

pip_args=(--disable-pip-version-check --progress-bar off -r "$bench_dir/peer/requirements.txt")
if [[ -n ${TORCH_INDEX_URL:-} ]]; then
  pip_args+=(--extra-index-url "$TORCH_INDEX_URL")
fi

# hnswlib 0.8.0 ships only a source archive for CPython 3.11, so pip compiles it with the C++
# compiler (a minute or more).
echo "Installing the pinned packages into $venv"
"$venv/bin/python" -m pip install "${pip_args[@]}"

"$venv/bin/python" - <<'PY'
import hnswlib, fastapi, sentence_transformers, torch, uvicorn
print(
    f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}, GPU available: "
    f"{torch.cuda.is_available()}), sentence-transformers {sentence_transformers.__version__}, "
    f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, hnswlib installed"
)
PY
echo "The venv takes $(du -sh "$venv" | cut -f1) of disk"
