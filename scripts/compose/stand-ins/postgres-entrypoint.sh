#!/bin/sh
# The entrypoint of the PostgreSQL stand-in (Debian's postgresql-15): what GoZon's compose file
# asks of the upstream image — a cluster made on first start in PGDATA, with the
# POSTGRES_HOST_AUTH_METHOD it names, listening on every address of the container — then the
# server, as the postgres user, in the foreground.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  as_postgres initdb --username=postgres --auth-local=trust \
    --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" -D "$PGDATA" > /dev/null
  echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.auto.conf"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
