#!/usr/bin/env bash
# A Docker engine for the compose backend, on a machine that may have none running
# (this lab's CI machine: Debian, root, no systemd as PID 1).
#
#   scripts/docker-engine.sh install   apt-get install docker.io docker-compose debootstrap (once)
#   scripts/docker-engine.sh start     start dockerd in the background unless an engine answers
#   scripts/docker-engine.sh stop      stop the dockerd this script started
#   scripts/docker-engine.sh status    say whether an engine answers
#
# What dockerd needs here, as found on such a machine: root; the overlay2 storage
# driver (the default, on ext4); iptables (Debian's nf_tables variant works) for the
# bridge networks; cgroup v1 with the freezer controller (docker pause). Its log and
# pid file are in CHAOSLAB_DOCKERD_DIR (default /var/run/chaoslab-dockerd).
set -euo pipefail
dir=${CHAOSLAB_DOCKERD_DIR:-/var/run/chaoslab-dockerd}
log() { printf '[docker-engine] %s\n' "$*" >&2; }

answers() { docker info >/dev/null 2>&1; }

install() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || { log "needs: sudo apt-get install -y ${missing[*]}"; exit 1; }
  log "installing ${missing[*]}"
  # The packages' own service must not start: this script starts the engine itself.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  [ "$own_policy" -eq 1 ] && rm -f "$policy"
  return 0
}

start() {
  if answers; then
    log "an engine already answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    return
  fi
  [ "$(id -u)" -eq 0 ] || { log "no engine answers, and starting one needs root"; exit 1; }
  command -v dockerd >/dev/null 2>&1 || install
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    log "starting docker with systemd"
    systemctl start docker
  else
    mkdir -p "$dir"
    log "starting dockerd in the background (log: $dir/dockerd.log)"
    # setsid: the engine outlives this script and ignores the terminal's Ctrl-C.
    setsid dockerd --pidfile "$dir/dockerd.pid" > "$dir/dockerd.log" 2>&1 < /dev/null &
  fi
  local waited=0
  until answers; do
    if [ "$waited" -ge 60 ]; then
      log "dockerd did not answer within 60s; the end of its log:"
      tail -n 20 "$dir/dockerd.log" >&2 || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "engine $(docker version --format '{{.Server.Version}}') answers, storage driver $(docker info --format '{{.Driver}}')"
}

stop() {
  if [ -s "$dir/dockerd.pid" ]; then
    local pid
    pid=$(cat "$dir/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      local waited=0
      while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
      log "dockerd $pid stopped"
    fi
  else
    log "no dockerd started by this script"
  fi
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if answers; then log "an engine answers"; else log "no engine answers"; exit 1; fi ;;
  *) log "usage: $0 install|start|stop|status"; exit 2 ;;
esac
