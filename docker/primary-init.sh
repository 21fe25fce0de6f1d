#!/bin/bash
# Runs once, when the postgres image initialises an empty data directory (as the
# postgres user, against a temporary server on the Unix socket only): the brief's
# app user and database, the replication role, HAProxy's check role, the products
# table, pg_stat_statements, and the pg_hba lines they need. A replica cloned from this node copies them.
set -euo pipefail
psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password)
"${psql[@]}" --username "$POSTGRES_USER" --dbname postgres \
  -v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" -v app_db="$APP_DB_NAME" \
  -v repl_user="$REPLICATION_USER" -v repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
CREATE ROLE :"repl_user" REPLICATION LOGIN PASSWORD :'repl_password';
CREATE ROLE haproxy_check LOGIN;
SQL
"${psql[@]}" --username "$APP_DB_USER" --dbname "$APP_DB_NAME" -f /docker-entrypoint-initdb.d/products.sql.in
# The statement counts the scenarios read (shared_preload_libraries in docker-compose.yml).
"${psql[@]}" --username "$POSTGRES_USER" --dbname "$APP_DB_NAME" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

# pg_hba.conf is read top down and the image ends it with "host all all all
# scram-sha-256": the lab's lines go first. HAProxy's role check logs in with no
# password, as this role, to the postgres database only, from the lab's network only.
hba="$PGDATA/pg_hba.conf"
{
  echo "# chaoslab (docker/primary-init.sh)"
  echo "host    postgres     haproxy_check       samenet  trust"
  echo "host    all          haproxy_check       all      reject"
  echo "host    replication  $REPLICATION_USER   all      scram-sha-256"
  cat "$hba"
} > "$hba.new"
mv "$hba.new" "$hba"
