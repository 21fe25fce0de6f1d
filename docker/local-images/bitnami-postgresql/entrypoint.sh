#!/bin/bash
# chaoslab's stand-in for the entrypoint of bitnami/postgresql:16, on Debian's PostgreSQL 15.
# Written for this project from the behaviour of Bitnami's scripts (postgresql/setup.sh and
# libpostgresql.sh: postgresql_validate, postgresql_initialize, postgresql_master_init_db,
# postgresql_slave_init_db, postgresql_configure_recovery, ...); none of their code. When the
# command is run.sh (the default), each start:
#  - checks the variables as postgresql_validate does (POSTGRESQL_PASSWORD is required unless
#    ALLOW_EMPTY_PASSWORD=yes; a slave needs POSTGRESQL_MASTER_HOST and a replication user;
#    a replication user needs a password);
#  - writes pg_hba.conf: trust for everyone over TCP, the socket and loopback, then every
#    "trust" becomes "md5" when POSTGRESQL_PASSWORD is set (so the socket asks for a password
#    too), plus "host replication all" lines on a master that has a replication user;
#  - with an empty data directory, a master runs initdb (superuser "postgres", no password),
#    creates POSTGRESQL_DATABASE, and either gives postgres POSTGRESQL_PASSWORD (when
#    POSTGRESQL_USERNAME is postgres) or creates POSTGRESQL_USERNAME with LOGIN CREATEDB (not a
#    superuser), owner of the database and its public schema, and gives postgres
#    POSTGRESQL_POSTGRES_PASSWORD if set; then the replication role (REPLICATION LOGIN).
#    A slave waits for the master to accept connections, then clones it with pg_basebackup
#    -X stream, each within POSTGRESQL_INIT_MAX_TIMEOUT seconds;
#  - a slave streams from the master (primary_conninfo, standby.signal), at every start;
#  - runs /docker-entrypoint-preinitdb.d/*.sh at every start, /docker-entrypoint-initdb.d/
#    (*.sh, *.sql, *.sql.gz) once per volume;
#  - listens on every address once the initialisation is over.
# As root, it runs the server as the postgres user (uid 1001). Any other command runs as is.
set -Eeuo pipefail
# shellcheck source=postgresql-env.sh
. /opt/bitnami/scripts/postgresql-env.sh

if [[ "$*" != *"/opt/bitnami/scripts/postgresql/run.sh"* ]]; then
  exec "$@"
fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$POSTGRESQL_DATA_DIR"
  find "$POSTGRESQL_VOLUME_DIR" "$POSTGRESQL_BASE_DIR/" /var/run/postgresql \! -user "$POSTGRESQL_DAEMON_USER" \
    -exec chown -h "$POSTGRESQL_DAEMON_USER:root" {} +
  exec gosu "$POSTGRESQL_DAEMON_USER" "$0" "$@"
fi

DATA=$POSTGRESQL_DATA_DIR CONF=$POSTGRESQL_CONF_FILE HBA=$POSTGRESQL_PGHBA_FILE
INIT_LOG=$POSTGRESQL_TMP_DIR/init.log
info "chaoslab stand-in for bitnami/postgresql:16, not Bitnami's image: $(postgres --version)"

