#!/usr/bin/env bash
# small-engine.sh - a second, private Docker engine whose data root is a small tmpfs, for the
# disk-space tests (early refusal of a pull that cannot fit, "no space left on device" during a
# pull). It never touches the shared engine: its own socket, exec root, pid file, data root and
# containerd (managed by it, under its exec root), no bridge, no iptables, and its OWN NETWORK
# NAMESPACE: dockerd --bridge=none deletes any interface named docker0 in its namespace (Moby's
# removeDefaultBridgeInterface), which in the host namespace is the shared engine's bridge. It
# reaches the test registry (host 127.0.0.1:5000) through tools/unix_tcp_forward.py.
#
# Usage: tools/small-engine.sh [up|down|env]
#   up    mount the tmpfs (BERTH_SMALL_ENGINE_SIZE, default 256m) and start the engine (idempotent)
#   down  stop the engine and unmount the tmpfs
#   env   print BERTH_SMALL_DOCKER_HOST and BERTH_SMALL_DATA_ROOT
set -euo pipefail

DIR=${BERTH_SMALL_ENGINE_DIR:-/var/tmp/berth-small-engine}
SIZE=${BERTH_SMALL_ENGINE_SIZE:-256m}
SOCK=/var/run/berth-small-docker.sock
EXEC_ROOT=/var/run/berth-small-docker
DATA=$DIR/data-root
PIDFILE=$DIR/dockerd.pid
NETNS=berth-small-engine
REGISTRY_PORT=${BERTH_TEST_REGISTRY_PORT:-5000}
FORWARD=$(cd "$(dirname "$0")" && pwd)/unix_tcp_forward.py
REGISTRY_SOCK=$DIR/registry.sock

log() { printf '[small-engine %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

up() {
  command -v dockerd >/dev/null || die "dockerd is not installed (tools/testenv.sh up installs it)"
  mkdir -p "$DATA"
  if ! mountpoint -q "$DATA"; then
    log "mounting a $SIZE tmpfs on $DATA"
    mount -t tmpfs -o "size=$SIZE,mode=0711" berth-small-engine "$DATA" || die "cannot mount a tmpfs here"
  fi
  if running && DOCKER_HOST=unix://$SOCK docker info >/dev/null 2>&1; then return 0; fi
  if ! ip netns list | grep -qw "$NETNS"; then
    ip netns add "$NETNS" || die "cannot create the network namespace $NETNS"
  fi
  ip netns exec "$NETNS" ip link set lo up
  start_forwarders
  log "starting dockerd on $SOCK (data root $DATA, network namespace $NETNS)"
  setsid nsenter --net="/var/run/netns/$NETNS" dockerd --host "unix://$SOCK" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" --data-root "$DATA" \
    --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
    --containerd-namespace berth-small --containerd-plugins-namespace berth-small-plugins \
    >"$DIR/dockerd.log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 150; i++)); do
    DOCKER_HOST=unix://$SOCK docker info >/dev/null 2>&1 && { log "ready"; return 0; }
    sleep 0.2
  done
  tail -20 "$DIR/dockerd.log" >&2
  die "the small engine did not come up"
}

start_forwarders() {
  local pidfile
  for pidfile in "$DIR/forward-unix.pid" "$DIR/forward-tcp.pid"; do
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && continue
    if [ "$pidfile" = "$DIR/forward-unix.pid" ]; then
      setsid python3 "$FORWARD" listen-unix "$REGISTRY_SOCK" 127.0.0.1 "$REGISTRY_PORT" \
        >"$DIR/forward-unix.log" 2>&1 </dev/null &
    else
      setsid nsenter --net="/var/run/netns/$NETNS" python3 "$FORWARD" listen-tcp 127.0.0.1 "$REGISTRY_PORT" "$REGISTRY_SOCK" \
        >"$DIR/forward-tcp.log" 2>&1 </dev/null &
    fi
    echo $! >"$pidfile"
  done
  local i
  for ((i = 0; i < 100; i++)); do
    nsenter --net="/var/run/netns/$NETNS" curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REGISTRY_PORT/v2/" \
      2>/dev/null | grep -q 401 && return 0
    sleep 0.1
  done
  die "the test registry is not reachable from the namespace $NETNS"
}

stop_pidfile() {
  local pidfile=$1 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

down() {
  if running; then
    local pid i; pid=$(cat "$PIDFILE")
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  stop_pidfile "$DIR/forward-tcp.pid"
  stop_pidfile "$DIR/forward-unix.pid"
  if mountpoint -q "$DATA"; then umount "$DATA" || umount -l "$DATA"; fi
  if ip netns list | grep -qw "$NETNS"; then ip netns delete "$NETNS" || true; fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  env) echo "export BERTH_SMALL_DOCKER_HOST=unix://$SOCK"; echo "export BERTH_SMALL_DATA_ROOT=$DATA" ;;
  *) echo "usage: $0 [up|down|env]" >&2; exit 2 ;;
esac
