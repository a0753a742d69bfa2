"""Prometheus metrics of the monitoring pipeline.

Counters are incremented wherever the work happens: ingest in the gunicorn workers, rollups and
alert notifications in Celery workers, gateway errors in the edge. With prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the process starts, as ``make run``,
compose and Kubernetes do) each process writes its values to files and ``exposition`` adds them
up, so every scrape of ``/metrics`` from any web worker returns the same totals; without it
(unit tests, a plain ``runserver``) ``/metrics`` serves this process's counters. Values that
come from the database (rollup lag, alerts firing, deployments by status, replicas desired
and ready per deployment) are read when ``/metrics`` is scraped, by ``DatabaseCollector``.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from core.prom_files import FilesCollector
from deployments.models import Deployment, Replica

from .gateway_errors import CONSUMER_REQUESTS, GATEWAY_EJECTIONS, GATEWAY_ERRORS, RATE_LIMITED
from .models import Alert, AlertRule, AlertState, PredictionRecord, RollupCursor

REGISTRY = CollectorRegistry(auto_describe=True)

INGESTED = Counter("modelport_ingest_records", "Prediction records accepted by ingest",
                   ["deployment"], registry=REGISTRY)
SAMPLED_OUT = Counter("modelport_ingest_sampled_out_records",
                      "Prediction records dropped by the deployment's sampling rate",
                      ["deployment"], registry=REGISTRY)
REJECTED = Counter("modelport_ingest_rejected_records",
                   "Prediction records dropped one by one because they could not be stored "
                   "(the rest of their batch is kept), by reason",
                   ["deployment", "reason"], registry=REGISTRY)
BATCHES = Counter("modelport_ingest_batches", "Ingest batches by outcome", ["outcome"],
                  registry=REGISTRY)
INGEST_SECONDS = Histogram("modelport_ingest_batch_seconds", "Time to validate and store a batch",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                           registry=REGISTRY)
ROLLED_UP = Counter("modelport_rollup_records", "Prediction records folded into rollups",
                    registry=REGISTRY)
NOTIFICATIONS = Counter("modelport_alert_notifications", "Alert notifications sent",
                        ["channel", "outcome"], registry=REGISTRY)


class DatabaseCollector:
    """Gauges read from the database at scrape time (a handful of indexed queries)."""

    def describe(self):
        """Names only, so registering the collector does not query the database."""
        return [
            GaugeMetricFamily("modelport_rollup_lag_seconds", ""),
            GaugeMetricFamily("modelport_rollup_backlog_records", ""),
            GaugeMetricFamily("modelport_alerts_firing", "", labels=["deployment"]),
            GaugeMetricFamily("modelport_deployments", "", labels=["status"]),
            GaugeMetricFamily("modelport_deployment_replicas_desired", "",
                              labels=["deployment"]),
            GaugeMetricFamily("modelport_deployment_replicas_ready", "", labels=["deployment"]),
        ]

    def collect(self):
        now = timezone.now()
        cursor = RollupCursor.objects.filter(name="rollup").first()
        lag = GaugeMetricFamily("modelport_rollup_lag_seconds",
                                "Age of the oldest prediction record not yet rolled up "
                                "(0 when none is waiting)")
        pending = PredictionRecord.objects.filter(id__gt=cursor.last_id if cursor else 0)
        oldest = pending.order_by("id").values_list("received_at", flat=True).first()
        lag.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
        yield lag

        backlog = GaugeMetricFamily("modelport_rollup_backlog_records",
                                    "Prediction records waiting for the rollup task")
        newest_id = PredictionRecord.objects.order_by("-id").values_list("id", flat=True).first()
        backlog.add_metric([], max(0, (newest_id or 0) - (cursor.last_id if cursor else 0)))
        yield backlog

        firing = GaugeMetricFamily("modelport_alerts_firing", "Alerts currently firing "
                                   "(0 for a deployment with enabled rules and none firing)",
                                   labels=["deployment"])
        counts = dict(Alert.objects.filter(state=AlertState.FIRING)
                      .values_list("rule__deployment__name").annotate(n=Count("id")))
        # A series that vanishes when the last alert resolves reads as "no data", not 0.
        for name in AlertRule.objects.filter(enabled=True).values_list(
                "deployment__name", flat=True).distinct():
            counts.setdefault(name, 0)
        for name, n in sorted(counts.items()):
            firing.add_metric([name], n)
        yield firing

        status = GaugeMetricFamily("modelport_deployments", "Deployments by status",
                                   labels=["status"])
        for value, n in Deployment.objects.values_list("status").annotate(n=Count("id")):
            status.add_metric([value], n)
        yield status
        yield from _replica_gauges()


def _replica_gauges():
    """Replicas wanted and ready per deployment: the fixed count, or the autoscaler's (0 while
    idle, scaled to zero); a stopped deployment wants none."""
    desired = GaugeMetricFamily("modelport_deployment_replicas_desired",
                                "Replicas the deployment should run (the autoscaler moves it; "
                                "0 when stopped or idle)", labels=["deployment"])
    ready = GaugeMetricFamily("modelport_deployment_replicas_ready",
                              "Replicas that answer their health check", labels=["deployment"])
    counts = dict(Replica.objects.filter(ready=True).values_list("deployment__name")
                  .annotate(n=Count("id")))
    for name, replicas, stopped in Deployment.objects.order_by("name").values_list(
            "name", "replicas", "stopped"):
        desired.add_metric([name], 0 if stopped else replicas)
        ready.add_metric([name], counts.get(name, 0))
    yield desired
    yield ready


DATABASE = DatabaseCollector()
REGISTRY.register(DATABASE)
# Counted where the gateway answers (the edge, or gunicorn's Django path).
REGISTRY.register(GATEWAY_ERRORS)
REGISTRY.register(GATEWAY_EJECTIONS)
REGISTRY.register(CONSUMER_REQUESTS)
REGISTRY.register(RATE_LIMITED)


def exposition() -> bytes:
    """``/metrics``'s body: all processes' counters added up (multiprocess mode) or this
    process's, and the database gauges."""
    directory = settings.MODELPORT_PROMETHEUS_DIR
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FilesCollector(Path(directory)))
    registry.register(DATABASE)
    return generate_latest(registry)
