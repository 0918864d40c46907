#!/usr/bin/env bash
# `make bench`: start the release build of the whole system, run the load generator against its
# gateway with the given arguments (defaults: about a minute, closed loop), stop the system. The
# report (JSON) and a picture of the settle latency (SVG) land in bench-output/.
# BENCH_INSTANCES=2 runs two instances of each service behind the one gateway.
# The system uses the local PostgreSQL and RabbitMQ like `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${GATEWAY_LISTEN_ADDR:-127.0.0.1:8080}
instances=${BENCH_INSTANCES:-1}
log=${BENCH_SYSTEM_LOG:-/tmp/gozon-bench-system.log}
export RUST_LOG=${RUST_LOG:-warn}
bin=./target/release/gozon
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true' EXIT

if [ "$instances" = 1 ]; then
  $bin run > "$log" 2>&1 &
  pids+=($!)
else
  $bin identity >> "$log" 2>&1 &
  pids+=($!)
  orders=() payments=()
  for i in $(seq 1 "$instances"); do
    ORDERS_LISTEN_ADDR=127.0.0.1:$((18100 + i)) $bin orders >> "$log" 2>&1 &
    pids+=($!)
    PAYMENTS_LISTEN_ADDR=127.0.0.1:$((18200 + i)) $bin payments >> "$log" 2>&1 &
    pids+=($!)
    orders+=("http://127.0.0.1:$((18100 + i))") payments+=("http://127.0.0.1:$((18200 + i))")
  done
  GATEWAY_LISTEN_ADDR=$gateway GATEWAY_ORDERS_URL=$(IFS=,; echo "${orders[*]}") \
    GATEWAY_PAYMENTS_URL=$(IFS=,; echo "${payments[*]}") $bin gateway >> "$log" 2>&1 &
  pids+=($!)
fi

# Every service answers through the gateway (anonymous calls get 401: an answer).
probes=("http://$gateway/auth/jwks.json" "http://$gateway/orders" "http://$gateway/payments/accounts/bench-probe/balance")
for _ in $(seq 1 300); do
  ready=1
  for probe in "${probes[@]}"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "$probe" || true)
    [ "$status" = 200 ] || [ "$status" = 401 ] || ready=0
  done
  [ $ready = 1 ] && break
  sleep 0.2
done
# The report as JSON and the settle latency as a picture, beside each other.
out=bench-output/bench-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench-output
./target/release/gozon-loadgen --gateway "http://$gateway" --json "$out.json" --plot "$out.svg" "$@"
echo "report: $out.json, picture: $out.svg"
