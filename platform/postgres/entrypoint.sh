#!/bin/sh
# Initialise the cluster on first start (POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB, plus
# POSTGRES_EXTRA_DBS: space-separated databases owned by the same user, e.g. "mlflow"),
# then run postgres in the foreground. Listens on $POSTGRES_LISTEN:$POSTGRES_PORT.
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${POSTGRES_EXTRA_DBS:=}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
  for db in $POSTGRES_DB $POSTGRES_EXTRA_DBS; do
    if [ "$db" != postgres ]; then
      createdb -h /run/postgresql -U "$POSTGRES_USER" -O "$POSTGRES_USER" "$db"
    fi
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "initialised $PGDATA (databases: $POSTGRES_DB $POSTGRES_EXTRA_DBS)"
fi
exec postgres -D "$PGDATA" -c listen_addresses="$POSTGRES_LISTEN" -p "$POSTGRES_PORT" \
  -k /run/postgresql
