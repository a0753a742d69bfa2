#!/usr/bin/env bash
# Start (or stop) the real services the test suite needs, on loopback, in a private directory:
# PostgreSQL 15 (as the `postgres` user; it refuses to run as root), Redis, and Docker Engine.
#   source .ci/services.sh && services_start   → exports DATABASE_URL and REDIS_URL
#   services_stop                              → stops what services_start started
set -euo pipefail

SERVICES_DIR=${SERVICES_DIR:-$(mktemp -d /tmp/modelport-ci.XXXXXX)}
PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
SHARED_DIR=${SHARED_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared}
STARTED_DOCKERD=0

_apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

_pg_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

services_start() {
  # prometheus: the real server and promtool for tests/monitoring/test_prometheus_*.py;
  # wrk: the bounded bursts of tests/deployments/test_autoscale_docker.py;
  # docker-registry: the registry serving images reach other engines through
  # (tests/registry_fixture.py, tests/netlab.py).
  _apt_install redis-server chromium debootstrap prometheus wrk docker-registry
  # Node.js and npm: the OpenID provider of the SSO tests (tests/oidc/, oidc-provider 9 wants
  # Node >= 20; tests/oidc_provider.py runs `npm ci` from the committed lock file).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    _apt_install nodejs npm
  fi
  chmod 755 "$SERVICES_DIR"
  local pgbin; pgbin=$(_pg_bin)
  mkdir -p "$SERVICES_DIR/pg"; chown postgres:postgres "$SERVICES_DIR/pg"
  su postgres -c "$pgbin/initdb -D $SERVICES_DIR/pg/data -A trust -U postgres --no-sync -E UTF8" >/dev/null
  su postgres -c "$pgbin/pg_ctl -D $SERVICES_DIR/pg/data -l $SERVICES_DIR/pg/log -w start \
    -o '-p $PG_PORT -k $SERVICES_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=200'" >/dev/null
  su postgres -c "$pgbin/createdb -h 127.0.0.1 -p $PG_PORT -U postgres modelport"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
    --appendonly no --dir "$SERVICES_DIR" --pidfile "$SERVICES_DIR/redis.pid" \
    --logfile "$SERVICES_DIR/redis.log"
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if ! docker info >/dev/null 2>&1; then
    STARTED_DOCKERD=1
    DOCKERD_LOG="$SERVICES_DIR/dockerd.log" "$SHARED_DIR/scripts/start-dockerd"
  fi
  # The Swarm tests join a single-node swarm themselves (and leave it); remember whether this
  # engine was in one already, so services_stop leaves only a swarm the tests left behind.
  SWARM_BEFORE=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/modelport"
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  echo "services up: $DATABASE_URL $REDIS_URL docker=$(docker version --format '{{.Server.Version}}')"
}

services_stop() {
  set +e
  # Test hosts (tests/netlab.py) of a test run that died before its own clean-up: namespaces,
  # their dockerds, the registry.
  .venv/bin/python -m tests.netlab sweep 2>/dev/null || python3 -m tests.netlab sweep
  # Containers the tests labelled, in case a test died before its own cleanup.
  local leftover; leftover=$(docker ps -aq --filter label=modelport.managed=1 2>/dev/null)
  [ -n "$leftover" ] && docker rm -f $leftover >/dev/null 2>&1
  # Swarm services the tests created, and the swarm itself if the tests joined it and died
  # before their own `docker swarm leave --force` (pytest killed, timeout).
  local services; services=$(docker service ls -q --filter label=modelport.managed=1 2>/dev/null)
  [ -n "$services" ] && docker service rm $services >/dev/null 2>&1
  if [ "${SWARM_BEFORE:-unknown}" = inactive ] && \
     [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; then
    docker swarm leave --force >/dev/null 2>&1
    docker network rm docker_gwbridge >/dev/null 2>&1
  fi
  [ -f "$SERVICES_DIR/redis.pid" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
  local pgbin; pgbin=$(_pg_bin)
  [ -d "$SERVICES_DIR/pg/data" ] && su postgres -c "$pgbin/pg_ctl -D $SERVICES_DIR/pg/data -m fast -w stop" >/dev/null 2>&1
  if [ "$STARTED_DOCKERD" = 1 ]; then pkill -TERM -x dockerd; sleep 2; fi
  rm -rf "$SERVICES_DIR"
  set -e
}
