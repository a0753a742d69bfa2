# Redis from Debian's packages on Modelport's base image (no registry pull needed).
#   docker build --network host -f platform/redis.Dockerfile \
#     --build-arg BASE_IMAGE=modelport/base:bookworm -t modelport/redis:7 .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
USER root
RUN set -eu; export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /data; chown redis:redis /data
ENV REDIS_BIND=0.0.0.0 REDIS_PORT=6379
USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=10 \
  CMD redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG || exit 1
CMD ["sh", "-c", "exec redis-server --bind \"$REDIS_BIND\" --port \"$REDIS_PORT\" --dir /data --appendonly yes --protected-mode no --save ''"]
