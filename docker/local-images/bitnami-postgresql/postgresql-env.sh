# shellcheck shell=bash
# chaoslab's stand-in for bitnami/postgresql:16: the variables the image honours, with
# Bitnami's defaults (as its postgresql-env.sh documents them), and the log helpers.
# Sourced by entrypoint.sh and run.sh. Each POSTGRESQL_X may also be given as one of
# Bitnami's aliases (POSTGRES_X, ...) or as X_FILE, a file holding the value.

log_line() { local level=$1; shift; printf 'postgresql %s %-5s ==> %s\n' "$(date +%T.%2N)" "$level" "$*" >&2; }
info() { log_line INFO "$@"; }
warn() { log_line WARN "$@"; }
error() { log_line ERROR "$@"; }
is_yes() { [[ ${1,,} =~ ^(yes|true|1)$ ]]; }

# pg_var NAME DEFAULT [ALIAS...]: export NAME as the first of NAME, ALIAS... that is set
# (or whose _FILE is readable), else DEFAULT.
pg_var() {
  local name=$1 default=$2 var file
  shift 2
  for var in "$name" "$@"; do
    file=${var}_FILE
    if [ -z "${!var:-}" ] && [ -n "${!file:-}" ] && [ -r "${!file}" ]; then
      printf -v "$var" '%s' "$(< "${!file}")"
    fi
    if [ -n "${!var:-}" ]; then
      export "$name=${!var}"
      return
    fi
  done
  export "$name=$default"
}

export POSTGRESQL_VOLUME_DIR=${POSTGRESQL_VOLUME_DIR:-/bitnami/postgresql}
pg_var POSTGRESQL_DATA_DIR "$POSTGRESQL_VOLUME_DIR/data" POSTGRES_DATA_DIR PGDATA
pg_var POSTGRESQL_PORT_NUMBER 5432 POSTGRES_PORT_NUMBER
pg_var POSTGRESQL_USERNAME postgres POSTGRES_USERNAME POSTGRES_USER POSTGRESQL_USER
pg_var POSTGRESQL_PASSWORD "" POSTGRES_PASSWORD
pg_var POSTGRESQL_DATABASE postgres POSTGRES_DATABASE POSTGRES_DB
pg_var POSTGRESQL_POSTGRES_PASSWORD "" POSTGRES_POSTGRES_PASSWORD
pg_var POSTGRESQL_REPLICATION_MODE master POSTGRES_REPLICATION_MODE
pg_var POSTGRESQL_REPLICATION_USER "" POSTGRES_REPLICATION_USER
pg_var POSTGRESQL_REPLICATION_PASSWORD "" POSTGRES_REPLICATION_PASSWORD
pg_var POSTGRESQL_MASTER_HOST "" POSTGRES_MASTER_HOST
pg_var POSTGRESQL_MASTER_PORT_NUMBER 5432 POSTGRES_MASTER_PORT_NUMBER
pg_var POSTGRESQL_CLUSTER_APP_NAME walreceiver POSTGRES_CLUSTER_APP_NAME
pg_var POSTGRESQL_NUM_SYNCHRONOUS_REPLICAS 0 POSTGRES_NUM_SYNCHRONOUS_REPLICAS
pg_var POSTGRESQL_SYNCHRONOUS_REPLICAS_MODE "" POSTGRES_SYNCHRONOUS_REPLICAS_MODE
pg_var POSTGRESQL_SYNCHRONOUS_COMMIT_MODE on POSTGRES_SYNCHRONOUS_COMMIT_MODE
pg_var POSTGRESQL_INIT_MAX_TIMEOUT 60
pg_var POSTGRESQL_PGCTLTIMEOUT 60
pg_var POSTGRESQL_SHUTDOWN_MODE fast POSTGRES_SHUTDOWN_MODE
pg_var POSTGRESQL_INITDB_ARGS "" POSTGRES_INITDB_ARGS
pg_var POSTGRESQL_INITDB_WAL_DIR "" POSTGRES_INITDB_WAL_DIR
pg_var ALLOW_EMPTY_PASSWORD no
pg_var POSTGRESQL_ALLOW_REMOTE_CONNECTIONS yes POSTGRES_ALLOW_REMOTE_CONNECTIONS
pg_var POSTGRESQL_FSYNC on POSTGRES_FSYNC
pg_var POSTGRESQL_WAL_LEVEL replica
pg_var POSTGRESQL_EXTRA_FLAGS ""
pg_var POSTGRESQL_PGHBA_REMOVE_FILTERS "" POSTGRES_PGHBA_REMOVE_FILTERS
# Bitnami's default is "pgaudit", which Debian's PostgreSQL here does not have: none by default.
pg_var POSTGRESQL_SHARED_PRELOAD_LIBRARIES "" POSTGRES_SHARED_PRELOAD_LIBRARIES
pg_var POSTGRESQL_INITSCRIPTS_USERNAME "$POSTGRESQL_USERNAME" POSTGRES_INITSCRIPTS_USERNAME
pg_var POSTGRESQL_INITSCRIPTS_PASSWORD "$POSTGRESQL_PASSWORD" POSTGRES_INITSCRIPTS_PASSWORD
# Settings written to postgresql.conf when set (client_min_messages is "error" by default, as Bitnami's).
pg_var POSTGRESQL_CLIENT_MIN_MESSAGES error POSTGRES_CLIENT_MIN_MESSAGES
for _setting in MAX_CONNECTIONS TCP_KEEPALIVES_IDLE TCP_KEEPALIVES_INTERVAL TCP_KEEPALIVES_COUNT \
                STATEMENT_TIMEOUT LOG_CONNECTIONS LOG_DISCONNECTIONS LOG_HOSTNAME LOG_LINE_PREFIX \
                LOG_TIMEZONE TIMEZONE PASSWORD_ENCRYPTION DEFAULT_TOAST_COMPRESSION; do
  pg_var "POSTGRESQL_$_setting" "" "POSTGRES_$_setting"
done
unset _setting

export POSTGRESQL_BASE_DIR=/opt/bitnami/postgresql
export POSTGRESQL_CONF_DIR=$POSTGRESQL_BASE_DIR/conf
export POSTGRESQL_MOUNTED_CONF_DIR=$POSTGRESQL_VOLUME_DIR/conf
export POSTGRESQL_CONF_FILE=$POSTGRESQL_CONF_DIR/postgresql.conf
export POSTGRESQL_PGHBA_FILE=$POSTGRESQL_CONF_DIR/pg_hba.conf
export POSTGRESQL_TMP_DIR=$POSTGRESQL_BASE_DIR/tmp
export POSTGRESQL_PID_FILE=$POSTGRESQL_TMP_DIR/postgresql.pid
export POSTGRESQL_LOG_DIR=$POSTGRESQL_BASE_DIR/logs
export POSTGRESQL_INITSCRIPTS_DIR=/docker-entrypoint-initdb.d
export POSTGRESQL_PREINITSCRIPTS_DIR=/docker-entrypoint-preinitdb.d
export POSTGRESQL_DAEMON_USER=postgres
