#!/bin/bash
# The replica bootstraps itself the brief's way: when its data directory is empty,
# pg_basebackup -R -X stream from the primary, with a replication slot.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  export PGPASSWORD="$REPLICATION_PASSWORD"
  until pg_isready -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -q; do sleep 1; done
  gosu postgres pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" \
    -D "$PGDATA" -R -X stream -C -S db_replica -c fast
fi
exec docker-entrypoint.sh "$@"
