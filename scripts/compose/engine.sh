#!/usr/bin/env bash
# A Docker engine for `make compose-*` where none answers: Debian's dockerd (package docker.io)
# with a data root, exec root, socket, bridge and address pool of its own, which touches
# nothing else on the machine:
#   - no firewall rules (--iptables=false, --ip-masq=false) and no sysctl (--ip-forward=false):
#     containers reach each other over their bridge and the host through the published ports
#     (docker-proxy listening on GOZON_PUBLISH_ADDR), and nothing beyond — builds run offline;
#   - its default bridge is ours (gozon-docker0), not docker0, and compose's networks come from
#     a pool of our own;
#   - `stop` stops it and removes the bridges it left.
#
#   engine.sh start   start it unless it runs (prints nothing)
#   engine.sh stop    stop it, if it is ours and runs
#   engine.sh host    the DOCKER_HOST of the engine to use: the one the environment names when
#                     it answers, else ours (started)
set -euo pipefail

DATA_ROOT=${GOZON_DOCKER_DATA_ROOT:-/var/lib/gozon-docker}
EXEC_ROOT=/run/gozon-docker
SOCKET=unix://$EXEC_ROOT/docker.sock
PIDFILE=$EXEC_ROOT/dockerd.pid
LOG=$DATA_ROOT/dockerd.log
BRIDGE=gozon-docker0
BRIDGE_ADDRESS=${GOZON_DOCKER_BRIDGE:-10.213.0.1/24}
POOL=${GOZON_DOCKER_POOL:-10.213.16.0/20}

say() { printf '[compose] %s\n' "$*" >&2; }

answers() { DOCKER_HOST=$1 docker version --format '{{.Server.Version}}' > /dev/null 2>&1; }

ours_runs() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2> /dev/null; }

install_engine() {
  command -v dockerd > /dev/null && command -v docker > /dev/null && return
  say "installing Docker (Debian's docker.io)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io > /dev/null
}

start() {
  ours_runs && answers "$SOCKET" && return
  install_engine
  [ "$(id -u)" = 0 ] || { say "starting a Docker engine needs root"; exit 1; }
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  if ! ip link show "$BRIDGE" > /dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip address add "$BRIDGE_ADDRESS" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  say "starting a private Docker engine ($SOCKET, data in $DATA_ROOT, log $LOG)"
  # The default pool is given twice: for the networks compose makes, and so that dockerd never
  # falls back to its built-in 172.17.0.0/16-and-up ranges.
  nohup dockerd \
    --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" --host "$SOCKET" \
    --bridge "$BRIDGE" --default-address-pool "base=$POOL,size=24" \
    --iptables=false --ip-masq=false --ip-forward=false \
    > "$LOG" 2>&1 &
  for _ in $(seq 1 60); do
    answers "$SOCKET" && return
    sleep 1
  done
  say "the engine did not answer within 60 s; its log:"
  tail -n 20 "$LOG" >&2
  exit 1
}

stop() {
  ours_runs || { remove_bridges; return; }
  local networks
  networks=$(DOCKER_HOST=$SOCKET docker network ls -q --filter driver=bridge 2> /dev/null || true)
  say "stopping the private Docker engine"
  local pid
  pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2> /dev/null || break
    sleep 1
  done
  for network in $networks; do
    ip link delete "br-${network:0:12}" 2> /dev/null || true
  done
  remove_bridges
}

remove_bridges() { ip link delete "$BRIDGE" 2> /dev/null || true; }

host() {
  local given=${DOCKER_HOST:-unix:///var/run/docker.sock}
  if answers "$given"; then
    echo "$given"
  else
    start
    echo "$SOCKET"
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  host) host ;;
  *) echo "usage: $0 start|stop|host" >&2; exit 2 ;;
esac
