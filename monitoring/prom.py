"""Prometheus metrics of the monitoring pipeline.

Counters live in this process; values that come from the database (rollup lag, alerts firing,
deployments by status) are read when ``/metrics`` is scraped, by ``DatabaseCollector``.
"""

from __future__ import annotations

from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from deployments.models import Deployment

from .gateway_errors import GATEWAY_ERRORS
from .models import Alert, AlertState, PredictionRecord, RollupCursor

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

        firing = GaugeMetricFamily("modelport_alerts_firing", "Alerts currently firing",
                                   labels=["deployment"])
        for name, n in (Alert.objects.filter(state=AlertState.FIRING)
                        .values_list("rule__deployment__name").annotate(n=Count("id"))):
            firing.add_metric([name], n)
        yield firing

        status = GaugeMetricFamily("modelport_deployments", "Deployments by status",
                                   labels=["status"])
        for value, n in Deployment.objects.values_list("status").annotate(n=Count("id")):
            status.add_metric([value], n)
        yield status


REGISTRY.register(DatabaseCollector())
# Counted where the gateway answers (the edge, or gunicorn's Django path): per process until
# /metrics adds processes up (prometheus-client's multiprocess mode).
REGISTRY.register(GATEWAY_ERRORS)
