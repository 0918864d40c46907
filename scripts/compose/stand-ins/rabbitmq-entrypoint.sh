#!/bin/sh
# The entrypoint of the RabbitMQ stand-in (Debian's rabbitmq-server), under the name the
# upstream image gives its own: runs its arguments (`rabbitmq-server`) as the rabbitmq user,
# which owns the data directory.
set -eu
mkdir -p /var/lib/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq "$@"
