#!/bin/bash
# chaoslab's stand-in for bitnami/postgresql:16: the server in the foreground as PID 1, with
# the configuration files of /opt/bitnami/postgresql/conf (as Bitnami's run.sh starts it);
# POSTGRESQL_EXTRA_FLAGS and the arguments are added to its options. Logs go to stderr.
set -Eeuo pipefail
# shellcheck source=postgresql-env.sh
. /opt/bitnami/scripts/postgresql-env.sh
flags=(-D "$POSTGRESQL_DATA_DIR" "--config-file=$POSTGRESQL_CONF_FILE"
       "--external_pid_file=$POSTGRESQL_PID_FILE" "--hba_file=$POSTGRESQL_PGHBA_FILE")
if [ -n "$POSTGRESQL_EXTRA_FLAGS" ]; then
  read -r -a extra <<< "$POSTGRESQL_EXTRA_FLAGS"
  flags+=("${extra[@]}")
fi
flags+=("$@")
info "** Starting PostgreSQL **"
if [ "$(id -u)" = 0 ]; then
  exec gosu "$POSTGRESQL_DAEMON_USER" postgres "${flags[@]}"
fi
exec postgres "${flags[@]}"
