#!/bin/sh
# One member of the Redis Sentinel group (bonus: cache high availability), in the redis image:
#
#   redis-ha.sh server     a Redis server (a cache: nothing persisted); with REDIS_HA_REPLICAOF=HOST
#                          it starts as a replica of HOST:6379
#   redis-ha.sh sentinel   a Sentinel watching SENTINEL_MASTER_HOST:6379 as SENTINEL_MASTER_NAME,
#                          quorum 2, with SENTINEL_DOWN_AFTER_MS and SENTINEL_FAILOVER_TIMEOUT_MS
#
# ANNOUNCE_IP, if set, is the address the member gives out (replica-announce-ip, sentinel
# announce-ip): the container's own, so that every address a Sentinel hands to a client is one
# that the other containers and the host (on Linux, which routes to the bridge) reach alike.
# The config is written to /data once: Redis and Sentinel rewrite it as Sentinel reconfigures the
# group, so a container that is started again comes back in its last role, like a process would.
set -eu
role=${1:?usage: redis-ha.sh server|sentinel}
conf=/data/$role.conf

write_server_conf() {
  echo 'port 6379'
  echo 'save ""'
  echo 'appendonly no'
  echo 'protected-mode no'
  # chaoslab/redis_ha.py's NODE_CONF: a (re)joining replica is synced at once, not after 5 s.
  echo 'repl-diskless-sync-delay 0'
  if [ -n "${ANNOUNCE_IP:-}" ]; then echo "replica-announce-ip $ANNOUNCE_IP"; fi
  if [ -n "${REDIS_HA_REPLICAOF:-}" ]; then echo "replicaof $REDIS_HA_REPLICAOF 6379"; fi
}

write_sentinel_conf() {
  master=${SENTINEL_MASTER_NAME:-lab}
  echo 'port 26379'
  echo 'protected-mode no'
  # The first master may be named by its service name (compose's DNS); the Sentinels hand out IPs.
  echo 'sentinel resolve-hostnames yes'
  if [ -n "${ANNOUNCE_IP:-}" ]; then echo "sentinel announce-ip $ANNOUNCE_IP"; fi
  echo "sentinel monitor $master ${SENTINEL_MASTER_HOST:?} 6379 2"
  echo "sentinel down-after-milliseconds $master ${SENTINEL_DOWN_AFTER_MS:-1000}"
  echo "sentinel failover-timeout $master ${SENTINEL_FAILOVER_TIMEOUT_MS:-5000}"
  echo "sentinel parallel-syncs $master 1"
}

if [ ! -s "$conf" ]; then
  case "$role" in
    server) write_server_conf > "$conf" ;;
    sentinel) write_sentinel_conf > "$conf" ;;
    *) echo "redis-ha.sh: unknown role $role (server or sentinel)" >&2; exit 2 ;;
  esac
fi
# The image's own entrypoint runs redis-server as the redis user (and chowns /data for it).
if [ "$role" = sentinel ]; then
  exec docker-entrypoint.sh redis-server "$conf" --sentinel
fi
exec docker-entrypoint.sh redis-server "$conf"
