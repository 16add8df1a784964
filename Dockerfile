# edge-relay container image: build in the Rust image, run in a slim Debian
# image as a non-root user. Mount the configuration at /etc/edge-relay/config.toml
# (listen on 0.0.0.0 inside the container, e.g. listen = "0.0.0.0:3000").
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin edge-relay \
    && strip target/release/edge-relay

FROM debian:bookworm-slim
# librdkafka links OpenSSL for TLS and SASL SCRAM.
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin edge-relay \
    && mkdir -p /etc/edge-relay /var/lib/edge-relay \
    && chown edge-relay /var/lib/edge-relay
COPY --from=build /src/target/release/edge-relay /usr/local/bin/edge-relay
COPY config.toml.example /etc/edge-relay/config.toml.example
# By number: Kubernetes' runAsNonRoot can only check a numeric user, and
# refuses to start an image whose USER is a name.
USER 10001
WORKDIR /var/lib/edge-relay
# 3000: SDKs. 3001: /metrics, /healthz, /readyz.
EXPOSE 3000 3001
# The image has no curl: the relay probes its own admin port.
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/edge-relay", "probe", "--url", "http://127.0.0.1:3001/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/edge-relay"]
CMD ["run", "--config", "/etc/edge-relay/config.toml"]
