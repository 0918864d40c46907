# Sourced by scripts/compose/{up,down,smoke}.sh: the engine, the compose client, the images and
# the published ports that `docker-compose.yml` is run with.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-gozon}
# The ports and images the stack was started with, for the commands that follow `up`.
STATE=${GOZON_COMPOSE_STATE:-/tmp/gozon-compose-$COMPOSE_PROJECT_NAME.env}

say() { printf '[compose] %s\n' "$*" >&2; }

# The compose client: `docker compose` where the plugin is there, else Debian's docker-compose.
compose() {
  if docker compose version > /dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

install_compose() {
  docker compose version > /dev/null 2>&1 && return
  command -v docker-compose > /dev/null && return
  say "installing docker-compose (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose > /dev/null
}

held() { [ -n "$(ss -Hltn "sport = :$1")" ]; }

# publish <variable> <default port>: the port to publish on, unless the variable names one:
# the default, or the first free one above it when another program holds it.
publish() {
  local variable=$1 port=$2
  [ -n "${!variable:-}" ] && return
  while held "$port"; do port=$((port + 1)); done
  [ "$port" = "$2" ] || say "port $2 is taken here: $variable=$port"
  export "$variable=$port"
}

# keep_ports: a stack that runs keeps the ports it was started with, unless the environment
# names others — a second `make compose-up` (to scale, say) must not find them held by the
# stack's own published ports and move them.
keep_ports() {
  [ -s "$STATE" ] && [ -n "$(compose ps -q 2> /dev/null)" ] || return 0
  local line name
  while IFS= read -r line; do
    name=${line%%=*}
    case $name in GOZON_*_PORT) [ -n "${!name:-}" ] || export "${line?}" ;; esac
  done < "$STATE"
}

# prepare: engine, client and images for the stack; the choices in $STATE.
prepare() {
  DOCKER_HOST=$(scripts/compose/engine.sh host)
  export DOCKER_HOST
  install_compose
  local images
  images=$(scripts/compose/stand-ins.sh)
  set -a
  eval "$images"
  set +a
  keep_ports
  publish GOZON_HTTP_PORT 8080
  publish GOZON_AMQP_PORT 5672
  publish GOZON_RABBITMQ_UI_PORT 15672
  publish GOZON_RABBITMQ_METRICS_PORT 15692
  publish GOZON_PROMETHEUS_PORT 9090
  {
    echo "DOCKER_HOST=$DOCKER_HOST"
    echo "$images"
    env | grep -E '^(GOZON_[A-Z_]+|COMPOSE_PROFILES)=' || true
  } > "$STATE"
}

# resume: what `prepare` chose for the stack that runs.
resume() {
  [ -s "$STATE" ] || { say "no stack started by make compose-up ($STATE is missing)"; exit 1; }
  set -a
  # shellcheck source=/dev/null
  . "$STATE"
  set +a
}

gateway_url() { echo "http://${GOZON_PUBLISH_ADDR:-127.0.0.1}:$GOZON_HTTP_PORT"; }

# wait_ready [seconds]: until every container of the stack is healthy and the gateway answers.
wait_ready() {
  local deadline=$((SECONDS + ${1:-600}))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$(gateway_url)/healthz")" = 200 ] && all_healthy; do
    if [ $SECONDS -ge $deadline ]; then
      say "the stack is not ready after ${1:-600} s:"
      compose ps >&2
      return 1
    fi
    sleep 1
  done
}

all_healthy() {
  local ids
  ids=$(compose ps -q)
  [ -n "$ids" ] || return 1
  # shellcheck disable=SC2086
  ! docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' $ids |
    grep -qvE '^(healthy|running)$'
}
