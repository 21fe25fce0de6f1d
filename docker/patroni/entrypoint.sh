#!/bin/bash
# A Patroni node (bonus: automatic failover), in the image of docker/patroni/Dockerfile.
#
# /lab/node is the node's directory on the host: patroni.yml in it, rendered by
# chaoslab/patroni/config.py (it holds passwords), and patroni.log, where Patroni's
# log and PostgreSQL's stderr go too (as well as to the container's output), so that
# the harness reads the same log file on both backends.
#
# As root: give the data volume to postgres, copy the config where only postgres reads
# it, then run Patroni as postgres. Patroni is PID 1: it reaps orphans itself, turns
# SIGTERM into a clean stop of PostgreSQL, and PostgreSQL (which Patroni starts, clones
# with pg_basebackup or rewinds with pg_rewind) lives and dies with the container.
set -euo pipefail
node_dir=/lab/node
config=/var/lib/postgresql/patroni.yml

if [ ! -s "$node_dir/patroni.yml" ]; then
  echo "patroni-entrypoint: no $node_dir/patroni.yml: render it first" \
       "(python -m chaoslab.compose patroni-config), or run the harness (pytest --backend compose)" >&2
  exit 1
fi
data_root=/var/lib/postgresql/data
mkdir -p "$data_root" /var/run/postgresql
chown postgres:postgres "$data_root" /var/run/postgresql
chmod 700 "$data_root"
install -o postgres -g postgres -m 600 "$node_dir/patroni.yml" "$config"
# tee runs as root (the host directory need not be writable by the image's postgres user).
exec > >(tee -a "$node_dir/patroni.log") 2>&1
exec gosu postgres patroni "$config"
