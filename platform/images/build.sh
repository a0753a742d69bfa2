#!/usr/bin/env bash
# Build Modelport's images on this host with `docker build --network host` (the serving image
# with --offline: --network none, it installs only wheels from platform/wheelhouse/):
#   base (offline, Debian packages) -> web (web/worker/beat/MLflow), serving, postgres, redis.
#
# Usage: platform/images/build.sh [--base-image IMAGE] [--tag TAG] [--offline] [IMAGE...]
#   IMAGE: any of web serving postgres redis (default: all)
#   --base-image  python:3.11-slim to build online from the official image
#                 (default $MODELPORT_BASE_IMAGE or modelport/base:bookworm, built if missing)
#   --offline     air-gapped: pip installs only from platform/wheelhouse/ (--no-index; the
#                 serving image: wheels only)
# The host's CA bundle goes into platform/certs/ (build stages only) and the host's pip index
# settings (pip config / PIP_INDEX_URL) become build args, so a TLS-intercepting proxy or a
# private index works without naming it in any committed file.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
base=${MODELPORT_BASE_IMAGE:-modelport/base:bookworm}
tag=${MODELPORT_TAG:-latest}
offline=${MODELPORT_PIP_OFFLINE:-0}
images=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base-image) base=$2; shift ;;
    --tag) tag=$2; shift ;;
    --offline) offline=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    web|serving|postgres|redis) images+=("$1") ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#images[@]} -gt 0 ]] || images=(web serving postgres redis)

if [[ $base == modelport/base:* ]]; then
  MODELPORT_BASE_IMAGE=$base "$root/platform/images/build-base.sh"
fi

ca=${MODELPORT_BUILD_CA_BUNDLE:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}}
if [[ -s $ca ]]; then
  install -m 0644 "$ca" "$root/platform/certs/ca-certificates.crt"
fi

# The host's pip index settings; file:// indexes cannot be reached from a build and are skipped.
pip_setting() {
  python3 -m pip config list 2>/dev/null | awk -F= -v key="$1" '
    { k = $1; sub(/^.*\./, "", k); v = substr($0, index($0, "=") + 1); gsub(/^'\''|'\''$/, "", v) }
    k == key { print v; exit }'
}
web_only() { tr ' ' '\n' | grep -E '^https?://' | paste -sd' ' - || true; }
index=${MODELPORT_PIP_INDEX_URL:-${PIP_INDEX_URL:-$(pip_setting index-url)}}
extra=${MODELPORT_PIP_EXTRA_INDEX_URL:-${PIP_EXTRA_INDEX_URL:-$(pip_setting extra-index-url)}}
index=$(printf '%s' "$index" | web_only)
extra=$(printf '%s' "$extra" | web_only)

args=(--build-arg "BASE_IMAGE=$base"
      --build-arg "MODELPORT_PIP_INDEX_URL=$index"
      --build-arg "MODELPORT_PIP_EXTRA_INDEX_URL=$extra"
      --build-arg "MODELPORT_PIP_OFFLINE=$offline")
for image in "${images[@]}"; do
  case $image in
    web) file=platform/Dockerfile ;;
    *) file=platform/$image.Dockerfile ;;
  esac
  # The serving image installs only wheels from platform/wheelhouse/ when offline: no network.
  network=host
  [[ $image == serving && $offline == 1 ]] && network=none
  start=$(date +%s)
  echo "== modelport/$image:$tag FROM $base (network $network)"
  docker build --network "$network" "${args[@]}" -f "$root/$file" -t "modelport/$image:$tag" "$root"
  echo "== built modelport/$image:$tag in $(( $(date +%s) - start ))s"
done
