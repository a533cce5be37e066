#!/usr/bin/env bash
# testenv.sh - bring up the real components Berth's tests and demo need, on this machine only:
#   a Docker engine, a private registry with htpasswd auth on 127.0.0.1:5000, and local images
#   (local/busybox:1 built from Debian's busybox-static, pushed to the registry as
#   127.0.0.1:5000/berth/busybox:1 and :2).
#
# Usage: tools/testenv.sh [up|down|env]
#   up    install (apt) what is missing, start dockerd and the registry, build and push images
#   down  stop the registry and dockerd started by this script
#   env   print the variables tests read (BERTH_TEST_REGISTRY, _USER, _PASSWORD, _IMAGE)
#   restart-engine  stop the dockerd this script started (exit 3 if it did not), then `up` again
# Idempotent: re-running `up` only does what is missing. State lives in $BERTH_TESTENV_DIR
# (default /var/tmp/berth-testenv).
set -euo pipefail

DIR=${BERTH_TESTENV_DIR:-/var/tmp/berth-testenv}
REG_ADDR=${BERTH_TEST_REGISTRY:-127.0.0.1:5000}
REG_USER=berth
REG_PASS=berth-registry-pass
IMAGE_REPO=$REG_ADDR/berth/busybox

log() { printf '[testenv %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_up() {
  if docker info >/dev/null 2>&1; then return 0; fi
  apt_install docker.io
  log "starting dockerd"
  mkdir -p "$DIR"
  setsid dockerd --host unix:///var/run/docker.sock >"$DIR/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$DIR/dockerd.pid"
  local i
  for ((i = 0; i < 150; i++)); do docker info >/dev/null 2>&1 && return 0; sleep 0.2; done
  tail -20 "$DIR/dockerd.log" >&2
  die "dockerd did not come up"
}

registry_up() {
  apt_install docker-registry apache2-utils
  mkdir -p "$DIR/registry-data"
  if [ ! -s "$DIR/htpasswd" ]; then
    htpasswd -Bbn "$REG_USER" "$REG_PASS" | grep . > "$DIR/htpasswd"
  fi
  cat > "$DIR/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry-data
  delete:
    enabled: true
http:
  addr: $REG_ADDR
auth:
  htpasswd:
    realm: berth-test
    path: $DIR/htpasswd
YML
  if curl -s -o /dev/null -w '%{http_code}' "http://$REG_ADDR/v2/" 2>/dev/null | grep -q 401; then return 0; fi
  log "starting docker-registry on $REG_ADDR (htpasswd auth)"
  setsid docker-registry serve "$DIR/registry.yml" >"$DIR/registry.log" 2>&1 < /dev/null &
  echo $! > "$DIR/registry.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null -w '%{http_code}' "http://$REG_ADDR/v2/" 2>/dev/null | grep -q 401 && return 0
    sleep 0.1
  done
  tail -20 "$DIR/registry.log" >&2
  die "registry did not come up"
}

images_up() {
  apt_install busybox-static
  if ! docker image inspect local/busybox:1 >/dev/null 2>&1; then
    log "building local/busybox:1 from busybox-static"
    local root; root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www" "$root/proc" "$root/sys" "$root/dev" "$root/data"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in sh ash echo cat sleep httpd ls mkdir rm env printf seq yes true false wget nc date id ps kill \
                  head tail grep sed wc touch cp mv hostname test uname; do
      ln -s busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"
    echo '<h1>berth demo</h1>' > "$root/www/index.html"
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - local/busybox:1 >/dev/null
    rm -rf "$root"
  fi
  local cfg; cfg=$(mktemp -d)
  echo "$REG_PASS" | DOCKER_CONFIG=$cfg docker login -u "$REG_USER" --password-stdin "$REG_ADDR" >/dev/null 2>&1 \
    || die "docker login to the test registry failed"
  local tag
  for tag in 1 2; do
    if ! DOCKER_CONFIG=$cfg docker manifest inspect --insecure "$IMAGE_REPO:$tag" >/dev/null 2>&1; then
      if [ "$tag" = 1 ]; then
        docker tag local/busybox:1 "$IMAGE_REPO:1"
      else
        # a second, different image (another layer) for "image changed" tests
        printf 'FROM local/busybox:1\nLABEL io.berth.test=two\nRUN echo two > /version\n' \
          | DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE_REPO:2" - >/dev/null
      fi
      log "pushing $IMAGE_REPO:$tag"
      DOCKER_CONFIG=$cfg docker push -q "$IMAGE_REPO:$tag" >/dev/null
    fi
  done
  rm -rf "$cfg"
}

cmd_env() {
  echo "export BERTH_TEST_REGISTRY=$REG_ADDR"
  echo "export BERTH_TEST_REGISTRY_USER=$REG_USER"
  echo "export BERTH_TEST_REGISTRY_PASSWORD=$REG_PASS"
  echo "export BERTH_TEST_IMAGE=$IMAGE_REPO"
}

cmd_down() {
  local c
  for c in registry dockerd; do
    if [ -f "$DIR/$c.pid" ] && kill -0 "$(cat "$DIR/$c.pid")" 2>/dev/null; then
      log "stopping $c"; kill -TERM "$(cat "$DIR/$c.pid")" || true
    fi
    rm -f "$DIR/$c.pid"
  done
}

cmd_restart_engine() {
  [ -f "$DIR/dockerd.pid" ] || { log "dockerd was not started by this script: cannot restart it"; exit 3; }
  local pid i; pid=$(cat "$DIR/dockerd.pid")
  log "restarting dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$DIR/dockerd.pid"
  docker_up; registry_up
}

case "${1:-up}" in
  up) docker_up; registry_up; images_up; log "ready: $(docker version --format '{{.Server.Version}}') + registry $REG_ADDR" ;;
  down) cmd_down ;;
  restart-engine) cmd_restart_engine ;;
  env) cmd_env ;;
  *) echo "usage: $0 [up|down|env|restart-engine]" >&2; exit 2 ;;
esac