# -- postgresql_validate ----------------------------------------------------------------------
validate() {
  local errors=0
  fail() { error "$1"; errors=1; }
  empty_password() {
    fail "The $1 environment variable is empty or not set. Set the environment variable ALLOW_EMPTY_PASSWORD=yes to allow the container to be started with blank passwords. This is recommended only for development."
  }
  if is_yes "$ALLOW_EMPTY_PASSWORD"; then
    warn "You set the environment variable ALLOW_EMPTY_PASSWORD=${ALLOW_EMPTY_PASSWORD}. For safety reasons, do not use this flag in a production environment."
  else
    [ -n "$POSTGRESQL_PASSWORD" ] || empty_password POSTGRESQL_PASSWORD
    [ "${#POSTGRESQL_PASSWORD}" -le 100 ] || fail "The password cannot be longer than 100 characters. Set the environment variable POSTGRESQL_PASSWORD with a shorter value"
  fi
  case $POSTGRESQL_REPLICATION_MODE in
    master)
      [ "$POSTGRESQL_NUM_SYNCHRONOUS_REPLICAS" -ge 0 ] || fail "The number of synchronous replicas cannot be less than 0. Set the environment variable POSTGRESQL_NUM_SYNCHRONOUS_REPLICAS" ;;
    slave)
      [ -n "$POSTGRESQL_MASTER_HOST" ] || fail "Slave replication mode chosen without setting the environment variable POSTGRESQL_MASTER_HOST. Use it to indicate where the Master node is running"
      [ -n "$POSTGRESQL_REPLICATION_USER" ] || fail "Slave replication mode chosen without setting the environment variable POSTGRESQL_REPLICATION_USER. Make sure that the master also has this parameter set" ;;
    *) fail "Invalid replication mode. Available options are 'master/slave'" ;;
  esac
  if [ -n "$POSTGRESQL_REPLICATION_USER" ] && [ -z "$POSTGRESQL_REPLICATION_PASSWORD" ]; then
    empty_password POSTGRESQL_REPLICATION_PASSWORD
  fi
  for setting in ENABLE_TLS ENABLE_LDAP; do
    var=POSTGRESQL_$setting
    if is_yes "${!var:-no}"; then fail "$var=yes: this stand-in has no TLS or LDAP support"; fi
  done
  [ "$errors" -eq 0 ] || exit 1
}

