#!/bin/sh
# The official redis image's entrypoint contract: options alone mean redis-server,
# and redis-server runs as the redis user.
set -e
case "$1" in
  -*) set -- redis-server "$@" ;;
esac
if [ "$1" = 'redis-server' ]; then
  case " $* " in
    *" --protected-mode "*) ;;
    *) set -- "$@" --protected-mode no ;;
  esac
  if [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec gosu redis "$@"
  fi
fi
exec "$@"
