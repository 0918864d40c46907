# GoZon: one image, one binary; the compose file picks the role with the command
# (`gozon orders`, `gozon payments`, `gozon gateway`).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked -p gozon

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home gozon
COPY --from=build /src/target/release/gozon /usr/local/bin/gozon
COPY web /srv/gozon/web
# MALLOC_MMAP_THRESHOLD_: large blocks (identity's 19 MiB per Argon2 hash) go back to the system
# when freed instead of staying in a thread's arena (see crates/gozon/src/supervisor.rs).
ENV GATEWAY_UI_DIR=/srv/gozon/web \
    LOG_FORMAT=json \
    MALLOC_MMAP_THRESHOLD_=1048576
USER gozon
ENTRYPOINT ["gozon"]
