#!/bin/bash
# Runs once, when the official postgres image initialises an empty data directory:
# the brief's app user and database, the replication role, HAProxy's check role,
# and the pg_hba lines they need.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" -v app_db="$APP_DB_NAME" \
  -v repl_user="$REPLICATION_USER" -v repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
CREATE ROLE :"repl_user" REPLICATION LOGIN PASSWORD :'repl_password';
CREATE ROLE haproxy_check LOGIN;
SQL
PGPASSWORD="$APP_DB_PASSWORD" psql -v ON_ERROR_STOP=1 -h 127.0.0.1 -U "$APP_DB_USER" -d "$APP_DB_NAME" \
  -f /docker-entrypoint-initdb.d/products.sql.in
cat >> "$PGDATA/pg_hba.conf" <<HBA
host replication $REPLICATION_USER all scram-sha-256
host postgres haproxy_check all trust
HBA
