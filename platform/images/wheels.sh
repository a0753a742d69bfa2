#!/bin/sh
# Create /opt/venv and install Python packages into it from wheels only, inside an image build,
# as the unprivileged build user (no package's code runs as root; no sdist is ever built).
#   wheels.sh -r requirements.txt [-r more.txt ...]
# Build args (as env):
#   MODELPORT_PIP_OFFLINE=1   /tmp/wheelhouse already holds every wheel (the platform fetched
#                             them, workers/runtimes/wheelhouse.py, or an air-gapped
#                             platform/wheelhouse/): nothing is downloaded, the build needs no
#                             network (the platform builds with network_mode none).
#   otherwise                 first `pip download --only-binary=:all:` into /tmp/wheelhouse from
#                             MODELPORT_PIP_INDEX_URL / MODELPORT_PIP_EXTRA_INDEX_URL (space-
#                             separated; pip's default index when empty) with the CA bundle in
#                             /tmp/certs/ — a standalone `docker build --network host`.
# Either way the install is `pip install --no-index --find-links /tmp/wheelhouse --only-binary`.
# POSIX sh on purpose: the base image may be Debian minbase (dash).
set -eu
ca=/etc/ssl/certs/ca-certificates.crt
if [ -s /tmp/certs/ca-certificates.crt ]; then ca=/tmp/certs/ca-certificates.crt; fi
export PIP_CERT="$ca" REQUESTS_CA_BUNDLE="$ca" SSL_CERT_FILE="$ca"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180
export PIP_CONFIG_FILE=/dev/null
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_NO_BINARY || true
python3 -m venv /opt/venv
if [ "${MODELPORT_PIP_OFFLINE:-0}" != 1 ]; then
  opts=""
  if [ -n "${MODELPORT_PIP_INDEX_URL:-}" ]; then opts="--index-url $MODELPORT_PIP_INDEX_URL"; fi
  for url in ${MODELPORT_PIP_EXTRA_INDEX_URL:-}; do opts="$opts --extra-index-url $url"; done
  # shellcheck disable=SC2086 # word splitting of $opts is intended
  /opt/venv/bin/pip download --progress-bar off --only-binary=:all: --dest /tmp/wheelhouse \
    --find-links /tmp/wheelhouse $opts "$@"
fi
/opt/venv/bin/pip install --progress-bar off --no-index --find-links /tmp/wheelhouse \
  --only-binary=:all: "$@"
