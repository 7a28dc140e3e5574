"""Measure sentence-transformers encoder throughput and single-query latency on the CPU.

The Python counterpart of `cargo bench --bench encoder`. It uses the same model
(all-MiniLM-L6-v2 with mean pooling) and the same texts: catalogue-like words cut to exactly 16 or
64 tokens, [CLS] and [SEP] included. The batch sizes (1, 8, 32, 128) and the single query are the
same too. It prints a Markdown table with two figures per case:
- `forward`: pre-tokenized tensors through BERT, mean pooling and normalization, the work that
  the criterion bench measures (it also starts from tokenized texts);
- `encode()`: `SentenceTransformer.encode` on strings, tokenization included, which is what a
  service written with sentence-transformers calls.

When criterion results exist (default target/criterion, written by `cargo bench --bench encoder`),
the table adds attnrec's figures and the attnrec/peer ratio of throughput.

Run from the repository root with the venv from bench/setup-peer.sh:

    bench/.venv/bin/python bench/encoder_peer.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The same words, repeated and cut, that benches/encoder.rs tokenizes.
WORDS = "stainless steel cordless drill with two batteries and a carrying case for home repair "
SINGLE_QUERY = "i want a pair of nike running shoes"
MAX_TOKENS = 128


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models/all-MiniLM-L6-v2",
                        help="model directory with config.json, tokenizer.json and model.safetensors")
    parser.add_argument("--batches", default="1,8,32,128", help="comma-separated batch sizes (default: 1,8,32,128)")
    parser.add_argument("--lengths", default="16,64",
                        help="comma-separated text lengths in tokens, [CLS] and [SEP] included (default: 16,64)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0,
                        help="time spent before measuring each case, in seconds (default: 2, as the criterion bench)")
    parser.add_argument("--measure-seconds", type=float, default=8.0,
                        help="time spent measuring each case, in seconds (default: 8, as the criterion bench)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch intra-op threads (default: the number of CPU cores this process may use)")
    parser.add_argument("--criterion-dir", type=Path, default=REPO_ROOT / "target/criterion",
                        help="criterion output of `cargo bench --bench encoder` to compare with (default: target/criterion)")
    return parser.parse_args()


def text_of_length(tokenizer, tokens: int) -> str:
    """Return a text that tokenizes to exactly `tokens` ids, [CLS] and [SEP] included.

    benches/encoder.rs keeps the first `tokens - 1` ids of the tokenized repeated words and appends
    [SEP], which is what truncation to `tokens` does here. The peer needs a string for encode(), so
    it decodes those ids back to text and checks that the text tokenizes to the same count.
    """
    ids = tokenizer(WORDS * tokens, add_special_tokens=True, truncation=True, max_length=tokens)["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    count = len(tokenizer(text, add_special_tokens=True)["input_ids"])
    if count != tokens:
        raise SystemExit(f"built a {tokens}-token text but it tokenizes to {count} tokens: {text!r}")
    return text


def time_case(run, warmup_seconds: float, measure_seconds: float) -> list[float]:
    """Run `run` repeatedly for the warm-up time, then for the measuring time, and return the measured durations."""
    deadline = time.perf_counter() + warmup_seconds
    while time.perf_counter() < deadline:
        run()
    durations = []
    deadline = time.perf_counter() + measure_seconds
    while time.perf_counter() < deadline or len(durations) < 3:
        started = time.perf_counter()
        run()
        durations.append(time.perf_counter() - started)
    return durations


def read_criterion_mean(criterion_dir: Path, *parts: str) -> tuple[float, float] | None:
    """Return criterion's mean time per iteration in seconds and the file's modification time, if present."""
    path = criterion_dir.joinpath(*parts, "new", "estimates.json")
    if not path.is_file():
        return None
    estimates = json.loads(path.read_text())
    return estimates["mean"]["point_estimate"] / 1e9, path.stat().st_mtime


def format_ratio(attnrec: float | None, peer: float) -> str:
    return "" if attnrec is None else f"{attnrec / peer:.2f}"


def main() -> None:
    args = parse_args()
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    torch.set_num_threads(args.threads)
    transformer = Transformer(str(args.model), max_seq_length=MAX_TOKENS)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.eval()
    tokenizer = model.tokenizer

    batches = [int(value) for value in args.batches.split(",")]
    lengths = [int(value) for value in args.lengths.split(",")]
    criterion_times: list[float] = []

    header = ("| case | peer forward (sentences/s) | peer encode() (sentences/s) "
              "| attnrec (sentences/s) | attnrec / peer forward |")
    print(f"Encoder on the CPU, torch {torch.__version__}, {args.threads} threads, "
          f"{args.warmup_seconds:g} s warm-up and {args.measure_seconds:g} s per case; "
          "figures are means over the measured iterations. A throughput ratio above 1 and a latency "
          "ratio below 1 mean that attnrec is faster.\n")
    print(header)
    print("|---|---:|---:|---:|---:|")
    for tokens in lengths:
        text = text_of_length(tokenizer, tokens)
        for batch in batches:
            texts = [text] * batch
            features = model.preprocess(texts)

            def forward() -> None:
                with torch.inference_mode():
                    model(features)

            def encode() -> None:
                model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)

            forward_rate = batch / statistics.fmean(time_case(forward, args.warmup_seconds, args.measure_seconds))
            encode_rate = batch / statistics.fmean(time_case(encode, args.warmup_seconds, args.measure_seconds))
            criterion = read_criterion_mean(args.criterion_dir, "encoder", f"{tokens}_tokens", str(batch))
            attnrec_rate = None
            if criterion is not None:
                attnrec_rate = batch / criterion[0]
                criterion_times.append(criterion[1])
            attnrec_cell = "" if attnrec_rate is None else f"{attnrec_rate:,.0f}"
            print(f"| {tokens} tokens, batch {batch} | {forward_rate:,.0f} | {encode_rate:,.0f} "
                  f"| {attnrec_cell} | {format_ratio(attnrec_rate, forward_rate)} |", flush=True)

    query_tokens = len(tokenizer(SINGLE_QUERY)["input_ids"])
    durations = time_case(lambda: model.encode([SINGLE_QUERY], batch_size=1, convert_to_numpy=True,
                                               show_progress_bar=False),
                          args.warmup_seconds, args.measure_seconds)
    mean_ms = statistics.fmean(durations) * 1000
    median_ms = statistics.median(durations) * 1000
    criterion = read_criterion_mean(args.criterion_dir, "single_query_latency")
    print(f"\n| single query ({query_tokens} tokens) | peer encode() mean (ms) | peer encode() median (ms) "
          "| attnrec mean (ms) | attnrec / peer mean |")
    print("|---|---:|---:|---:|---:|")
    attnrec_ms = None
    if criterion is not None:
        attnrec_ms = criterion[0] * 1000
        criterion_times.append(criterion[1])
    attnrec_cell = "" if attnrec_ms is None else f"{attnrec_ms:.2f}"
    print(f"| `{SINGLE_QUERY}` | {mean_ms:.2f} | {median_ms:.2f} | {attnrec_cell} "
          f"| {format_ratio(attnrec_ms, mean_ms)} |")

    if criterion_times:
        oldest = datetime.fromtimestamp(min(criterion_times)).isoformat(timespec="seconds")
        print(f"\nattnrec figures: criterion mean estimates from {args.criterion_dir}, oldest written {oldest}. "
              "attnrec's forward includes its attention pooling head (untrained: mean pooling).")
    else:
        print(f"\nNo criterion results in {args.criterion_dir}; run `cargo bench --bench encoder` to compare.")


if __name__ == "__main__":
    main()
