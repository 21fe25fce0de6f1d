#!/usr/bin/env bash
# Local stand-ins for the official images, for machines that reach no container
# registry (this lab's CI machine): a Debian bookworm root filesystem made with
# debootstrap, loaded with `docker import`, then one small image per official one
# with the same commands, paths and entrypoint contract as docker-compose.yml uses:
#
#   chaoslab-local/postgres:15   for postgres:16   (Debian's PostgreSQL 15)
#   chaoslab-local/redis:7       for redis:7       (Debian's Redis 7.0)
#   chaoslab-local/haproxy:2.6   for haproxy:2.9   (Debian's HAProxy 2.6, master-worker)
#   chaoslab-local/python:3.11   for python:3.11-slim (for the API image)
#   chaoslab-local/etcd:3.4      for gcr.io/etcd-development/etcd:v3.5.17 (Debian's etcd 3.4; Patroni bonus)
#   chaoslab-local/patroni:3.0.2 docker/patroni/Dockerfile on the postgres stand-in (Debian's Patroni 3.0.2)
#   chaoslab-local/api:latest    the API (service/Dockerfile), its wheels fetched here by pip
#   chaoslab-local/bitnami-postgresql:15  for bitnami/postgresql:16, the brief's image (Debian's
#                                PostgreSQL 15 behind an entrypoint honouring the Bitnami variables)
#
# Use them with:  set -a; . docker/local-images.env; set +a
# (POSTGRES_IMAGE, REDIS_IMAGE, HAPROXY_IMAGE, API_IMAGE, PYTHON_IMAGE, ETCD_IMAGE, PATRONI_IMAGE).
# So that a student's compose file runs unmodified, the stand-ins are also tagged with the
# names the brief uses, bitnami/postgresql:16, redis:7 and haproxy:2.9, each only when the engine
# has no image of that name yet or the one it has is an older stand-in (label
# chaoslab.stand-in-for): a real image is never replaced. CHAOSLAB_STANDIN_TAGS=no skips that.
#
# The root filesystem is cached (CHAOSLAB_IMAGE_CACHE, default /var/cache/chaoslab-images)
# and the images are labelled with a hash of their inputs: a second run rebuilds nothing.
# Needs root, debootstrap and a running Docker engine (scripts/docker-engine.sh start).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

SUITE=bookworm
# patroni, python3-etcd (its etcd v2 client), etcd-server and etcd-client: the Patroni bonus.
PACKAGES="postgresql-15 redis-server haproxy gosu socat procps python3 python3-venv patroni python3-etcd etcd-server etcd-client"
CACHE=${CHAOSLAB_IMAGE_CACHE:-/var/cache/chaoslab-images}
PREFIX=chaoslab-local
log() { printf '[build-local-images] %s\n' "$*" >&2; }
# Run a command with its output in a log file; show the end of it if the command fails.
quietly() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  if ! "$@" > "$logfile" 2>&1; then
    log "failed: $* (log: $logfile)"
    tail -n 25 "$logfile" >&2
    exit 1
  fi
}

