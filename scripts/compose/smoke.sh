#!/usr/bin/env bash
# `make compose-smoke`: docker-compose.yml run for real and checked from the outside, then taken
# down. Each check fails the run:
#   1. up (make compose-up, with the `metrics` profile: Prometheus), timed to the first settled
#      order;
#   2. the seed's scenario through the gateway: sign up, account, deposit, an order FINISHED
#      and the balance down by it, an order too big CANCELLED for insufficient_funds;
#   3. RabbitMQ's management UI answers (its API, with the administrator's generated password);
#   4. Prometheus scrapes every service and the broker, and has the alert rules loaded;
#   5. two replicas of orders and of payments, and orders settled by both of each;
#   6. under load, an orders and a payments container killed (docker kill): the load
#      generator's audit finds nothing lost or doubled, the ledger included;
#   7. a crash (an orders process killed from the host, as the kernel's OOM killer would):
#      the engine restarts the container by itself (restart: unless-stopped);
#   8. down and up again: every order and balance of step 2 as it was (the volumes);
#   9. the memory of the whole stack at idle, and the runtime image's size;
# then down (the volumes removed: the run leaves nothing) and the private engine stopped.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

started=$SECONDS
step() { say "== $* ($((SECONDS - started)) s)"; }
fail() { say "FAILED: $*"; exit 1; }
command -v jq > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq > /dev/null

# Prometheus too: the one service of the observability stack with a stand-in everywhere.
export COMPOSE_PROFILES=${COMPOSE_PROFILES:-metrics}
# The load generator signs up hundreds of users from this one address.
export GOZON_SIGNUPS_PER_CLIENT=${GOZON_SIGNUPS_PER_CLIENT:-100000}
cleanup() {
  local status=$?
  [ $status = 0 ] || compose logs --tail 30 >&2 || true
  scripts/compose/down.sh -v || true
  exit $status
}
trap cleanup EXIT

step "1. up"
G=$(scripts/compose/up.sh)
resume
J='content-type: application/json'

# call <method> <path> [body]: the answer's status code in $CODE, its body in $BODY.
call() {
  local answer
  answer=$(curl -s -X "$1" "$G$2" -H "$J" ${AUTH:+-H "$AUTH"} ${3:+-d "$3"} -w '\n%{http_code}')
  CODE=${answer##*$'\n'}
  BODY=${answer%$'\n'*}
}
# field <jq filter> <method> <path> [body]: one field of the answer.
field() {
  local filter=$1
  shift
  call "$@"
  jq -r "$filter" <<< "$BODY"
}

# until_true <seconds> <what> <command…>
until_true() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "$what"
    sleep 0.2
  done
}

status_is() { [ "$(field .status GET "/orders/$1")" = "$2" ]; }

step "2. the seed's scenario through $G"
user="smoke-$(date +%s)"
call POST /auth/signup "{\"user_id\":\"$user\",\"password\":\"correct horse\"}"
[ "$CODE" = 201 ] || fail "sign-up answered $CODE"
token=$(jq -r .token <<< "$BODY")
AUTH="authorization: Bearer $token"
call POST /payments/accounts '{}'
[ "$CODE" = 201 ] || fail "account answered $CODE"
[ "$(field .balance POST /payments/accounts/deposit '{"amount":2000}')" = 2000 ] || fail "deposit"
call POST /orders '{"amount":1500,"description":"Gift"}'
[ "$CODE" = 201 ] || fail "the order answered $CODE"
gift=$(jq -r .id <<< "$BODY")
until_true 120 "the order FINISHED" status_is "$gift" FINISHED
say "first order settled $((SECONDS - started)) s after compose-up began"
[ "$(field .balance GET "/payments/accounts/$user/balance")" = 500 ] || fail "balance 500"
big=$(field .id POST /orders '{"amount":1000,"description":"Too much"}')
until_true 60 "the big order CANCELLED" status_is "$big" CANCELLED
[ "$(field .reason GET "/orders/$big")" = insufficient_funds ] || fail "reason"
[ "$(field .balance GET "/payments/accounts/$user/balance")" = 500 ] || fail "balance still 500"
before=$(field 'map({id, status, amount}) | tostring' GET /orders)
unset AUTH

step "3. the management UI on port $GOZON_RABBITMQ_UI_PORT"
admin=$(compose exec -T rabbitmq cat /var/lib/rabbitmq/gozon-admin.password)
code=$(curl -s -o /dev/null -w '%{http_code}' -u "gozon-admin:$admin" \
  "http://127.0.0.1:$GOZON_RABBITMQ_UI_PORT/api/overview")
[ "$code" = 200 ] || fail "the management API answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -u "guest:guest" \
  "http://127.0.0.1:$GOZON_RABBITMQ_UI_PORT/api/overview")
[ "$code" = 401 ] || fail "guest got $code from the management API"