# -- postgresql.conf and pg_hba.conf -------------------------------------------------------------
# set_conf NAME VALUE: "NAME = 'VALUE'" in place of its line in postgresql.conf (commented out
# or not), appended when it has none.
set_conf() {
  local tmp
  tmp=$(mktemp "$POSTGRESQL_TMP_DIR/conf.XXXXXX")
  NAME=$1 LINE="$1 = '${2//\'/\'\'}'" awk '
    BEGIN { re = "^[#[:space:]]*" ENVIRON["NAME"] "[[:space:]]*=" }
    $0 ~ re { if (!done) print ENVIRON["LINE"]; done = 1; next }
    { print }
    END { if (!done) print ENVIRON["LINE"] }' "$CONF" > "$tmp"
  cat "$tmp" > "$CONF"
  rm -f "$tmp"
}
is_external() { [ -f "$POSTGRESQL_MOUNTED_CONF_DIR/$1" ]; }
# postgresql_create_pghba + postgresql_allow_local_connection
write_hba() {
  cat > "$HBA" <<'EOF'
host     all             all             0.0.0.0/0               trust
host     all             all             ::/0                    trust
local    all             all                                     trust
host     all             all        127.0.0.1/32                 trust
host     all             all        ::1/128                      trust
EOF
}
# postgresql_restrict_pghba: password authentication everywhere once there is a password.
restrict_hba() {
  if [ -n "$POSTGRESQL_PASSWORD" ]; then sed -i 's/trust/md5/g' "$HBA"; fi
}
# postgresql_add_replication_to_pghba
add_replication_hba() {
  local method=trust
  [ -z "$POSTGRESQL_REPLICATION_PASSWORD" ] || method=md5
  printf 'host      replication     all             %-23s %s\n' 0.0.0.0/0 "$method" ::/0 "$method" >> "$HBA"
}
# postgresql_configure_replication_parameters
configure_replication() {
  info "Configuring replication parameters"
  set_conf wal_level "$POSTGRESQL_WAL_LEVEL"
  set_conf max_wal_size 400MB
  set_conf max_wal_senders 16
  set_conf wal_keep_size 128MB
  set_conf hot_standby on
}
# postgresql_configure_synchronous_replication
configure_synchronous() {
  [ "$POSTGRESQL_NUM_SYNCHRONOUS_REPLICAS" -gt 0 ] || return 0
  local names="$POSTGRESQL_NUM_SYNCHRONOUS_REPLICAS (\"${POSTGRESQL_CLUSTER_APP_NAME//,/\",\"}\")"
  [ -z "$POSTGRESQL_SYNCHRONOUS_REPLICAS_MODE" ] || names="$POSTGRESQL_SYNCHRONOUS_REPLICAS_MODE $names"
  set_conf synchronous_commit "$POSTGRESQL_SYNCHRONOUS_COMMIT_MODE"
  set_conf synchronous_standby_names "$names"
}
# postgresql_configure_recovery (PostgreSQL 12 and later: standby.signal, no trigger file from 16 on)
configure_recovery() {
  info "Setting up streaming replication slave..."
  local password=${POSTGRESQL_REPLICATION_PASSWORD//\\/\\\\}
  password=${password//\'/\\\'}
  set_conf primary_conninfo "host=$POSTGRESQL_MASTER_HOST port=$POSTGRESQL_MASTER_PORT_NUMBER user=$POSTGRESQL_REPLICATION_USER password='$password' application_name=$POSTGRESQL_CLUSTER_APP_NAME"
  touch "$DATA/standby.signal"
}
# postgresql_configure_logging, _connections, _timezone and the rest set only when given.
configure_settings() {
  local setting var
  for setting in client_min_messages max_connections tcp_keepalives_idle tcp_keepalives_interval \
                 tcp_keepalives_count statement_timeout log_connections log_disconnections log_hostname \
                 log_line_prefix log_timezone timezone password_encryption default_toast_compression; do
    var=POSTGRESQL_${setting^^}
    [ -z "${!var}" ] || set_conf "$setting" "${!var}"
  done
  local libraries=$POSTGRESQL_SHARED_PRELOAD_LIBRARIES
  if [[ $libraries == *pgaudit* ]]; then
    warn "pgaudit is not installed in this stand-in: left out of shared_preload_libraries"
    libraries=$(tr -s ', ' ',' <<< "${libraries//pgaudit/}" | sed 's/^,//; s/,$//')
  fi
  [ -z "$libraries" ] || set_conf shared_preload_libraries "$libraries"
}

# -- the temporary server of the initialisation ------------------------------------------------
# Unix socket only: nothing outside the container sees it (Bitnami's listens on localhost).
start_bg() {
  info "Starting PostgreSQL in background..."
  if ! pg_ctl start -w -t "$POSTGRESQL_INIT_MAX_TIMEOUT" -D "$DATA" -l "$INIT_LOG" \
       -o "--config-file=$CONF --hba_file=$HBA --external_pid_file=$POSTGRESQL_PID_FILE -c listen_addresses=''" \
       > /dev/null; then
    error "PostgreSQL is not ready after $POSTGRESQL_INIT_MAX_TIMEOUT seconds; the end of its log:"
    tail -n 20 "$INIT_LOG" >&2
    exit 1
  fi
}
stop_bg() {
  if [ -f "$DATA/postmaster.pid" ]; then
    info "Stopping PostgreSQL..."
    pg_ctl stop -w -D "$DATA" -m "$POSTGRESQL_SHUTDOWN_MODE" -t "$POSTGRESQL_PGCTLTIMEOUT" > /dev/null
  fi
}
# sql DB [psql args...] < statements: as a given user (default postgres, no password: the
# socket is still "trust" while the database is made), on the temporary server's socket.
sql() {
  local db=$1
  shift
  psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$POSTGRESQL_PORT_NUMBER" -U postgres -d "$db" "$@" > /dev/null
}

# -- postgresql_master_init_db and the roles ------------------------------------------------------
master_init() {
  local args=()
  [ -z "$POSTGRESQL_INITDB_ARGS" ] || read -r -a args <<< "$POSTGRESQL_INITDB_ARGS"
  [ -z "$POSTGRESQL_INITDB_WAL_DIR" ] || args+=(--waldir "$POSTGRESQL_INITDB_WAL_DIR")
  info "Initializing PostgreSQL database..."
  if ! initdb -E UTF8 -D "$DATA" -U postgres "${args[@]}" > "$INIT_LOG" 2>&1; then
    error "initdb failed:"; cat "$INIT_LOG" >&2; exit 1
  fi
  start_bg
  if [ "$POSTGRESQL_DATABASE" != postgres ]; then
    sql postgres -v db="$POSTGRESQL_DATABASE" <<< 'CREATE DATABASE :"db";'
  fi
  if [ "$POSTGRESQL_USERNAME" = postgres ]; then
    info "Changing password of postgres"
    sql postgres -v pw="$POSTGRESQL_PASSWORD" <<< "ALTER ROLE postgres WITH PASSWORD :'pw';"
  else
    if [ -n "$POSTGRESQL_POSTGRES_PASSWORD" ]; then
      info "Changing password of postgres"
      sql postgres -v pw="$POSTGRESQL_POSTGRES_PASSWORD" <<< "ALTER ROLE postgres WITH PASSWORD :'pw';"
    fi
    info "Creating user $POSTGRESQL_USERNAME, owner of the database $POSTGRESQL_DATABASE"
    sql postgres -v user="$POSTGRESQL_USERNAME" -v pw="$POSTGRESQL_PASSWORD" -v db="$POSTGRESQL_DATABASE" <<'SQL'
CREATE ROLE :"user" WITH LOGIN CREATEDB PASSWORD :'pw';
GRANT ALL PRIVILEGES ON DATABASE :"db" TO :"user";
ALTER DATABASE :"db" OWNER TO :"user";
SQL
    sql "$POSTGRESQL_DATABASE" -v user="$POSTGRESQL_USERNAME" <<< 'ALTER SCHEMA public OWNER TO :"user";'
  fi
  if [ -n "$POSTGRESQL_REPLICATION_USER" ]; then
    info "Creating replication user $POSTGRESQL_REPLICATION_USER"
    sql postgres -v user="$POSTGRESQL_REPLICATION_USER" -v pw="$POSTGRESQL_REPLICATION_PASSWORD" \
      <<< "CREATE ROLE :\"user\" REPLICATION LOGIN PASSWORD :'pw';"
  fi
}

# -- postgresql_slave_init_db ---------------------------------------------------------------------
slave_init() {
  local deadline=$((SECONDS + POSTGRESQL_INIT_MAX_TIMEOUT))
  info "Waiting for replication master to accept connections (${POSTGRESQL_INIT_MAX_TIMEOUT} timeout)..."
  until pg_isready -q -t 2 -U "$POSTGRESQL_REPLICATION_USER" -h "$POSTGRESQL_MASTER_HOST" \
          -p "$POSTGRESQL_MASTER_PORT_NUMBER" -d postgres; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      error "PostgreSQL master is not ready after $POSTGRESQL_INIT_MAX_TIMEOUT seconds"; exit 1
    fi
    sleep 1
  done
  info "Replicating the initial database"
  deadline=$((SECONDS + POSTGRESQL_INIT_MAX_TIMEOUT))
  until PGPASSWORD=$POSTGRESQL_REPLICATION_PASSWORD pg_basebackup -D "$DATA" -U "$POSTGRESQL_REPLICATION_USER" \
          -h "$POSTGRESQL_MASTER_HOST" -p "$POSTGRESQL_MASTER_PORT_NUMBER" -X stream -w -v; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      error "Slave replication failed after trying for $POSTGRESQL_INIT_MAX_TIMEOUT seconds"; exit 1
    fi
    sleep 1
  done
}

# -- /docker-entrypoint-preinitdb.d and /docker-entrypoint-initdb.d -------------------------------
run_scripts() {  # DIR PATTERN...: each file in name order
  local dir=$1 f
  shift
  find "$dir/" -type f \( "$@" \) | sort | while read -r f; do
    info "Running $f"
    case $f in
      *.sh) if [ -x "$f" ]; then "$f"; else # shellcheck disable=SC1090
              . "$f"; fi ;;
      *.sql) PGPASSWORD=$POSTGRESQL_INITSCRIPTS_PASSWORD sql "$POSTGRESQL_DATABASE" -U "$POSTGRESQL_INITSCRIPTS_USERNAME" -f "$f" ;;
      *.sql.gz) gunzip -c "$f" | PGPASSWORD=$POSTGRESQL_INITSCRIPTS_PASSWORD sql "$POSTGRESQL_DATABASE" -U "$POSTGRESQL_INITSCRIPTS_USERNAME" ;;
    esac
  done
}

