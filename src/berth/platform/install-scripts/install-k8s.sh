#!/bin/sh
# Berth node agent for Kubernetes: apply the manifest the platform rendered, then wait until the
# agent runs. The manifest alone also works (`curl -sSfL <script url> | kubectl apply -f -`); this
# script adds the checks, a server-side dry run, the rollout wait and an uninstall.
#
#   install-k8s.sh [options] [MANIFEST]     MANIFEST: a file, an http(s) URL, or - for stdin (default)
#     --dry-run      validate against the cluster (server-side dry run), change nothing
#     --uninstall    delete what the manifest created (the agent's namespace with its credential
#                    Secret, its ClusterRole and binding); workloads it deployed are left alone
#     --timeout S    rollout wait in seconds (default 180)
#
# Environment: KUBECTL (default kubectl), KUBECONFIG / the current kubectl context as usual.
# Exit codes: 0 done, 2 usage, 3 kubectl missing or the cluster unreachable, 4 apply failed,
# 5 the agent did not become ready within the timeout.
set -eu

KUBECTL=${KUBECTL:-kubectl}
DRY_RUN=false
UNINSTALL=false
TIMEOUT=180
SOURCE=-

log() { printf 'berth-install-k8s: %s\n' "$*" >&2; }
die() {
  code=$1
  shift
  printf 'berth-install-k8s: error: %s\n' "$*" >&2
  exit "$code"
}

while [ $# -gt 0 ]; do
  case "$1" in
  --dry-run | -n) DRY_RUN=true ;;
  --uninstall) UNINSTALL=true ;;
  --timeout)
    [ $# -ge 2 ] || die 2 "--timeout needs a value"
    TIMEOUT=$2
    shift
    ;;
  --help | -h)
    sed -n '2,16p' "$0" 2>/dev/null || true
    exit 0
    ;;
  -*) die 2 "unknown option: $1" ;;
  *) SOURCE=$1 ;;
  esac
  shift
done
case "$TIMEOUT" in '' | *[!0-9]*) die 2 "--timeout expects seconds" ;; esac

command -v "$KUBECTL" >/dev/null 2>&1 || die 3 "$KUBECTL not found (install kubectl or set KUBECTL)"
"$KUBECTL" version >/dev/null 2>&1 || die 3 "the cluster is not reachable with the current kubectl context"

MANIFEST=$(mktemp)
trap 'rm -f "$MANIFEST"' EXIT INT TERM
case "$SOURCE" in
http://* | https://*)
  command -v curl >/dev/null 2>&1 || die 3 "curl is needed to download $SOURCE"
  curl -sSfL "$SOURCE" >"$MANIFEST" || die 4 "cannot download $SOURCE"
  ;;
-) cat >"$MANIFEST" ;;
*)
  [ -r "$SOURCE" ] || die 2 "cannot read $SOURCE"
  cat "$SOURCE" >"$MANIFEST"
  ;;
esac
grep -q '^kind: Deployment' "$MANIFEST" || die 2 "this is not a Berth agent manifest (no Deployment)"
# A rendered manifest never has a placeholder where a name goes (values are quoted scalars).
if grep -qE '^ *(name|namespace): *@@' "$MANIFEST"; then
  die 2 "the manifest still has @@PLACEHOLDERS@@: download it from the platform, not from the repository"
fi

if [ "$UNINSTALL" = true ]; then
  log "deleting the agent (its namespace, ServiceAccount, ClusterRole and binding)"
  if [ "$DRY_RUN" = true ]; then
    exec "$KUBECTL" delete --dry-run=server --ignore-not-found -f "$MANIFEST"
  fi
  exec "$KUBECTL" delete --ignore-not-found --wait=false -f "$MANIFEST"
fi

if [ "$DRY_RUN" = true ]; then
  # a server-side dry run cannot place objects in a namespace that does not exist yet
  NAMESPACE=$(awk '/^kind: Namespace/ { found = 1 } found && /^  name:/ { print $2; exit }' "$MANIFEST")
  MODE=client
  if [ -n "$NAMESPACE" ] && "$KUBECTL" get namespace "$NAMESPACE" >/dev/null 2>&1; then
    MODE=server
  fi
  log "dry run ($MODE side${NAMESPACE:+, namespace $NAMESPACE})"
  if [ "$MODE" = server ]; then
    "$KUBECTL" apply --server-side --field-manager=berth-install --force-conflicts --dry-run=server \
      -f "$MANIFEST" || die 4 "the cluster refused the manifest"
  else
    "$KUBECTL" apply --dry-run=client -f "$MANIFEST" || die 4 "the manifest is invalid"
  fi
  exit 0
fi

APPLIED=$("$KUBECTL" apply --server-side --field-manager=berth-install --force-conflicts -o name -f "$MANIFEST") ||
  die 4 "kubectl apply failed"
printf '%s\n' "$APPLIED" | sed 's/^/  applied /' >&2
DEPLOYMENT=$(printf '%s\n' "$APPLIED" | grep '^deployment' | head -n 1)
NAMESPACE=$(printf '%s\n' "$APPLIED" | grep '^namespace/' | head -n 1 | cut -d/ -f2)
if [ -z "$DEPLOYMENT" ] || [ -z "$NAMESPACE" ]; then
  die 4 "the manifest did not create the agent's Deployment"
fi

log "waiting up to ${TIMEOUT}s for $DEPLOYMENT in namespace $NAMESPACE"
if ! "$KUBECTL" -n "$NAMESPACE" rollout status "$DEPLOYMENT" --timeout="${TIMEOUT}s"; then
  "$KUBECTL" -n "$NAMESPACE" get pods -o wide >&2 || true
  die 5 "the agent did not become ready; see: $KUBECTL -n $NAMESPACE logs $DEPLOYMENT"
fi
log "the agent runs; it appears as connected in the platform once it has accepted the install token"