# The address of each container of a service on the stack's network.
addresses() {
  # shellcheck disable=SC2046
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' $(compose ps -q "$1")
}
# How many of this replica's counter samples: `metric <address:port> <name>`.
metric() {
  curl -s "http://$1/metrics" | awk -v name="$2" '$1 ~ "^"name"({|$)" {sum += $2} END {print sum + 0}'
}
loadgen() {
  target/release/gozon-loadgen --gateway "$G" --quiet \
    --payments-database-url "postgres://postgres@$(addresses payments-db):5432/gozon_payments" "$@"
}

step "4. Prometheus on port $GOZON_PROMETHEUS_PORT"
prometheus() { curl -s "http://127.0.0.1:$GOZON_PROMETHEUS_PORT/api/v1/$1"; }
# Every job has a target that is up: orders, payments, identity and rabbitmq.
every_job_up() {
  [ "$(prometheus 'query?query=up' |
    jq '[.data.result[] | select(.value[1] == "1") | .metric.job] | unique | length')" = 4 ]
}
until_true 60 "every job scraped" every_job_up
rules=$(prometheus rules | jq '[.data.groups[].rules[]] | length')
say "Prometheus scrapes orders, payments, identity and rabbitmq; $rules alert rules loaded"
[ "$rules" -gt 0 ] || fail "no alert rules loaded"

step "5. two replicas of each service"
cargo build --release --locked -q -p gozon-loadgen
scripts/compose/up.sh --scale orders=2 --scale payments=2 > /dev/null
loadgen --users 20 --orders 400 --duration 60 > /dev/null || fail "the load generator's audit"
for address in $(addresses orders); do
  settled=$(metric "$address:8081" order_settle_seconds_count)
  say "orders at $address settled $settled orders"
  [ "$settled" -gt 0 ] || fail "an orders replica settled nothing"
done
for address in $(addresses payments); do
  decided=$(metric "$address:8082" payment_decisions_total)
  say "payments at $address decided $decided payments"
  [ "$decided" -gt 0 ] || fail "a payments replica decided nothing"
done

step "6. an orders and a payments container killed under load"
loadgen --users 50 --rate 50 --duration 40 --cancel-share 0.1 > /tmp/gozon-smoke-load.txt &
load=$!
# The kills land in the middle of the load: once a hundred more payments have been decided.
decided() {
  local sum=0
  for address in $(addresses payments); do sum=$((sum + $(metric "$address:8082" payment_decisions_total))); done
  echo $sum
}
mark=$(decided)
progressed() { [ "$(decided)" -ge $((mark + 100)) ]; }
until_true 60 "the load under way" progressed
for service in orders payments; do
  # sed, not head: head may exit before compose has written it all, and under pipefail the
  # client's SIGPIPE would stop the run.
  victim=$(compose ps -q "$service" | sed -n 1p)
  say "docker kill ${victim:0:12} ($service)"
  docker kill "$victim" > /dev/null
done
wait "$load" || { cat /tmp/gozon-smoke-load.txt >&2; fail "the audit after the kills"; }
grep -E 'throughput|audit' /tmp/gozon-smoke-load.txt >&2 || true
# A container stopped by `docker kill` stays stopped (the engine counts it as stopped by hand);
# up starts the replicas again.
scripts/compose/up.sh --scale orders=2 --scale payments=2 > /dev/null

step "7. a crashed container restarted by the engine"
victim=$(compose ps -q orders | sed -n 1p)
restarts() { docker inspect -f '{{.RestartCount}}' "$victim"; }
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$victim")" = healthy ]; }
before_crash=$(restarts)
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$victim")"
restarted() { [ "$(restarts)" -gt "$before_crash" ] && healthy; }
until_true 120 "the crashed orders container restarted" restarted
say "orders ${victim:0:12} crashed and was restarted by the engine: healthy again"

step "8. down and up: the orders and balances are kept"
compose down >&2
scripts/compose/up.sh > /dev/null
AUTH="authorization: Bearer $(field .token POST /auth/login "{\"user_id\":\"$user\",\"password\":\"correct horse\"}")"
after=$(field 'map({id, status, amount}) | tostring' GET /orders)
[ "$after" = "$before" ] || fail "orders before: $before, after: $after"
[ "$(field .balance GET "/payments/accounts/$user/balance")" = 500 ] || fail "the balance after down and up"
unset AUTH

step "9. idle"
sleep 10 # idle: nothing is asked of the stack
# shellcheck disable=SC2046
docker stats --no-stream --format '{{.MemUsage}}' $(compose ps -q) |
  awk '{v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v);
        total += v * (u == "GiB" ? 1024 : u == "KiB" ? 1 / 1024 : 1)}
       END {printf "[compose] the stack at idle: %.0f MiB\n", total}' >&2
docker image inspect -f '{{.Size}}' gozon:latest |
  awk '{printf "[compose] the gozon image: %.0f MB\n", $1 / 1e6}' >&2
step "all checks passed"
