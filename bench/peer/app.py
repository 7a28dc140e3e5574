"""Python peer of attnrec for benchmarks: FastAPI, uvicorn, sentence-transformers and hnswlib.

This is the service a team would write in Python instead of attnrec, with the same model
(all-MiniLM-L6-v2, mean pooling, normalized), the same catalogue text (the `title` column), the
same HNSW settings (M=16, ef_construction=128, ef=64, inner product) and the same HTTP contract:
`POST /recommend` with `{"query": "...", "k": 10}` returns
`{"items": [{"id", "score", "title"}], "truncated": false}`, and errors use attnrec's shape
`{"error": {"code", "message", "field"}}`. `GET /ready` returns 503 until the model and index are
loaded and warmed up, then 200.

Run it with the venv from bench/setup-peer.sh, from the repository root:

    bench/.venv/bin/python bench/peer/app.py --catalog ../shared/data/homedepot/products.csv

The index is built at start-up (about as long as `attnrec index` on the same catalogue) and saved
under --cache-dir, keyed by the catalogue, the model weights and the HNSW settings, so later starts
load it in seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

REPO_ROOT = Path(__file__).resolve().parents[2]

# attnrec's defaults (config/default.toml), so both services do the same work per request.
MAX_TOKENS = 128
MAX_K = 100
DEFAULT_K = 10
MAX_QUERY_CHARS = 2000
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 64
INDEX_BATCH_SIZE = 64

log = logging.getLogger("peer")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalog",
        type=Path,
        default=REPO_ROOT.parent / "shared/data/homedepot/products.csv",
        help="catalogue CSV with a header row and the columns given by --id-field and --title-field "
        "(default: ../shared/data/homedepot/products.csv beside the repository)",
    )
    parser.add_argument("--id-field", default="id", help="column that contains the item id (default: id)")
    parser.add_argument(
        "--title-field", default="title", help="column that is embedded and returned as the title (default: title)"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO_ROOT / "models/all-MiniLM-L6-v2",
        help="model directory with config.json, tokenizer.json and model.safetensors "
        "(default: models/all-MiniLM-L6-v2 in the repository, filled by scripts/fetch-models.sh)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO_ROOT / "bench/.cache",
        help="directory for the saved HNSW index (default: bench/.cache)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18081, help="TCP port to listen on (default: 18081)")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch intra-op threads (default: the number of CPU cores this process may use)",
    )
    return parser.parse_args()


@dataclass
class Catalogue:
    ids: list[str]
    titles: list[str]


def read_catalogue(path: Path, id_field: str, title_field: str) -> Catalogue:
    """Read the id and title columns of a CSV catalogue, rejecting missing columns and duplicate ids."""
    ids: list[str] = []
    titles: list[str] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        for column in (id_field, title_field):
            if column not in (reader.fieldnames or []):
                raise SystemExit(f"{path}: missing column {column!r}; the header has {reader.fieldnames}")
        for line_number, row in enumerate(reader, start=2):
            item_id = (row[id_field] or "").strip()
            if not item_id:
                raise SystemExit(f"{path}:{line_number}: empty {id_field!r}; every item needs an id")
            if item_id in seen:
                raise SystemExit(f"{path}:{line_number}: duplicate id {item_id!r}; ids must be unique")
            seen.add(item_id)
            ids.append(item_id)
            titles.append(row[title_field] or "")
    if not ids:
        raise SystemExit(f"{path}: the catalogue has no rows")
    return Catalogue(ids, titles)


def load_model(model_dir: Path, threads: int):
    """Load all-MiniLM-L6-v2 as a sentence-transformers model: BERT, mean pooling, L2 normalization."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    torch.set_num_threads(threads)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise SystemExit(f"missing {model_dir / name}; run scripts/fetch-models.sh first")

    # The directory contains a plain BERT checkpoint without sentence-transformers' modules.json, so
    # the pipeline is assembled here. max_seq_length matches attnrec's model.max_tokens.
    transformer = Transformer(str(model_dir), max_seq_length=MAX_TOKENS)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.eval()
    return model


def index_cache_path(cache_dir: Path, catalogue_path: Path, model_dir: Path) -> Path:
    """Name the saved index by a digest of the catalogue, the model weights and the HNSW settings."""
    digest = hashlib.sha256()
    for path in (catalogue_path, model_dir / "model.safetensors"):
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    digest.update(f"M={HNSW_M},ef_construction={HNSW_EF_CONSTRUCTION},max_tokens={MAX_TOKENS}".encode())
    return cache_dir / f"peer-{digest.hexdigest()[:16]}.hnsw"


