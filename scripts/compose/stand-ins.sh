#!/usr/bin/env bash
# The images docker-compose.yml and the Dockerfile start from, by their upstream names when the
# engine has them or can pull them; otherwise local stand-ins built here from Debian packages
# (mmdebstrap), under names of their own (gozon-stand-in/…) — never under an upstream name.
#
# Prints, for compose, one VARIABLE=image line per image that is not its default:
#   GOZON_RUNTIME_IMAGE    debian:bookworm-slim     stand-in: a minimal bookworm (minbase)
#   GOZON_RUST_IMAGE       rust:1.95-bookworm       stand-in: bookworm, gcc, and this machine's
#                                                   Rust toolchain and crate cache (offline builds)
#   GOZON_POSTGRES_IMAGE   postgres:15              stand-in: Debian's postgresql-15
#   GOZON_RABBITMQ_IMAGE   rabbitmq:4.1-management  stand-in: Debian's rabbitmq-server (3.10)
#   GOZON_PROMETHEUS_IMAGE prom/prometheus:v2.55.1  stand-in: Debian's prometheus (2.42)
# Jaeger and Grafana have no Debian package and no stand-in: they run only in the
# `observability` profile, from their upstream images.
#
# Needs DOCKER_HOST set to an engine that answers (scripts/compose/engine.sh host).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=bookworm
MIRROR=${GOZON_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Nothing merely recommended, no manuals, documentation or translations in the images.
SLIM=(
  --variant=minbase
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  # A merged /usr made by mmdebstrap itself, not by the usrmerge package (which pulls in perl).
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
)

say() { printf '[compose] %s\n' "$*" >&2; }

present() { docker image inspect "$1" > /dev/null 2>&1; }

install_mmdebstrap() {
  command -v mmdebstrap > /dev/null && return
  say "installing mmdebstrap (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap > /dev/null
}

# bootstrap <image> <mmdebstrap options…> -- <docker import --change options…>
bootstrap() {
  local image=$1 options=() changes=()
  shift
  while [ "$1" != -- ]; do options+=("$1"); shift; done
  shift
  changes=("$@")
  install_mmdebstrap
  say "building the stand-in $image from Debian packages"
  mmdebstrap --quiet "${SLIM[@]}" "${options[@]}" "$SUITE" - "$MIRROR" |
    docker import "${changes[@]}" --message "GoZon stand-in, Debian $SUITE" - "$image" > /dev/null
}

build_runtime() {
  bootstrap "$1" -- \
    --change 'CMD ["bash"]'
}

build_rust() {
  local toolchain
  toolchain=$(rustc --print sysroot)
  # The toolchain without its documentation, and the crates Cargo.lock names, from this
  # machine's cache; the image builds offline.
  bootstrap "$1" --include=ca-certificates,gcc,libc6-dev \
    --customize-hook="mkdir -p \"\$1/usr/local/rust\" \"\$1/usr/local/cargo\"" \
    --customize-hook="cp -a '$toolchain/bin' '$toolchain/lib' '$toolchain/libexec' \"\$1/usr/local/rust/\"" \
    --customize-hook="cp -a '${CARGO_HOME:-$HOME/.cargo}/registry' \"\$1/usr/local/cargo/\"" \
    --customize-hook="rm -rf \"\$1/usr/local/cargo/registry/src\"" \
    -- \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV CARGO_NET_OFFLINE=true' \
    --change 'CMD ["bash"]'
}

build_postgres() {
  bootstrap "$1" --include=postgresql-15 \
    --customize-hook="rm -rf \"\$1/var/lib/postgresql/15\" \"\$1/etc/postgresql/15\"" \
    --customize-hook="install -m 755 '$HERE/stand-ins/postgres-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
    -- \
    --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'EXPOSE 5432'
}

build_rabbitmq() {
  bootstrap "$1" --include=rabbitmq-server \
    --customize-hook="rm -rf \"\$1/var/lib/rabbitmq/mnesia\"" \
    --customize-hook="install -m 755 '$HERE/stand-ins/rabbitmq-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\"" \
    -- \
    --change 'ENV RABBITMQ_LOGS=-' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["rabbitmq-server"]' \
    --change 'EXPOSE 5672 15672 15692'
}

# As the upstream image runs: /bin/prometheus (the merged /usr makes it Debian's /usr/bin/prometheus)
# as nobody, its data under /prometheus.
build_prometheus() {
  bootstrap "$1" --include=prometheus \
    --customize-hook="install -d -o 65534 -g 65534 \"\$1/prometheus\"" \
    -- \
    --change 'USER nobody' \
    --change 'WORKDIR /prometheus' \
    --change 'ENTRYPOINT ["/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    --change 'EXPOSE 9090'
}

# image <variable> <upstream> <stand-in> <builder>
image() {
  local variable=$1 upstream=$2 stand_in=$3 builder=$4
  if present "$upstream" || docker pull -q "$upstream" > /dev/null 2>&1; then
    return
  fi
  if present "$stand_in"; then
    say "$upstream cannot be pulled: using the local stand-in $stand_in"
  else
    say "$upstream cannot be pulled"
    "$builder" "$stand_in"
  fi
  echo "$variable=$stand_in"
}

image GOZON_RUNTIME_IMAGE debian:bookworm-slim gozon-stand-in/debian:bookworm-slim build_runtime
image GOZON_RUST_IMAGE rust:1.95-bookworm gozon-stand-in/rust:1.95-bookworm build_rust
image GOZON_POSTGRES_IMAGE postgres:15 gozon-stand-in/postgres:15 build_postgres
image GOZON_RABBITMQ_IMAGE rabbitmq:4.1-management gozon-stand-in/rabbitmq:3.10-management build_rabbitmq
image GOZON_PROMETHEUS_IMAGE prom/prometheus:v2.55.1 gozon-stand-in/prometheus:2.42 build_prometheus
