# syntax=docker/dockerfile:1
#
# partlog container image.
#
#   docker build -t partlog .
#   docker run --rm -p 50051:50051 -e PARTLOG_BROKER_HOST=... partlog
#
# docker-compose.yml builds this image and runs it next to a 3-node RabbitMQ
# cluster: `docker compose up --build`.

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
# The toolchain partlog is built and tested with, pinned: a new Rust release
# changes the image only when this line does.
FROM rust:1.95.0-bookworm AS builder

# The image has gcc/make (aws-lc-sys, pulled in by rustls, and zstd-sys are
# compiled from C). protoc is not needed: build.rs uses protoc-bin-vendored.
WORKDIR /src

# Dependency layer: build all dependencies against placeholder sources, so that
# editing src/ does not recompile them. Rebuilt only when the manifest, the
# lock file, build.rs, the .proto files or the patched crates change
# (patches/: the manifest's [patch.crates-io] points there, so the
# dependencies cannot be resolved without them).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY patches ./patches
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin partlog \
    && rm -rf src

# The real sources. Their mtimes may be older than the placeholder build's
# outputs, so touch them: otherwise cargo could keep the placeholder binary.
COPY . .
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin partlog \
    && install -D -m 0755 target/release/partlog /out/partlog

# ---------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 partlog \
    && useradd --system --uid 10001 --gid partlog --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin partlog \
    && install -d -o partlog -g partlog /var/lib/partlog

COPY --from=builder /out/partlog /usr/local/bin/partlog
COPY config/partlog.toml /etc/partlog/partlog.toml

# The file's default listen addresses are 127.0.0.1, unreachable from outside
# the container; listen on all interfaces instead (metrics have no
# authentication: publish 9464 only where the scraper alone reaches it).
ENV PARTLOG_SERVER_LISTEN=0.0.0.0:50051
ENV PARTLOG_METRICS_LISTEN=0.0.0.0:9464
# The offset store (sled) of consumer groups; keep it on a volume.
ENV PARTLOG_OFFSETS_DATA_DIR=/var/lib/partlog/offsets
VOLUME /var/lib/partlog

USER 10001:10001
EXPOSE 50051 9464

# Healthy while partlog's service is SERVING (NOT_SERVING while no broker node
# answers); it calls http://127.0.0.1:50051. With TLS or authentication on the
# listener, set PARTLOG_SERVER (https://...), PARTLOG_CA and
# PARTLOG_TOKEN_FILE in the container for it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["partlog", "health"]

# partlog runs as PID 1 and handles SIGTERM itself (graceful shutdown waits up
# to server.shutdown_timeout_ms, 30 s by default: give `docker stop` -t 40).
ENTRYPOINT ["partlog"]
CMD ["serve", "--config", "/etc/partlog/partlog.toml"]