def build_or_load_index(model, catalogue: Catalogue, cache_path: Path):
    import hnswlib
    import numpy as np

    dimension = model.get_embedding_dimension()
    index = hnswlib.Index(space="ip", dim=dimension)
    if cache_path.is_file():
        index.load_index(str(cache_path), max_elements=len(catalogue.ids))
        if index.get_current_count() != len(catalogue.ids):
            raise SystemExit(
                f"{cache_path} contains {index.get_current_count()} items but the catalogue has "
                f"{len(catalogue.ids)}; delete the file to rebuild it"
            )
        log.info("index loaded from %s: %d items", cache_path, len(catalogue.ids))
    else:
        log.info("embedding %d items (batch %d)", len(catalogue.ids), INDEX_BATCH_SIZE)
        started = time.monotonic()
        index.init_index(max_elements=len(catalogue.ids), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        chunk = 4096
        for start in range(0, len(catalogue.ids), chunk):
            texts = catalogue.titles[start : start + chunk]
            vectors = model.encode(
                texts, batch_size=INDEX_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False
            )
            index.add_items(vectors.astype(np.float32), np.arange(start, start + len(texts)))
            log.info("indexed %d of %d items", start + len(texts), len(catalogue.ids))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_path.with_suffix(".part")
        index.save_index(str(partial))
        os.replace(partial, cache_path)
        log.info("index built in %.0f s and saved to %s", time.monotonic() - started, cache_path)
    index.set_ef(HNSW_EF_SEARCH)
    # One query per request, so one search thread: requests already run in parallel.
    index.set_num_threads(1)
    return index


class Recommender:
    """Model and index, loaded in a background thread so that /ready can return 503 meanwhile."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.model = None
        self.index = None
        self.catalogue: Catalogue | None = None
        # torch runs each forward pass on its own OpenMP team of --threads threads. Forward passes
        # from several request threads at once would start several teams on the same cores and
        # slow every one of them, so the peer runs one forward pass at a time.
        self.encode_lock = threading.Lock()

    def load(self, args: argparse.Namespace) -> None:
        started = time.monotonic()
        catalogue = read_catalogue(args.catalog, args.id_field, args.title_field)
        model = load_model(args.model, args.threads)
        index = build_or_load_index(model, catalogue, index_cache_path(args.cache_dir, args.catalog, args.model))
        model.encode(["warm up the encoder", "stainless steel cordless drill"] * 4, batch_size=8, show_progress_bar=False)
        self.model, self.index, self.catalogue = model, index, catalogue
        self.ready.set()
        log.info(
            "ready in %.0f s: %d items, torch threads %d", time.monotonic() - started, len(catalogue.ids), args.threads
        )

    def count_tokens(self, query: str) -> int:
        return len(self.model.tokenizer(query, add_special_tokens=True)["input_ids"])

    def recommend(self, query: str, k: int) -> dict:
        truncated = self.count_tokens(query) > MAX_TOKENS
        # sentence-transformers draws a progress bar by default when its logger is at INFO, as it is here.
        with self.encode_lock:
            vector = self.model.encode([query], batch_size=1, convert_to_numpy=True, show_progress_bar=False)
        k = min(k, len(self.catalogue.ids))
        labels, distances = self.index.knn_query(vector, k=k)
        items = [
            # hnswlib's "ip" space returns 1 - inner product as the distance.
            {"id": self.catalogue.ids[label], "score": float(1.0 - distance), "title": self.catalogue.titles[label]}
            for label, distance in zip(labels[0].tolist(), distances[0].tolist())
        ]
        return {"items": items, "truncated": truncated}


class RecommendRequest(BaseModel):
    """Body of POST /recommend, with attnrec's limits."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=MAX_QUERY_CHARS)
    k: Optional[int] = Field(default=None, ge=1, le=MAX_K)
    explain: bool = False

    @field_validator("query")
    @classmethod
    def query_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty; send text with at least one non-whitespace character")
        return value


def create_app(recommender: Recommender) -> FastAPI:
    app = FastAPI(title="attnrec Python peer")

    def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
        body = {"error": {"code": code, "message": message}}
        if field is not None:
            body["error"]["field"] = field
        return JSONResponse(status_code=status, content=body)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, "invalid_json", f"the body is not valid JSON: {first.get('msg')}")
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = ".".join(location) or None
        return error(422, "invalid_request", f"invalid {field or 'body'}: {first.get('msg')}", field)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        if not recommender.ready.is_set():
            return JSONResponse(status_code=503, content={"status": "starting", "items": 0, "device": "cpu"})
        return JSONResponse(content={"status": "ready", "items": len(recommender.catalogue.ids), "device": "cpu"})

    # A plain `def` handler: FastAPI runs it in its thread pool, so the event loop keeps accepting
    # requests while torch computes (torch releases the GIL during the forward pass).
    @app.post("/recommend")
    def recommend(request: RecommendRequest):
        if not recommender.ready.is_set():
            return error(503, "not_ready", "the service is still starting; retry after the Retry-After delay")
        if request.explain:
            return error(422, "invalid_request", "explain is not supported: the peer has no attention head", "explain")
        return recommender.recommend(request.query, request.k or DEFAULT_K)

    return app


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.catalog.is_file():
        raise SystemExit(f"catalogue not found: {args.catalog}; pass --catalog with an id,title CSV")

    recommender = Recommender()

    def load_or_exit() -> None:
        try:
            recommender.load(args)
        except BaseException:
            log.exception("loading the model or index failed; stopping")
            os._exit(1)

    threading.Thread(target=load_or_exit, name="loader", daemon=True).start()

    import uvicorn

    # One worker process: a second would load a second copy of the model and index and compete
    # for the same cores, so on a 2-core machine it adds memory without adding throughput.
    # uvicorn's access log stays on: attnrec also logs one line per request at its default level.
    uvicorn.run(create_app(recommender), host=args.host, port=args.port, workers=1)


if __name__ == "__main__":
    main()