# -- setup.sh: validate, clean, initialise -------------------------------------------------------
validate
trap stop_bg EXIT
# postgresql_clean_from_restart: a slave gets its standby.signal back below, a master does not.
rm -f "$DATA/postmaster.pid" "$DATA/standby.signal" "$DATA/recovery.signal" "$POSTGRESQL_PID_FILE"
run_scripts "$POSTGRESQL_PREINITSCRIPTS_DIR" -name '*.sh'

# postgresql_initialize
create_conf=yes create_hba=yes
if [ -d "$POSTGRESQL_MOUNTED_CONF_DIR" ] && [ -n "$(ls -A "$POSTGRESQL_MOUNTED_CONF_DIR")" ]; then
  cp -fr "$POSTGRESQL_MOUNTED_CONF_DIR/." "$POSTGRESQL_CONF_DIR"
fi
if is_external postgresql.conf; then info "Custom configuration $CONF detected"; create_conf=no; fi
if is_external pg_hba.conf; then info "Custom configuration $HBA detected"; create_hba=no; fi
mkdir -p "$DATA" "$POSTGRESQL_TMP_DIR" "$POSTGRESQL_LOG_DIR"
chmod 700 "$DATA" || warn "Lack of permissions on data directory!"
if is_yes "$POSTGRESQL_ALLOW_REMOTE_CONNECTIONS" && is_yes "$create_hba"; then write_hba; fi
set_conf port "$POSTGRESQL_PORT_NUMBER"
master=no
[ "$POSTGRESQL_REPLICATION_MODE" != master ] || master=yes
if [ -n "$(ls -A "$DATA")" ]; then
  info "Deploying PostgreSQL with persisted data..."
  first_boot=no
  if is_yes "$create_hba"; then restrict_hba; fi
  if is_yes "$create_conf"; then configure_replication; set_conf fsync "$POSTGRESQL_FSYNC"; fi
  if is_yes "$master" && is_yes "$create_hba"; then
    if [ -n "$POSTGRESQL_REPLICATION_USER" ]; then add_replication_hba; fi
    configure_synchronous
  fi
  if ! is_yes "$master"; then configure_recovery; fi
