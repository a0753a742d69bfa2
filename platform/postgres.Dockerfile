# PostgreSQL from Debian's packages on Modelport's base image (no registry pull needed).
#   docker build --network host -f platform/postgres.Dockerfile \
#     --build-arg BASE_IMAGE=modelport/base:bookworm -t modelport/postgres:15 .
# Debian bookworm ships PostgreSQL 15; another Debian base brings its own major version.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
USER root
ARG PG_PACKAGE=postgresql
RUN set -eu; export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends "$PG_PACKAGE" >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    ln -s "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)" /usr/local/lib/pgbin; \
    mkdir -p /var/lib/postgresql/data /run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY platform/postgres/entrypoint.sh /usr/local/bin/modelport-postgres
ENV PATH=/usr/local/lib/pgbin:$PATH PGDATA=/var/lib/postgresql/data \
    POSTGRES_LISTEN=* POSTGRES_PORT=5432
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=3s --retries=10 \
  CMD pg_isready -h 127.0.0.1 -p "$POSTGRES_PORT" -U "${POSTGRES_USER:-postgres}" || exit 1
ENTRYPOINT ["sh", "/usr/local/bin/modelport-postgres"]
