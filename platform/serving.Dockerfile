# Model-server image: `python -m serving` (serving/) with the model's Python requirements.
#   docker build --network host -f platform/serving.Dockerfile \
#     --build-arg BASE_IMAGE=modelport/base:bookworm -t modelport/serving:dev .
# Packages are installed from wheels only (platform/images/wheels.sh), by uid 10001, never root:
# online, the build stage downloads the wheels first (pip download --only-binary=:all:); with
# MODELPORT_PIP_OFFLINE=1 they are all in platform/wheelhouse/ already and the build needs no
# network. workers/runtimes/images.py builds this same file with a generated context (the
# wheelhouse it fetched, platform/extra-requirements.txt holding the model's requirements) and
# network_mode none. The model is mounted read-only at /model (default), or baked into a thin
# layer FROM this image. Requirements: serving/requirements.txt, or
# platform/serving-requirements.txt until it exists.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
USER root
ARG MODELPORT_PIP_INDEX_URL=
ARG MODELPORT_PIP_EXTRA_INDEX_URL=
ARG MODELPORT_PIP_OFFLINE=0
ENV PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
RUN mkdir -p /opt/venv /tmp/wheelhouse && chown 10001:10001 /opt/venv /tmp/wheelhouse
COPY platform/certs/ /tmp/certs/
COPY --chown=10001:10001 platform/wheelhouse/ /tmp/wheelhouse/
COPY platform/images/wheels.sh /usr/local/bin/modelport-wheels
# The globs let the optional files be absent (the placeholder always exists).
COPY platform/serving-requirements.txt serving/requirements.tx[t] \
     platform/extra-requirements.tx[t] /tmp/req/
USER 10001:10001
RUN set -eu; req=/tmp/req/requirements.txt; \
    [ -f "$req" ] || req=/tmp/req/serving-requirements.txt; \
    extra=""; [ -f /tmp/req/extra-requirements.txt ] && extra="-r /tmp/req/extra-requirements.txt"; \
    sh /usr/local/bin/modelport-wheels -r "$req" $extra
# The serving code stays root-owned even here: the installed packages' code (a .pth file runs
# at every interpreter start) cannot change it. Compiled by the system interpreter (-I: no
# venv, no site hooks), never by the venv's as root.
USER root
COPY serving/ /app/serving/
RUN python3 -I -m compileall -q /app/serving >/dev/null && mkdir /tmp/record \
 && chown 10001:10001 /tmp/record
USER 10001:10001
# skops computes its trusted-type list at import by importing all of scikit-learn, and SciPy
# parses and re-renders ~600 docstrings while it is imported: record both once here (the list,
# and SciPy's docstring parses/renders keyed by content, beside it in
# serving-import-cache.docstrings.pickle) and the server replays them while the model loads
# (serving/fastimport.py). It imports the installed packages, so it runs as uid 10001, in the
# same network-less build.
RUN cd /app && PYTHONPATH=/app /opt/venv/bin/python -m serving.fastimport \
      --record /tmp/record/serving-import-cache.json

FROM ${BASE_IMAGE}
USER root
RUN (getent group 10001 >/dev/null || groupadd --gid 10001 modelport) \
 && (getent passwd 10001 >/dev/null || useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin modelport) \
 && mkdir -p /model
# Root-owned in the final image: the runtime user cannot change the installed packages.
COPY --from=build --chown=0:0 /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app HOME=/tmp \
    MODELPORT_MODEL_DIR=/model MODELPORT_HOST=0.0.0.0 MODELPORT_PORT=8080
WORKDIR /app
COPY --from=build --chown=0:0 /app/ /app/
COPY --from=build --chown=0:0 /tmp/record/ /app/
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving"]