elif is_yes "$master"; then
  first_boot=yes
  master_init
  if is_yes "$create_hba"; then restrict_hba; fi
  if is_yes "$create_conf"; then configure_replication; set_conf fsync "$POSTGRESQL_FSYNC"; fi
  if is_yes "$create_hba"; then
    configure_synchronous
    if [ -n "$POSTGRESQL_REPLICATION_USER" ]; then add_replication_hba; fi
  fi
else
  first_boot=yes
  slave_init
  if is_yes "$create_hba"; then restrict_hba; fi
  if is_yes "$create_conf"; then configure_replication; set_conf fsync "$POSTGRESQL_FSYNC"; fi
  configure_recovery
fi
if is_yes "$create_conf"; then configure_settings; fi
rm -f "$DATA/postgresql.conf" "$DATA/pg_hba.conf"
stop_bg

# postgresql_custom_init_scripts: once per volume
if [ ! -f "$POSTGRESQL_VOLUME_DIR/.user_scripts_initialized" ] \
   && [ -n "$(find "$POSTGRESQL_INITSCRIPTS_DIR/" -type f \( -name '*.sh' -o -name '*.sql' -o -name '*.sql.gz' \))" ]; then
  info "Loading user's custom files from $POSTGRESQL_INITSCRIPTS_DIR ..."
  start_bg
  run_scripts "$POSTGRESQL_INITSCRIPTS_DIR" -name '*.sh' -o -name '*.sql' -o -name '*.sql.gz'
  touch "$POSTGRESQL_VOLUME_DIR/.user_scripts_initialized"
  stop_bg
fi
if ! is_external postgresql.conf && is_yes "$POSTGRESQL_ALLOW_REMOTE_CONNECTIONS"; then
  info "Enabling remote connections"
  set_conf listen_addresses '*'
fi
if ! is_external pg_hba.conf && [ -n "$POSTGRESQL_PGHBA_REMOVE_FILTERS" ]; then
  info "Removing lines that match these filters: $POSTGRESQL_PGHBA_REMOVE_FILTERS"
  for filter in ${POSTGRESQL_PGHBA_REMOVE_FILTERS//,/ }; do sed -i -E "/${filter//\//\\/}/d" "$HBA"; done
fi
trap - EXIT
info "** PostgreSQL setup finished! ** (first boot: $first_boot)"
exec "$@"
