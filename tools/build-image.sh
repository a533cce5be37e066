#!/bin/sh
# Build Berth's agent image on this machine, without a public image registry.
#
#   tools/build-image.sh [TAG]        (default: berth/agent:<version>, also tagged berth/agent:<major.minor>,
#                                      the tag a platform of that release names in `update`)
#
# 1. The base image (BERTH_BASE_IMAGE, default berth/debian-base:bookworm) is made with debootstrap
#    from the machine's own Debian mirror when it is missing, then `docker import`ed. The rootfs
#    tarball is cached in $BERTH_IMAGE_CACHE (default /var/tmp/berth-image) so a removed base image
#    comes back in seconds.
# 2. The agent image is built from the top-level Dockerfile with BuildKit. pip inside the build trusts
#    the machine's CA bundle through a build secret (BERTH_CA_BUNDLE, default
#    /etc/ssl/certs/ca-certificates.crt); the bundle never lands in a layer.
# 3. BERTH_EXTRAS (default: kubernetes) names the package extras the image carries besides the
#    Docker agent; BERTH_EXTRAS= builds a Docker-only image.
# Prints the image reference and its size on the last line.
set -eu

cd "$(dirname "$0")/.."
BASE=${BERTH_BASE_IMAGE:-berth/debian-base:bookworm}
CACHE=${BERTH_IMAGE_CACHE:-/var/tmp/berth-image}
CA=${BERTH_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
TAG=${1:-berth/agent:$VERSION}

log() { printf '[build-image %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# A client that can use BuildKit: one with the buildx plugin, or a client older than 23.0 (built-in
# BuildKit, e.g. Debian's docker.io 20.10 in /usr/bin). A newer client without buildx cannot.
pick_client() {
  for candidate in ${BERTH_DOCKER:-} docker /usr/bin/docker; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" buildx version >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
    major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    case "$major" in
    1[0-9] | 2[0-2])
      echo "$candidate"
      return 0
      ;;
    esac
  done
  return 1
}
DOCKER=$(pick_client) || die "no docker client with BuildKit (install docker-buildx, or Debian's docker.io)"
"$DOCKER" info >/dev/null 2>&1 || die "the Docker engine does not answer (tools/testenv.sh up starts one)"
[ -r "$CA" ] || die "CA bundle $CA is not readable (set BERTH_CA_BUNDLE)"

debian_mirror() {
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\/*\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^deb \(\[[^]]*\] \)*\(http[^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

build_base() {
  tarball=$CACHE/debian-bookworm-rootfs.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (apt-get install debootstrap)"
    mirror=$(debian_mirror)
    log "debootstrap bookworm from $mirror (about 40 s)"
    mkdir -p "$CACHE"
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
      tail -20 "$CACHE/debootstrap.log" >&2
      rm -rf "$rootfs"
      die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    # Smaller base: no apt lists, docs, man pages or message translations.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
      "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
    tar -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $tarball as $BASE"
  "$DOCKER" import -c 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
}

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  build_base
fi

log "building $TAG on $BASE"
DOCKER_BUILDKIT=1 "$DOCKER" build --quiet \
  --secret "id=ca,src=$CA" \
  --build-arg "BASE_IMAGE=$BASE" \
  --build-arg "BERTH_EXTRAS=${BERTH_EXTRAS-kubernetes}" \
  --build-arg "VERSION=$VERSION" \
  --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --tag "$TAG" . >/dev/null
if [ $# -eq 0 ]; then
  "$DOCKER" tag "$TAG" "berth/agent:$(echo "$VERSION" | cut -d. -f1-2)"
fi
size=$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")
echo "$TAG $((size / 1000000)) MB ($size bytes)"
