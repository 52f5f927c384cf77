#!/bin/sh
# picaops lab: PID 1 of the lab's PostgreSQL image. Creates the cluster on first start
# (superuser `postgres`, POSTGRES_DB if set), then runs the server in the foreground.
set -eu
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  runuser -u postgres -- initdb --pgdata="$PGDATA" --username=postgres --auth-local=trust \
    --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" --encoding=UTF8 >/dev/null
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
    runuser -u postgres -- postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB";
SQL
  fi
fi
# setpriv execs (runuser would stay as PID 1 between docker and the server).
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA"
