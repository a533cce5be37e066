#!/usr/bin/env bash
# podman.sh - a Podman Docker-compatible API socket for Berth's tests, on this machine only.
#   up    install podman (apt) if missing, write a containers.conf (default_ulimits = [] : this
#         machine's hard open-files limit is below podman's default), import local/busybox:1 into
#         podman's store, start `podman system service` on $BERTH_PODMAN_SOCK
#   down  stop the service started by this script
#   env   print BERTH_PODMAN_SOCK
# State lives in $BERTH_PODMAN_DIR (default /var/tmp/berth-podman).
set -euo pipefail
DIR=${BERTH_PODMAN_DIR:-/var/tmp/berth-podman}
SOCK=${BERTH_PODMAN_SOCK:-$DIR/podman.sock}
export CONTAINERS_CONF=$DIR/containers.conf

log() { printf '[podman %s] %s\n' "$(date +%T)" "$*" >&2; }

up() {
  if ! command -v podman >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman >/dev/null
  fi
  mkdir -p "$DIR"
  printf '[containers]\ndefault_ulimits = []\n' > "$CONTAINERS_CONF"
  if ! podman image exists localhost/berth-busybox:1; then
    docker save local/busybox:1 | podman load -q >/dev/null
    podman tag local/busybox:1 localhost/berth-busybox:1 2>/dev/null \
      || podman tag docker.io/local/busybox:1 localhost/berth-busybox:1
  fi
  if [ -S "$SOCK" ] && curl -s --unix-socket "$SOCK" http://d/_ping | grep -q OK; then return 0; fi
  rm -f "$SOCK"
  log "starting podman system service on $SOCK"
  setsid podman system service --time=0 "unix://$SOCK" >"$DIR/service.log" 2>&1 < /dev/null &
  echo $! > "$DIR/service.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    curl -s --unix-socket "$SOCK" http://d/_ping 2>/dev/null | grep -q OK && return 0
    sleep 0.1
  done
  tail -20 "$DIR/service.log" >&2
  exit 1
}

down() {
  if [ -f "$DIR/service.pid" ] && kill -0 "$(cat "$DIR/service.pid")" 2>/dev/null; then
    kill -TERM "$(cat "$DIR/service.pid")"
  fi
  rm -f "$DIR/service.pid"
}

case "${1:-up}" in
  up) up; echo "export BERTH_PODMAN_SOCK=$SOCK" ;;
  down) down ;;
  env) echo "export BERTH_PODMAN_SOCK=$SOCK" ;;
  *) echo "usage: $0 [up|down|env]" >&2; exit 2 ;;
esac
