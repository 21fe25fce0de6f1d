#!/usr/bin/env bash
# Everything the lab needs on a fresh Debian or Ubuntu machine, installed once:
# the servers from the OS packages, then a .venv with the project.
# Running it again installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
# The Patroni bonus: Debian's patroni runs on the system Python as the postgres user
# (the project's .venv may live where that user cannot read), and etcd is its store.
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
# The hands-on tests work as a student does: curl runs the printed lines, tmux runs `watch`.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
# Partitions drop packets between servers that each have a network namespace (the Sentinel
# group's scenarios need them; the other labs fall back to cutting their proxied links).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# `python -m chaoslab cpu` (`make cpu`) reads where a run's CPU went from process accounting.
command -v accton >/dev/null 2>&1 || missing+=(acct)
for extra in "$@"; do command -v "$extra" >/dev/null 2>&1 || missing+=("$extra"); done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chaoslab needs these OS packages: ${missing[*]}" >&2
    echo "install them with:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing OS packages: ${missing[*]}"
  # The lab starts its own servers: keep the packages' system-wide services from starting.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" -eq 1 ] && rm -f "$policy"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv || {
    echo "could not create .venv: install python3-venv (apt-get install -y python3-venv)" >&2; exit 1; }
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
