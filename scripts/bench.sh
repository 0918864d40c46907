#!/usr/bin/env bash
# `make bench`: start the release build of the whole system, run the load generator against its
# gateway with the given arguments (defaults: about a minute, closed loop), stop the system. The
# report (JSON) and a picture of the settle latency (SVG) land in bench-output/. It measures this
# machine's PostgreSQL with pgbench first, and the report gives the CPU per order of every process.
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

# This machine's PostgreSQL, measured in the same sitting before GoZon starts: single-row INSERT
# transactions, 16 clients, 10 s, in a database of the benchmark's own. The load generator then
# reports orders settled per 1,000 of those transactions — a figure that moves less between
# machines than orders/s do.
pg=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
pgbench_db=gozon_bench_pgbench
psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $pgbench_db" -c "CREATE DATABASE $pgbench_db"
psql -q "$pg/$pgbench_db" -c "CREATE TABLE inserts (id bigserial PRIMARY KEY, v integer NOT NULL)"
insert=$(mktemp)
echo "INSERT INTO inserts (v) VALUES (1);" > "$insert"
tps=$(pgbench -n -c 16 -j 2 -T 10 -f "$insert" "$pg/$pgbench_db" | awk '/^tps/ {print $3; exit}')
rm -f "$insert"
psql -q "$pg/postgres" -c "DROP DATABASE $pgbench_db"
echo "pgbench: $tps single-row INSERT transactions/s (16 clients, 10 s)"

trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true' EXIT

# The load generator signs its users up from one address.
export AUTH_SIGNUPS_PER_CLIENT=${AUTH_SIGNUPS_PER_CLIENT:-1000000}

# Each service on its own broker login, as make run has it.
. scripts/lib/broker-logins.sh
provision_broker_logins "$bin"

if [ "$instances" = 1 ]; then
  $bin run > "$log" 2>&1 &
  pids+=($!)
else
  orders_amqp=$(amqp_url_of "${ORDERS_AMQP_USER:-gozon-orders}" "$ORDERS_AMQP_PASSWORD")
  payments_amqp=$(amqp_url_of "${PAYMENTS_AMQP_USER:-gozon-payments}" "$PAYMENTS_AMQP_PASSWORD")
  unset ORDERS_AMQP_PASSWORD PAYMENTS_AMQP_PASSWORD
  env -u AMQP_URL $bin identity >> "$log" 2>&1 &
  pids+=($!)
  orders=() payments=() orders_keys=() payments_keys=()
  for i in $(seq 1 "$instances"); do
    orders+=("http://127.0.0.1:$((18100 + i))") payments+=("http://127.0.0.1:$((18200 + i))")
    orders_keys+=("http://127.0.0.1:$((18100 + i))/messaging/keys")
    payments_keys+=("http://127.0.0.1:$((18200 + i))/messaging/keys")
  done
  # Each service checks its peer's messages with the keys any of the peer's instances publishes.
  export ORDERS_MESSAGE_KEYS_URL=$(IFS=,; echo "${orders_keys[*]}")
  export PAYMENTS_MESSAGE_KEYS_URL=$(IFS=,; echo "${payments_keys[*]}")
  for i in $(seq 1 "$instances"); do
    AMQP_URL=$orders_amqp ORDERS_LISTEN_ADDR=127.0.0.1:$((18100 + i)) $bin orders >> "$log" 2>&1 &
    pids+=($!)
    AMQP_URL=$payments_amqp PAYMENTS_LISTEN_ADDR=127.0.0.1:$((18200 + i)) $bin payments >> "$log" 2>&1 &
    pids+=($!)
  done
  GATEWAY_LISTEN_ADDR=$gateway GATEWAY_ORDERS_URL=$(IFS=,; echo "${orders[*]}") \
    GATEWAY_PAYMENTS_URL=$(IFS=,; echo "${payments[*]}") env -u AMQP_URL $bin gateway >> "$log" 2>&1 &
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
./target/release/gozon-loadgen --gateway "http://$gateway" --json "$out.json" --plot "$out.svg" \
  --pgbench-tps "$tps" "$@"
echo "report: $out.json, picture: $out.svg"
