#!/usr/bin/env bash
# `make compose-up`: docker-compose.yml, built and started, on this machine's Docker engine or a
# private one (scripts/compose/engine.sh), with upstream images or local stand-ins
# (scripts/compose/stand-ins.sh). Returns once every container is healthy; the last line is the
# gateway's URL. Arguments go to `up` (e.g. --scale orders=2 --scale payments=2).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

prepare
say "docker-compose up --build ($COMPOSE_PROJECT_NAME)"
compose up --build --detach "$@" >&2
wait_ready
gateway_url
