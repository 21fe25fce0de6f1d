#!/bin/bash
# Operations on a PostgreSQL node's data directory, run inside a container that has
# the node's volume (the node's own container at first boot, or a one-off container
# of the compose backend while the node is stopped):
#
#   lab-node.sh clone  HOST PORT SLOT   empty $PGDATA, then pg_basebackup -R -X stream
#                                       from HOST with the replication slot SLOT
#   lab-node.sh rewind HOST PORT SLOT   pg_rewind this old primary onto HOST, then make
#                                       it a standby of HOST through SLOT
#
# Credentials come from the same variables as the compose file's (POSTGRES_USER,
# POSTGRES_PASSWORD, REPLICATION_USER, REPLICATION_PASSWORD). Every wait has a deadline.
set -euo pipefail
action=${1:?usage: lab-node.sh clone|rewind HOST PORT SLOT}
host=${2:?host}
port=${3:?port}
slot=${4:?slot}
deadline=${LAB_WAIT_SECONDS:-60}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then gosu postgres "$@"; else "$@"; fi
}

# A libpq connection-string value: quoted, with \ and ' escaped.
conninfo_value() {
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\\\'}"
}

wait_for_source() {
  local waited=0
  until pg_isready -q -h "$host" -p "$port"; do
    if [ "$waited" -ge "$deadline" ]; then
      echo "lab-node.sh: $host:$port did not accept connections within ${deadline}s" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

prepare_pgdata() {
  mkdir -p "$PGDATA"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA"; fi
  chmod 700 "$PGDATA"
}

case "$action" in
  clone)
    wait_for_source
    prepare_pgdata
    find "$PGDATA" -mindepth 1 -delete
    export PGPASSWORD="$REPLICATION_PASSWORD"
    # A slot left by an earlier clone of this node would make -C fail; an active one
    # (another standby streaming through it) is kept, and the clone then says why.
    as_postgres pg_receivewal -h "$host" -p "$port" -U "$REPLICATION_USER" --drop-slot -S "$slot" 2>/dev/null || true
    as_postgres pg_basebackup -h "$host" -p "$port" -U "$REPLICATION_USER" -D "$PGDATA" \
      -R -X stream -C -S "$slot" -c fast
    ;;
  rewind)
    wait_for_source
    prepare_pgdata
    source="host=$host port=$port dbname=postgres user=$(conninfo_value "$POSTGRES_USER")"
    source="$source password=$(conninfo_value "$POSTGRES_PASSWORD")"
    # A killed node needs crash recovery first. pg_rewind would run it, but without the
    # node's command-line settings, and would then find wal_log_hints off: run it here.
    state=$(as_postgres pg_controldata "$PGDATA" | sed -n 's/^Database cluster state: *//p')
    case "$state" in
      "shut down"|"shut down in recovery") ;;
      *)
        echo "lab-node.sh: cluster state is '$state': crash recovery in single-user mode"
        as_postgres postgres --single -F -c wal_log_hints=on -D "$PGDATA" template1 < /dev/null
        ;;
    esac
    as_postgres pg_rewind --target-pgdata "$PGDATA" --source-server "$source" --progress
    # pg_rewind copied the source's postgresql.auto.conf: point it at the source instead.
    auto="$PGDATA/postgresql.auto.conf"
    primary="host=$host port=$port user=$(conninfo_value "$REPLICATION_USER")"
    primary="$primary password=$(conninfo_value "$REPLICATION_PASSWORD")"
    {
      grep -vE '^\s*(primary_conninfo|primary_slot_name)\s*=' "$auto" 2>/dev/null || true
      printf "primary_conninfo = '%s'\n" "${primary//\'/\'\'}"
      printf "primary_slot_name = '%s'\n" "$slot"
    } > "$auto.new"
    mv "$auto.new" "$auto"
    touch "$PGDATA/standby.signal"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$auto" "$PGDATA/standby.signal"; fi
    ;;
  *)
    echo "lab-node.sh: unknown action $action (clone or rewind)" >&2
    exit 2
    ;;
esac
