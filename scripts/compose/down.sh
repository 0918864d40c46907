#!/usr/bin/env bash
# `make compose-down`: stops and removes the stack's containers and network (its volumes, and
# so every order and balance, stay unless `-v` is given), then the private Docker engine if
# `make compose-up` started one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ -s "$STATE" ]; then
  resume
  # Every profile, so that down removes whatever an `up` with any of them started.
  COMPOSE_PROFILES=metrics,observability compose down "$@" >&2
  rm -f "$STATE"
fi
scripts/compose/engine.sh stop
