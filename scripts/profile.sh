#!/usr/bin/env bash
# `make profile`: where the CPU of an order goes. Runs `make bench`'s benchmark against a private
# PostgreSQL (its own data directory and port, with pg_stat_statements loaded — the machine's
# shared server is left alone) and the machine's RabbitMQ, samples each GoZon role with
# `perf record` while the load runs, and writes:
#   profile-output/flamegraph-<role>.svg   where each role's CPU goes (inferno's flame graphs)
#   profile-output/self-<role>.txt         the functions the samples fell in, most first
#   profile-output/statements.txt          PostgreSQL's side: per statement, calls, execution
#                                          and planning time, rows and WAL, each per order settled
# Needs perf (Debian: linux-perf) and inferno (cargo install inferno); options go to the load
# generator, e.g. scripts/profile.sh --duration 40. PROFILE_SAMPLES=0 leaves perf out: only the
# statements, measured without the sampling's own CPU (e.g. for latency at a given rate).
set -euo pipefail
cd "$(dirname "$0")/.."
samples=${PROFILE_SAMPLES:-1}
roles=(orders payments gateway)
[ "$samples" = 0 ] && roles=()
if [ "$samples" != 0 ]; then
  for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" > /dev/null || { echo "profile: $tool is missing (see the top of $0)"; exit 2; }
  done
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
out=profile-output
work=$(mktemp -d /tmp/gozon-profile-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chown postgres "$work"
as_postgres() { runuser -u postgres -- "$@"; }
as_postgres "$bindir/initdb" --auth=trust --username=postgres --no-sync -D "$work/data" > "$work/initdb.log"
as_postgres "$bindir/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w start -o \
  "-p $port -k $work -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements \
   -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on -c shared_buffers=128MB" > /dev/null
trap 'as_postgres "$bindir/pg_ctl" -D "$work/data" -m fast stop > /dev/null; rm -rf "$work"' EXIT
pg=postgres://postgres@127.0.0.1:$port
for db in gozon_identity gozon_orders gozon_payments; do
  psql -q "$pg/postgres" -c "CREATE DATABASE $db"
  psql -q "$pg/$db" -c "CREATE EXTENSION pg_stat_statements"
done
export IDENTITY_DATABASE_URL=$pg/gozon_identity ORDERS_DATABASE_URL=$pg/gozon_orders \
  PAYMENTS_DATABASE_URL=$pg/gozon_payments BENCH_PG_ADMIN_URL=$pg
# Queues of the profile's own, so that the machine's GoZon queues are left alone.
suffix=profile-$$
export ORDER_PAYMENTS_QUEUE=order.payments.$suffix PAYMENT_STATUS_QUEUE=payment.status.$suffix \
  ORDER_REFUNDS_QUEUE=order.refunds.$suffix REFUND_STATUS_QUEUE=refund.status.$suffix \
  AMQP_QUEUE_EXPIRES_MS=60000

mkdir -p "$out"
scripts/bench.sh "$@" > "$work/bench.txt" 2>&1 &
bench=$!
# Sample once the load has begun (pgbench takes ten seconds first, then sign-up).
until grep -q "acknowledged" "$work/bench.txt" 2>/dev/null; do
  kill -0 $bench 2>/dev/null || { cat "$work/bench.txt"; exit 1; }
  sleep 1
done
sleep 3
for role in "${roles[@]}"; do
  pid=$(pgrep -f "target/release/gozon $role" | sed -n 1p)
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" \
    -o "$work/perf-$role.data" -- sleep 15 2> /dev/null &
done
wait $bench || true
cat "$work/bench.txt"
sleep 1
for role in "${roles[@]}"; do
  [ -s "$work/perf-$role.data" ] || { echo "profile: no samples of $role"; continue; }
  perf script -i "$work/perf-$role.data" 2> /dev/null | inferno-collapse-perf > "$out/$role.folded" ||
    { echo "profile: perf could not read the samples of $role"; continue; }
  inferno-flamegraph --title "gozon $role under load (make profile)" < "$out/$role.folded" \
    > "$out/flamegraph-$role.svg"
  # The functions the samples were in (self time), the flame graph's top edge as a list.
  awk '{ n = $NF; $NF = ""; k = split($0, f, ";"); self[f[k]] += n; all += n }
       END { for (x in self) printf "%6.2f%%  %s\n", 100 * self[x] / all, x }' "$out/$role.folded" \
    | sort -rn | sed -n 1,25p > "$out/self-$role.txt"
done
settled=$(python3 -c 'import json,glob,sys; f=sorted(glob.glob("bench-output/bench-*.json"))[-1]; r=json.load(open(f)); print(r["finished"]+r["cancelled"]+r["refunded"])')
{
  echo "PostgreSQL statements during the run, per order settled ($settled orders)"
  for db in gozon_orders gozon_payments; do
    echo
    echo "== $db"
    # The totals first: what the machine's speed does not change.
    psql -q "$pg/$db" -P pager=off -c "
      SELECT round(sum(calls) / $settled, 2) AS statements_per_order,
             round((SELECT xact_commit FROM pg_stat_database
                    WHERE datname = current_database()) / $settled::numeric, 2) AS commits_per_order,
             round(sum(rows) / $settled, 2) AS rows_per_order,
             round(sum(wal_bytes) / $settled, 0) AS wal_bytes_per_order,
             round((sum(total_exec_time) * 1000 / $settled)::numeric, 1) AS exec_us_per_order,
             round(sum(plans) / $settled, 2) AS plans_per_order,
             round((sum(total_plan_time) * 1000 / $settled)::numeric, 1) AS plan_us_per_order
      FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    psql -q "$pg/$db" -P pager=off -c "
      SELECT round((calls::numeric / $settled), 2) AS calls_per_order,
             round((total_exec_time * 1000 / $settled)::numeric, 1) AS exec_us_per_order,
             round((total_plan_time * 1000 / $settled)::numeric, 1) AS plan_us_per_order,
             round((rows::numeric / $settled), 2) AS rows_per_order,
             round((wal_bytes / $settled)::numeric, 0) AS wal_bytes_per_order,
             left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
      FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY total_exec_time DESC LIMIT 14"
  done
} > "$out/statements.txt"
cat "$out/statements.txt"
[ "$samples" = 0 ] || echo "flame graphs: $out/flamegraph-{orders,payments,gateway}.svg"
echo "statements: $out/statements.txt"
