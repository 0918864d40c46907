# GoZon: one image, one binary; the compose file picks the role with the command
# (`gozon orders`, `gozon payments`, `gozon identity`, `gozon gateway`).
#
# The upstream images are build arguments: where they cannot be pulled,
# `scripts/compose/stand-ins.sh` builds local stand-ins from Debian packages under names of
# their own, and `make compose-up` passes those.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Without the line tables `make profile` reads and the symbol table (117 MB → 20 MB): a panic
# still says its message and file:line; a backtrace (RUST_BACKTRACE=1) gives addresses only.
RUN CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked -p gozon

FROM ${RUNTIME_IMAGE}
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
