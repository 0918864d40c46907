#!/usr/bin/env bash
# `make bench`: start the release build of the whole system, run the load generator against its
# gateway with the given arguments (defaults: about a minute, closed loop), stop the system.
# The system uses the local PostgreSQL and RabbitMQ like `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${GATEWAY_LISTEN_ADDR:-127.0.0.1:8080}

RUST_LOG=${RUST_LOG:-warn} ./target/release/gozon run > "${BENCH_SYSTEM_LOG:-/tmp/gozon-bench-system.log}" 2>&1 &
system=$!
trap 'kill -TERM $system 2>/dev/null; wait $system 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  curl -fs "http://$gateway/orders?user_id=bench-probe" >/dev/null 2>&1 && break
  kill -0 $system 2>/dev/null || { echo "the system exited; see its log" >&2; exit 1; }
  sleep 0.2
done
./target/release/gozon-loadgen --gateway "http://$gateway" "$@"
