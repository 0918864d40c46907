#!/usr/bin/env bash
# `make bench-grown`: the benchmark against databases that already hold GROWN_ORDERS orders
# (default 10 million; scripts/grown/*.sql: 30 days of a shop's orders, payments, ledger, history,
# and what retention leaves of the idempotency keys and the inbox), to show that tables and indexes
# that grow do not slow the hot path. The databases (gozon_grown_*) are made and filled once, then
# reused: each run adds only its own orders. GROWN_RESEED=1 makes them again (GROWN_DATABASE_PREFIX
# names them). Arguments go to the
# load generator, as with `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
orders=${GROWN_ORDERS:-10000000}
prefix=${GROWN_DATABASE_PREFIX:-gozon_grown}
export IDENTITY_DATABASE_URL=$pg/${prefix}_identity
export ORDERS_DATABASE_URL=$pg/${prefix}_orders
export PAYMENTS_DATABASE_URL=$pg/${prefix}_payments

# A filling that finished marks each database with a comment naming the orders it holds (the
# retention sweeps of later runs delete the oldest keys and inbox ids, so those cannot tell).
mark="gozon grown: $orders orders"
filled() {
  local db comment
  for db in orders payments; do
    comment=$(psql -qtA "$pg/${prefix}_$db" -c \
      "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()" \
      2>/dev/null || true)
    if [ "$comment" != "$mark" ]; then
      echo "${prefix}_$db is not filled with $orders orders (its mark: '${comment:-none}')"
      return 1
    fi
  done
}

if [ "${GROWN_RESEED:-0}" = 1 ] || ! filled; then
  for db in identity orders payments; do
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS ${prefix}_$db WITH (FORCE)" \
      -c "CREATE DATABASE ${prefix}_$db"
  done
  # The services make their tables at start.
  log=/tmp/gozon-grown-migrate.log
  ./target/release/gozon run > "$log" 2>&1 &
  system=$!
  for _ in $(seq 1 300); do
    migrated=$(psql -qtA "$pg/${prefix}_payments" -c "SELECT to_regclass('ledger') IS NOT NULL" 2>/dev/null || true)
    ordered=$(psql -qtA "$pg/${prefix}_orders" -c "SELECT to_regclass('order_events') IS NOT NULL" 2>/dev/null || true)
    [ "$migrated" = t ] && [ "$ordered" = t ] && break
    sleep 0.2
  done
  kill -TERM $system; wait $system || true
  echo "filling ${prefix}_orders and ${prefix}_payments with $orders orders (takes a while)"
  anchor=$(psql -qtA "$pg/postgres" -c "SELECT now()")
  time psql -q -v orders="$orders" -v anchor="$anchor" -f scripts/grown/orders.sql "$ORDERS_DATABASE_URL" &
  filling_orders=$!
  time psql -q -v orders="$orders" -v anchor="$anchor" -f scripts/grown/payments.sql "$PAYMENTS_DATABASE_URL" &
  filling_payments=$!
  wait $filling_orders && wait $filling_payments || { echo "filling failed" >&2; exit 1; }
  for db in orders payments; do
    psql -q "$pg/${prefix}_$db" -c "COMMENT ON DATABASE ${prefix}_$db IS '$mark'"
  done
fi
# Each run leaves dead rows behind (the outbox's sent rows, retention's deletes, the settled
# orders' old versions); a reused database is vacuumed before the next run, as autovacuum would
# have done meanwhile — on a server running without it (this project's CI machines) nothing else
# would, and the runs would measure the earlier runs' leftovers instead of growth.
for db in orders payments; do
  psql -q "$pg/${prefix}_$db" -c "VACUUM (ANALYZE)"
  psql -qtA "$pg/${prefix}_$db" -c \
    "SELECT '${prefix}_$db: ' || pg_size_pretty(pg_database_size(current_database()))"
done
psql -qtA "$ORDERS_DATABASE_URL" -c "SELECT 'orders: ' || count(*) FROM orders"
exec scripts/bench.sh "$@"
