"""Prometheus metrics for the model server.

With several worker processes the parent sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start, so every worker writes its values there and ``/metrics`` on any worker reports the sum.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

REQUESTS = Counter(
    "modelport_requests", "Prediction requests answered, by endpoint and HTTP status",
    ["endpoint", "status"],
)
ERRORS = Counter(
    "modelport_request_errors",
    "Prediction requests that failed; kind is 'client' (4xx) or 'server' (5xx)",
    ["endpoint", "kind"],
)
LATENCY = Histogram(
    "modelport_request_duration_seconds", "Prediction request latency inside the server",
    ["endpoint"], buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "modelport_requests_in_flight", "Prediction requests being processed",
    multiprocess_mode="livesum",
)
ROWS = Counter("modelport_prediction_rows", "Rows scored")
MODEL_LOAD_SECONDS = Gauge(
    "modelport_model_load_seconds", "Time to load the model in a worker", multiprocess_mode="max"
)
MODEL_READY = Gauge(
    "modelport_model_ready", "1 once the model is loaded in a worker", multiprocess_mode="livemin"
)
LOG_DROPPED = Counter(
    "modelport_prediction_logs_dropped",
    "Prediction log records dropped because the buffer was full",
)
LOG_REJECTED = Counter(
    "modelport_prediction_logs_rejected",
    "Prediction log records the ingest endpoint refused (a batch refused for good, or records "
    "it dropped one by one)",
)
LOG_PAYLOADS_OMITTED = Counter(
    "modelport_prediction_log_payloads_omitted",
    "Request or response bodies logged as null because the ingest endpoint could not store "
    "them (too_large, too_deep); the record itself is shipped",
    ["reason"],
)
LOG_SHIPPED = Counter(
    "modelport_prediction_logs_shipped", "Prediction log records delivered to the ingest endpoint"
)
LOG_SAMPLED_OUT = Counter(
    "modelport_prediction_logs_sampled_out",
    "Prediction log records not kept because of the deployment's sampling rate",
)
SHIP_FAILURES = Counter(
    "modelport_prediction_log_ship_failures", "Failed attempts to deliver a batch of log records"
)
LOG_BUFFERED = Gauge(
    "modelport_prediction_logs_buffered", "Prediction log records waiting to be shipped",
    multiprocess_mode="livesum",
)

_request_children: dict[tuple[str, int], Counter] = {}
_error_children: dict[tuple[str, str], Counter] = {}
_latency_children: dict[str, Histogram] = {}


def observe(endpoint: str, status: int, seconds: float) -> None:
    """Record one prediction request (label children are cached: this is on the hot path)."""
    key = (endpoint, status)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(endpoint, str(status))
    child.inc()
    hist = _latency_children.get(endpoint)
    if hist is None:
        hist = _latency_children[endpoint] = LATENCY.labels(endpoint)
    hist.observe(seconds)
    if status >= 400:
        kind = "server" if status >= 500 else "client"
        err = _error_children.get((endpoint, kind))
        if err is None:
            err = _error_children[(endpoint, kind)] = ERRORS.labels(endpoint, kind)
        err.inc()


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
