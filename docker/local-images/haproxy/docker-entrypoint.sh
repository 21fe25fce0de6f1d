#!/bin/sh
# The official haproxy image's entrypoint contract: master-worker in the foreground.
set -e
case "$1" in
  -*) set -- haproxy "$@" ;;
esac
if [ "$1" = 'haproxy' ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
