#!/bin/sh
# pip install into /opt/venv inside an image build, honouring (build args as env):
#   MODELPORT_PIP_INDEX_URL, MODELPORT_PIP_EXTRA_INDEX_URL (space-separated),
#   MODELPORT_PIP_OFFLINE=1 (only /tmp/wheelhouse, no index), and a CA bundle in /tmp/certs/.
# POSIX sh on purpose: the base image may be Debian minbase (dash).
set -eu
ca=/etc/ssl/certs/ca-certificates.crt
if [ -s /tmp/certs/ca-certificates.crt ]; then ca=/tmp/certs/ca-certificates.crt; fi
export PIP_CERT="$ca" REQUESTS_CA_BUNDLE="$ca" SSL_CERT_FILE="$ca"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT || true
opts=""
if [ "${MODELPORT_PIP_OFFLINE:-0}" = 1 ]; then
  opts="--no-index --find-links /tmp/wheelhouse"
else
  if [ -n "${MODELPORT_PIP_INDEX_URL:-}" ]; then opts="--index-url $MODELPORT_PIP_INDEX_URL"; fi
  for url in ${MODELPORT_PIP_EXTRA_INDEX_URL:-}; do opts="$opts --extra-index-url $url"; done
  if ls /tmp/wheelhouse/*.whl >/dev/null 2>&1; then opts="$opts --find-links /tmp/wheelhouse"; fi
fi
# shellcheck disable=SC2086 # word splitting of $opts is intended
/opt/venv/bin/pip install --progress-bar off $opts "$@"
