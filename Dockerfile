# syntax=docker/dockerfile:1
# meetbot worker image: one container per meeting.
#
#   docker build -t meetbot .                              # model baked in (default)
#   docker build --build-arg BAKE_MODEL=false -t meetbot . # mount the model at /models instead
#
# Runtime contract:
# non-root user, read-only root filesystem; every write goes to /data (spool
# on tmpfs, transcripts/audit/keys on volumes as the operator chooses).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config python3 python3-pip unzip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY scripts ./scripts
RUN cargo build --release --locked --bins \
 && install -D -m 0755 target/release/meetbot /out/meetbot \
 && strip --strip-debug /out/meetbot
ARG BAKE_MODEL=true
RUN if [ "$BAKE_MODEL" = "true" ]; then scripts/fetch-model /out/models/faster-whisper-tiny.en; else mkdir -p /out/models; fi

FROM debian:${DEBIAN}-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="meetbot" \
      org.opencontainers.image.description="Meeting bot worker: per-speaker transcripts, encrypted ephemeral recordings destroyed with a receipt" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/meetbot/meetbot"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 meetbot \
 && useradd --system --uid 10001 --gid meetbot --home-dir /data --shell /usr/sbin/nologin meetbot \
 && mkdir -p /data && chown meetbot:meetbot /data
COPY --from=builder /out/meetbot /usr/local/bin/meetbot
COPY --from=builder /out/models /models
ENV MEETBOT_PATHS__DATA_DIR=/data \
    MEETBOT_PATHS__SPOOL_DIR=/data/spool \
    MEETBOT_STT__MODEL_DIR=/models/faster-whisper-tiny.en
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["meetbot"]
CMD ["--help"]
