"""The prediction path: ``POST /serve/<deployment>/invocations`` from a caller to a replica.

A plain package, not a Django app (it has no models; what it writes — ``TrafficSample``,
``ShadowSample`` — belongs to deployments). It sits above monitoring and deployments and may use
them and everything below; nothing below imports it (``config`` wires it in: the MIDDLEWARE
entry, the URL, ``config/edge.py``).

- ``routes``: the in-process caches (routing tables, token checks), the traffic counters, the
  gateway's own refusals and the Django view ``invocations``;
- ``consumers``: consumer keys (``mpk_…``): their cached checks, the per-key token bucket (429)
  and the per-(key, deployment) counts;
- ``middleware``: ``GatewayMiddleware``, the Django path for installs that run gunicorn alone;
- ``edge``, ``edge_protocol``, ``upstream``, ``edge_web``: the edge, the asyncio front door that
  answers predictions on its event loop and streams everything else to Django (``edge_web``);
- ``shadowing``: mirroring a share of requests to a shadow revision;
- ``replica_http``: pooled HTTP to replicas (TCP or unix socket) for the Django-side code;
- ``ingest_socket``, ``mlflow_port``: the edge's other doors (prediction-log ingest for
  replicas without a network; a tracking-server port for stock MLflow clients).
"""
