#!/bin/sh
# GoZon's broker in a container: RabbitMQ with the users, permissions and topology of
# definitions.json — whose users have no password there — and passwords made for this
# installation the first time it starts:
#   /var/lib/rabbitmq/gozon-admin.password   the administrator's (management UI, `gozon dlq`);
#                                            stays in the broker's own volume
#   /run/gozon/orders/amqp-password          orders' login, in a volume only orders mounts
#   /run/gozon/payments/amqp-password        payments' login, in a volume only payments mounts
# Each is made once and reused; delete a volume to make a new one. The broker is healthy only
# once the passwords are set (/tmp/gozon-provisioned). Runs as root, as the image's own
# entrypoint does, which then starts the server as the rabbitmq user.
set -eu

SERVICE_UID=10001 # the gozon image's user (Dockerfile)

# secret <file> <owner>: a random password in <file>, readable by <owner> alone; made once.
secret() {
  if [ ! -s "$1" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$1.new" && mv "$1.new" "$1")
  fi
  chown "$2" "$1"
  chmod 400 "$1"
}

secret /var/lib/rabbitmq/gozon-admin.password rabbitmq
secret /run/gozon/orders/amqp-password "$SERVICE_UID"
secret /run/gozon/payments/amqp-password "$SERVICE_UID"
rm -f /tmp/gozon-provisioned

docker-entrypoint.sh rabbitmq-server &
server=$!
trap 'kill -TERM "$server"; wait "$server"; exit' TERM INT

# rabbitmqctl as root, with the node's Erlang cookie.
ctl() { HOME=/var/lib/rabbitmq rabbitmqctl -q "$@"; }
until ctl await_startup > /dev/null 2>&1; do
  kill -0 "$server" 2> /dev/null || exit 1
  sleep 1
done
ctl change_password gozon-admin "$(cat /var/lib/rabbitmq/gozon-admin.password)"
ctl change_password gozon-orders "$(cat /run/gozon/orders/amqp-password)"
ctl change_password gozon-payments "$(cat /run/gozon/payments/amqp-password)"
touch /tmp/gozon-provisioned
echo "GoZon: broker passwords set (the administrator's: /var/lib/rabbitmq/gozon-admin.password)"

wait "$server"
