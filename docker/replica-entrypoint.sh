#!/bin/bash
# The replica bootstraps itself the brief's way: when its data directory is empty,
# pg_basebackup -R -X stream from the primary, with a replication slot; then the
# image's own entrypoint starts it (a standby, since -R wrote standby.signal).
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  /lab/lab-node.sh clone "$PRIMARY_HOST" "$PRIMARY_PORT" "${REPLICATION_SLOT:-db_replica}"
fi
exec docker-entrypoint.sh "$@"
