# One image, one `callguard` binary, every role: the agent (`run`), the mocks
# (`mocks`), the standalone health server (`health-server`) and the container
# health checks (`healthcheck`). docker-compose.yml runs them all.
#
#   docker build -t callguard:local .
#   docker run --rm callguard:local simulate --time-scale 0.1
#
# Dependencies are built in a layer of their own (cargo-chef), so a change to
# the workspace's code rebuilds only the workspace's crates. The builder and
# the runtime are both Debian bookworm, so the binary finds the glibc it was
# linked against.
#
# No `# syntax=` line: it makes BuildKit pull a frontend image, and the
# frontend built into BuildKit reads this file as well as the classic builder
# does, so it builds on an engine that has its FROM images and no registry.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /build

# The recipe: manifests and lock file only, so it changes only when they do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        --package callguard-agent --bin callguard
COPY . .
RUN cargo build --release --locked --package callguard-agent --bin callguard \
    && install -D -m 0755 target/release/callguard /out/callguard

FROM debian:bookworm-slim AS runtime
# CA certificates for the real services (ElevenLabs, OpenAI, SMTP over TLS,
# Telegram). bash, which the mocks' health check in docker-compose.yml uses,
# comes with the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 callguard \
    && useradd --system --uid 10001 --gid callguard \
        --home-dir /var/lib/callguard --create-home --shell /usr/sbin/nologin callguard
COPY --from=builder /out/callguard /usr/local/bin/callguard
USER callguard:callguard
# Logs (logs/callguard.jsonl) and a SQLite call store land here.
WORKDIR /var/lib/callguard
# 50051: gRPC health and breakers (agent, health-server); 8080: the mocks.
EXPOSE 50051 8080
ENTRYPOINT ["callguard"]
CMD ["--help"]
