"""Rollups: per-minute counts, errors, latency histograms and predictions, built incrementally;
the metrics API reads them; raw records are pruned after the retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from monitoring import rollups, services, stats
from monitoring.models import FeatureSketch, MinuteRollup, PredictionRecord
from tests.fixtures import bearer_client

from .conftest import ingest_direct, minutes_ago, record, roll


def test_percentiles_from_the_fixed_buckets_track_the_exact_ones():
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(3.0, 0.6, 20000)
    buckets = stats.empty_buckets()
    for v in latencies:
        buckets[stats.latency_bucket(v)] += 1
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, q))
        assert stats.percentile(buckets, q) == pytest.approx(exact, rel=0.15)


def test_rollup_counts_errors_latency_and_predictions(deployment):
    t0 = minutes_ago(10)
    records = [record(i, t0, latency=10 + i % 5, prediction=i % 3) for i in range(60)]
    records += [record(100 + i, t0 + timedelta(minutes=1), latency=200, status=500)
                for i in range(4)]
    records += [record(200 + i, t0 + timedelta(minutes=1), latency=20, prediction=1)
                for i in range(16)]
    ingest_direct(deployment, records)
    assert roll() == 80
    first, second = MinuteRollup.objects.order_by("minute")
    assert (first.count, first.errors) == (60, 0)
    assert (second.count, second.errors) == (20, 4)
    assert first.predictions["classes"] == {"0": 20, "1": 20, "2": 20}
    assert sum(second.latency_buckets) == 20
    sketch = FeatureSketch.objects.get()
    assert sketch.rows == 80
    assert set(sketch.features) == {"x1", "x2", "color"}
    assert sketch.features["color"]["counts"] == {"red": 80}


def test_rollup_is_incremental_and_skips_records_still_in_flight(deployment, settings):
    t0 = minutes_ago(5)
    ingest_direct(deployment, [record(i, t0) for i in range(10)])
    now = datetime.now(UTC)
    # Just received: left for the next pass.
    assert rollups.rollup(now=now) == 0
    assert roll() == 10
    ingest_direct(deployment, [record(100 + i, t0) for i in range(5)])
    assert roll() == 5
    assert roll() == 0
    rollup = MinuteRollup.objects.get()
    assert rollup.count == 15
    assert FeatureSketch.objects.get().rows == 15


def test_metrics_api_series(deployment, viewer):
    t0 = minutes_ago(30)
    records = []
    for m in range(10):
        for i in range(6):
            records.append(record(m * 10 + i, t0 + timedelta(minutes=m), latency=5 + m,
                                  status=500 if i == 0 else 200, prediction=i % 2))
    ingest_direct(deployment, records)
    roll()
    start = (t0 - timedelta(minutes=1)).replace(second=0).isoformat()
    end = (t0 + timedelta(minutes=14)).isoformat()
    response = bearer_client(viewer).get("/api/v1/deployments/churn-prod/metrics/",
                                         {"start": start, "end": end, "step": 300})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["step"] == 300
    assert len(body["timestamps"]) == len(body["requests"]) == 4  # 15.5 min in 5-min steps
    assert sum(body["requests"]) == 60
    assert body["totals"]["error_rate"] == pytest.approx(100 / 6, rel=1e-3)
    assert body["predictions"]["kind"] == "classes"
    assert set(body["predictions"]["classes"]) == {"0", "1"}
    assert all(p is None or p > 0 for p in body["latency_p95"])
    assert body["totals"]["latency_p99"] >= body["totals"]["latency_p50"]


def test_metrics_api_scoping_and_bad_ranges(deployment, outsider, viewer):
    assert bearer_client(outsider).get(
        "/api/v1/deployments/churn-prod/metrics/").status_code == 404
    client = bearer_client(viewer)
    bad = client.get("/api/v1/deployments/churn-prod/metrics/",
                     {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"})
    assert bad.status_code == 400
    assert client.get("/api/v1/deployments/churn-prod/metrics/",
                      {"step": 90}).status_code == 400
    assert client.get("/api/v1/deployments/churn-prod/metrics/").status_code == 200


def test_prune_removes_old_raw_records_but_keeps_rollups(deployment, settings):
    settings.MODELPORT_MONITORING_RAW_RETENTION_DAYS = 1
    old = datetime.now(UTC) - timedelta(days=2)
    ingest_direct(deployment, [record(i, old) for i in range(5)]
                  + [record(10 + i, minutes_ago(3)) for i in range(3)])
    roll()
    result = rollups.prune()
    assert result["records"] == 5
    assert PredictionRecord.objects.count() == 3
    assert sum(MinuteRollup.objects.values_list("count", flat=True)) == 8


def test_sampled_records_are_weighted_back_up(deployment, engineer):
    services.set_sampling_rate(actor=engineer, deployment=deployment, sampling_rate=0.5)
    ingest_direct(deployment, [record(i, minutes_ago(2), request_id=f"s-{i}")
                               for i in range(1000)])
    roll()
    total = sum(MinuteRollup.objects.values_list("count", flat=True))
    assert 850 < total < 1150


@pytest.mark.django_db(transaction=True)
def test_records_of_a_deleted_deployment_do_not_stop_the_rollups(deployment, other_deployment):
    """Found by bench/soak.py: a deployment deleted before its last records were rolled up
    made every later pass fail on the foreign key at commit (transaction=True: a real one),
    so no deployment got rollups again until the raw records were pruned."""
    t0 = minutes_ago(5)
    ingest_direct(deployment, [record(i, t0) for i in range(10)])
    ingest_direct(other_deployment, [record(100 + i, t0) for i in range(4)])
    other_deployment.delete()  # what deployments.services.delete does
    assert roll() == 14  # all consumed: the cursor passed the deleted one's records
    rollup = MinuteRollup.objects.get()
    assert (rollup.deployment_id, rollup.count) == (deployment.pk, 10)
    assert FeatureSketch.objects.get().deployment_id == deployment.pk
    ingest_direct(deployment, [record(200 + i, t0) for i in range(3)])
    assert roll() == 3
    assert MinuteRollup.objects.get().count == 13


@pytest.mark.django_db(transaction=True)
def test_a_pass_holding_only_a_deleted_deployments_records_moves_the_cursor_on(
        deployment, other_deployment):
    """Found by bench/soak.py after the fix above: a pass in which every record was the
    deleted deployment's had no minute to store and failed (min() of nothing) — again
    forever, since its cursor never moved."""
    t0 = minutes_ago(5)
    ingest_direct(other_deployment, [record(i, t0) for i in range(4)])
    other_deployment.delete()
    assert roll() == 4
    assert not MinuteRollup.objects.exists()
    ingest_direct(deployment, [record(100 + i, t0) for i in range(3)])
    assert roll() == 3
    assert MinuteRollup.objects.get().count == 3
