# Model-server image: `python -m serving` (serving/) with the model's Python requirements.
#   docker build --network host -f platform/serving.Dockerfile \
#     --build-arg BASE_IMAGE=modelport/base:bookworm -t modelport/serving:dev .
# The model is mounted read-only at /model (default); workers/runtimes/images.py can also bake it
# into a thin layer FROM this image. workers/runtimes/images.py builds this same file with a
# generated context: platform/extra-requirements.txt then holds the model's requirements.
# Requirements: serving/requirements.txt, or platform/serving-requirements.txt until it exists.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
USER root
ARG MODELPORT_PIP_INDEX_URL=
ARG MODELPORT_PIP_EXTRA_INDEX_URL=
ARG MODELPORT_PIP_OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY platform/certs/ /tmp/certs/
COPY platform/wheelhouse/ /tmp/wheelhouse/
COPY platform/images/pip-install.sh /usr/local/bin/modelport-pip-install
# The globs let the optional files be absent (the placeholder always exists).
COPY platform/serving-requirements.txt serving/requirements.tx[t] \
     platform/extra-requirements.tx[t] /tmp/req/
RUN set -eu; req=/tmp/req/requirements.txt; \
    [ -f "$req" ] || req=/tmp/req/serving-requirements.txt; \
    extra=""; [ -f /tmp/req/extra-requirements.txt ] && extra="-r /tmp/req/extra-requirements.txt"; \
    python3 -m venv /opt/venv; \
    sh /usr/local/bin/modelport-pip-install -r "$req" $extra

FROM ${BASE_IMAGE}
USER root
RUN (getent group 10001 >/dev/null || groupadd --gid 10001 modelport) \
 && (getent passwd 10001 >/dev/null || useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin modelport) \
 && mkdir -p /model
COPY --from=build /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app HOME=/tmp \
    MODELPORT_MODEL_DIR=/model MODELPORT_HOST=0.0.0.0 MODELPORT_PORT=8080
WORKDIR /app
COPY serving/ /app/serving/
# skops computes its trusted-type list at import by importing all of scikit-learn, and SciPy
# parses and re-renders ~600 docstrings while it is imported: record both once here (the list,
# and SciPy's docstring parses/renders keyed by content, beside it in
# serving-import-cache.docstrings.pickle) and the server replays them while the model loads
# (serving/fastimport.py). Recording needs no network: the offline build works as before.
RUN python -m compileall -q /app/serving >/dev/null \
 && python -m serving.fastimport --record /app/serving-import-cache.json
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving"]
