#!/usr/bin/env bash
# `make run`: the whole system in the foreground, each service on its own least-privilege broker
# login (made, with the topology, by `gozon provision-broker` through rabbitmqctl). Where
# rabbitmqctl may not be run, it says so and the services use the login of AMQP_URL.
# The passwords below are for a developer's machine; set ORDERS_AMQP_PASSWORD and
# PAYMENTS_AMQP_PASSWORD to your own anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/gozon
export ORDERS_AMQP_PASSWORD=${ORDERS_AMQP_PASSWORD:-gozon-orders-dev}
export PAYMENTS_AMQP_PASSWORD=${PAYMENTS_AMQP_PASSWORD:-gozon-payments-dev}
if $bin provision-broker; then
  export AMQP_DECLARE_TOPOLOGY=false
else
  echo "make run: cannot make the services' broker logins (rabbitmqctl); they use AMQP_URL's login" >&2
  unset ORDERS_AMQP_PASSWORD PAYMENTS_AMQP_PASSWORD
fi
exec $bin run