[ "$(id -u)" -eq 0 ] || { log "run as root (debootstrap and chroot need it)"; exit 1; }
command -v debootstrap >/dev/null || { log "missing debootstrap: apt-get install -y debootstrap"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers: scripts/docker-engine.sh start"; exit 1; }

# The Debian mirror this machine's apt uses (deb822 "URIs:" or one-line "deb URL").
mirror() {
  local uri
  uri=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -vE '\[.*\]' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# -- 1. the root filesystem, cached --------------------------------------------------
rootfs_key=$(printf '%s\n' "$SUITE" "$PACKAGES" "rootfs-v1" | sha256sum | cut -c1-12)
rootfs_tar="$CACHE/$SUITE-$rootfs_key.tar"
base_image="$PREFIX/bookworm-base:$rootfs_key"

build_rootfs() {
  local root mirror_url
  mirror_url=$(mirror)
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  # Whatever happens, nothing stays mounted and no half-made tree is left.
  trap 'umount -l "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
  log "debootstrap $SUITE from $mirror_url into $root"
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror_url" > "$CACHE/debootstrap.log" 2>&1 \
    || { log "debootstrap failed, see $CACHE/debootstrap.log"; tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Packages must not start their daemons inside the chroot (they would run on the host).
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  log "installing $PACKAGES"
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c "
    set -e
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $PACKAGES
    # The images make their own data directories, like the official ones.
    pg_dropcluster --stop 15 main 2>/dev/null || true
    rm -rf /var/lib/postgresql/15 /etc/postgresql/15
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/*
  " > "$CACHE/chroot-install.log" 2>&1 \
    || { log "package install failed, see $CACHE/chroot-install.log"; tail -n 20 "$CACHE/chroot-install.log" >&2; exit 1; }
  umount "$root/proc"
  rm -f "$root/usr/sbin/policy-rc.d"
  : > "$root/etc/resolv.conf"  # Docker writes its own at container start
  tar --numeric-owner -C "$root" -cf "$rootfs_tar.partial" .
  mv "$rootfs_tar.partial" "$rootfs_tar"
  rm -rf "$root"
  trap - EXIT
}

if docker image inspect "$base_image" >/dev/null 2>&1; then
  log "base image $base_image already loaded"
else
  if [ -s "$rootfs_tar" ]; then
    log "cached root filesystem $rootfs_tar"
  else
    build_rootfs
  fi
  log "docker import $rootfs_tar as $base_image"
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' "$rootfs_tar" "$base_image" >/dev/null
fi

# -- 2. the stand-in images --------------------------------------------------------
# Each is rebuilt only when its directory (or the base) changed: its label says which inputs made it.
build_image() {  # name tag [extra docker build args...]
  local name=$1 tag=$2; shift 2
  build_image_from "docker/local-images/$name" "$base_image" "$name" "$tag" "$@"
}

build_image_from() {  # dir base name tag [extra docker build args...]: base is what the Dockerfile starts from
  local dir=$1 base=$2 name=$3 tag=$4; shift 4
  local image="$PREFIX/$name:$tag" inputs
  inputs=$( (docker image inspect -f '{{.Id}}' "$base"; tar -C "$dir" --sort=name --mtime=@0 --owner=0 --group=0 -cf - .) \
            | sha256sum | cut -c1-16)
  if [ "$(docker image inspect -f '{{index .Config.Labels "chaoslab.inputs"}}' "$image" 2>/dev/null || true)" = "$inputs" ]; then
    log "$image is up to date"
    return
  fi
  log "building $image"
  quietly "$CACHE/build-$name.log" docker build --build-arg "BASE_IMAGE=$base_image" \
    --label "chaoslab.inputs=$inputs" -t "$image" "$@" "$dir"
}

build_image postgres 15
build_image redis 7
build_image haproxy 2.6
build_image python 3.11
build_image etcd 3.4
# The Patroni node is the official path's own Dockerfile, on the postgres stand-in (whose root
# filesystem has Patroni already, so nothing is fetched inside the build).
build_image_from docker/patroni "$PREFIX/postgres:15" patroni 3.0.2 --build-arg "POSTGRES_IMAGE=$PREFIX/postgres:15"
# The brief's bitnami/postgresql:16, on the same root filesystem as the postgres stand-in.
build_image bitnami-postgresql 15

# The brief's own image names, for its compose file as students write it.
standin_tag() {  # stand-in name: tag the stand-in as name unless name is a real image
  local standin=$1 name=$2
  if ! docker image inspect "$name" >/dev/null 2>&1; then
    docker tag "$standin" "$name"
    log "$name is $standin (a stand-in)"
  elif [ "$(docker image inspect -f '{{index .Config.Labels "chaoslab.stand-in-for"}}' "$name" 2>/dev/null || true)" != "$name" ]; then
    log "$name is on this engine and is not a stand-in: left as it is"
  elif [ "$(docker image inspect -f '{{.Id}}' "$name")" != "$(docker image inspect -f '{{.Id}}' "$standin")" ]; then
    docker tag "$standin" "$name"
    log "$name is $standin again (rebuilt)"
  else
    log "$name is $standin, up to date"
  fi
}
if [ "${CHAOSLAB_STANDIN_TAGS:-yes}" != no ]; then
  standin_tag "$PREFIX/bitnami-postgresql:15" bitnami/postgresql:16
  standin_tag "$PREFIX/redis:7" redis:7
  standin_tag "$PREFIX/haproxy:2.6" haproxy:2.9
fi

# -- 3. the API image -----------------------------------------------------------------
# No registry and no PyPI from inside a build container here: the wheels are fetched on
# the host by pip (which reaches PyPI as configured) and installed offline in the image.
api_image="$PREFIX/api:latest"
wheels="$repo/build/api-wheels"
api_key=$( (echo "$PREFIX/python:3.11"; cat docker/api-requirements.txt service/Dockerfile;
            tar -C service --sort=name --mtime=@0 --owner=0 --group=0 --exclude=__pycache__ -cf - .) \
           | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "chaoslab.inputs"}}' "$api_image" 2>/dev/null || true)" = "$api_key" ]; then
  log "$api_image is up to date"
else
  pip=("${PIP:-$repo/.venv/bin/pip}")
  [ -x "${pip[0]}" ] || pip=(python3 -m pip)
  mkdir -p "$wheels"
  image_python=$(docker run --rm "$PREFIX/python:3.11" python -c 'import platform; print(platform.python_version())')
  log "fetching the API's wheels for Python $image_python into $wheels"
  # pip decides environment markers for the host's Python, not the target's: Debian's
  # 3.11.2 also needs what redis-py requires below 3.11.3, so it is named here.
  quietly "$CACHE/api-wheels.log" "${pip[@]}" download --only-binary=:all: --python-version "$image_python" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform linux_x86_64 -d "$wheels" -r docker/api-requirements.txt \
    "async-timeout>=4.0.3"
  # A context with only what the Dockerfile copies (the repository root would send .venv too).
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  mkdir -p "$context/docker"
  cp -r service "$context/service"
  find "$context/service" -name __pycache__ -prune -exec rm -rf {} +
  cp docker/api-requirements.txt "$context/docker/"
  cp -r "$wheels" "$context/docker/wheels"
  log "building $api_image"
  quietly "$CACHE/build-api.log" docker build -f service/Dockerfile --build-arg "PYTHON_IMAGE=$PREFIX/python:3.11" \
    --build-arg "PIP_INSTALL_OPTIONS=--no-index" --label "chaoslab.inputs=$api_key" -t "$api_image" "$context"
  rm -rf "$context"
  trap - EXIT
fi

# Older builds of the base are dead weight once nothing uses them.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$PREFIX/bookworm-base" | grep -vx "$base_image" \
  | xargs -r docker image rm >/dev/null 2>&1 || true
docker image prune -f --filter "label=chaoslab.inputs" >/dev/null 2>&1 || true
log "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} ({{.Size}})' "$PREFIX/*" | paste -sd ' ')"
