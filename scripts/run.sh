#!/usr/bin/env bash
# `make run`: the whole system in the foreground, each service on a broker login of its own
# (scripts/lib/broker-logins.sh: this installation's passwords, made once and kept private);
# `gozon run` hands each service its own password and no other's.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/gozon
. scripts/lib/broker-logins.sh
provision_broker_logins "$bin"
exec $bin run
