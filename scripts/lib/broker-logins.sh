# Sourced by run.sh and bench.sh: this installation's broker logins, made and provisioned.
#
# The passwords are made once, at random, kept in a file only its owner can read ($GOZON_SECRETS,
# by default ~/.config/gozon/broker.env) and reused on every start. `gozon provision-broker`
# makes the logins with rabbitmqctl — an administrator of its own (never guest) that declares
# the topology, and one login per service with the least it needs. Afterwards AMQP_URL is the
# broker's address without a login, ORDERS_AMQP_PASSWORD and PAYMENTS_AMQP_PASSWORD are
# exported, and `amqp_url_of <user> <password>` makes a role's URL.

provision_broker_logins() { # provision_broker_logins <gozon binary>
  local bin=$1 secrets=${GOZON_SECRETS:-$HOME/.config/gozon/broker.env}
  if ! command -v "${RABBITMQCTL:-rabbitmqctl}" >/dev/null 2>&1; then
    cat >&2 <<MSG
rabbitmqctl was not found, so the services' broker logins cannot be made.
GoZon does not fall back to the guest login. Install RabbitMQ's command-line tools on this
machine (Debian: rabbitmq-server), or set RABBITMQCTL to where they are, and run again.
MSG
    return 1
  fi
  if [ ! -s "$secrets" ]; then
    (
      umask 077
      mkdir -p "$(dirname "$secrets")"
      password() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
      {
        echo "# GoZon's broker passwords for this installation (made by make run; keep private)."
        echo "GOZON_ADMIN_AMQP_PASSWORD=$(password)"
        echo "ORDERS_AMQP_PASSWORD=$(password)"
        echo "PAYMENTS_AMQP_PASSWORD=$(password)"
      } > "$secrets"
    )
    echo "made this installation's broker passwords in $secrets"
  fi
  chmod 600 "$secrets"
  set -a
  # shellcheck source=/dev/null
  . "$secrets"
  set +a
  export AMQP_URL=${AMQP_URL:-amqp://127.0.0.1:5672/%2f}
  "$bin" provision-broker > /dev/null
  export AMQP_DECLARE_TOPOLOGY=false
  unset GOZON_ADMIN_AMQP_PASSWORD
}

amqp_url_of() { # amqp_url_of <user> <password>: AMQP_URL with that login
  local rest=${AMQP_URL#*://}
  echo "amqp://$1:$2@${rest#*@}"
}
