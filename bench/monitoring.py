"""Monitoring: ingest throughput into PostgreSQL and metrics-API latency over 7 days of rollups.

Usage: DATABASE_URL=postgres://user@127.0.0.1:5432/postgres .venv/bin/python bench/monitoring.py
It creates (or reuses) a scratch database ``modelport_bench_monitoring`` on that server, then

1. ingest: POSTs batches shaped like the model server's (``serving/shipping.py``) to
   ``/api/v1/ingest/predictions/`` through the full Django/DRF stack, in process (server time,
   no network), and prints records/s. Target: >= 20,000 records/s batched. It also times the
   rollup task folding those records into minute rollups.
2. metrics API: seeds the rollups of 7 days of one deployment carrying 5 million records
   directly (10,080 minute rows, 168 hourly feature sketches), then times
   ``GET /deployments/{name}/metrics/`` and ``/drift/`` over the 7 days. Target: p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from scratch import percentile as _pct
from scratch import setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records to ingest")
    parser.add_argument("--batch", default="500,1000,5000",
                        help="records per ingest batch (comma-separated sizes to try)")
    parser.add_argument("--total", type=int, default=5_000_000,
                        help="records the seeded 7 days of rollups stand for")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    setup_django("modelport_bench_monitoring",
                 env={"MODELPORT_MONITORING_ROLLUP_DELAY_S": "0"})
    import numpy as np
    import orjson
    import pandas as pd
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.test import APIClient

    from deployments.models import Deployment, Revision
    from monitoring import ingest, rollups, stats
    from monitoring.models import FeatureSketch, MinuteRollup, PredictionRecord
    from registry import reference
    from registry.models import ModelVersion, RegisteredModel
    from teams import services as team_services
    from teams.models import Membership, Team

    print(f"PostgreSQL {connection.cursor().connection.info.server_version}, "
          f"database {connection.settings_dict['NAME']}")
    user, _ = get_user_model().objects.get_or_create(username="bench")
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "maintainer"})
    model, _ = RegisteredModel.objects.get_or_create(name="bench-churn", team=team)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x1": rng.normal(0, 1, 5000), "x2": rng.exponential(2, 5000),
                          "color": rng.choice(["red", "green", "blue"], 5000)})
    version, _ = ModelVersion.objects.get_or_create(
        model=model, version=1, defaults={"status": "ready", "source_format": "mlflow",
                                          "reference_stats": reference.compute(
                                              frame, source="reference_data")})
    deployment, _ = Deployment.objects.get_or_create(
        name="bench-churn", defaults={"team": team, "model": model, "version": version,
                                      "revision": 1, "status": "healthy"})
    Revision.objects.get_or_create(deployment=deployment, number=1,
                                   defaults={"model_version": version})

    # --- 1. ingest throughput --------------------------------------------------------------
    table = PredictionRecord._meta.db_table
    MinuteRollup.objects.filter(deployment=deployment).delete()
    FeatureSketch.objects.filter(deployment=deployment).delete()
    token = ingest.issue_ingest_token(deployment=deployment)
    client = APIClient()
    now = datetime.now(UTC)

    def make_bodies(batch: int) -> list[bytes]:
        bodies = []
        for b in range(args.records // batch):
            records = []
            for i in range(batch):
                ts = now - timedelta(seconds=(b * batch + i) % 3600)
                records.append({
                    "request_id": uuid.uuid4().hex,
                    "timestamp": ts.isoformat(timespec="milliseconds"),
                    "latency_ms": float(rng.lognormal(2.5, 0.5)), "status": 200,
                    "endpoint": "invocations",
                    "inputs": {"columns": ["x1", "x2", "color"],
                               "data": [[float(rng.normal()), float(rng.exponential(2)),
                                         "red"]]},
                    "outputs": [int(i % 3)], "error": None})
            bodies.append(orjson.dumps({"deployment": "bench-churn", "revision": "1",
                                        "replica": "bench-churn-r1-0", "records": records}))
        return bodies

    print(f"\ningest through POST /api/v1/ingest/predictions/ into an empty table "
          f"({args.records:,} records per run; target >= 20,000 records/s)")
    for batch in [int(b) for b in args.batch.split(",")]:
        bodies = make_bodies(batch)
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {table}")
        started = time.perf_counter()
        for body in bodies:
            response = client.generic("POST", "/api/v1/ingest/predictions/", body,
                                      content_type="application/json",
                                      HTTP_AUTHORIZATION=f"Bearer {token}")
            assert response.status_code == 202, response.content[:300]
        elapsed = time.perf_counter() - started
        n = len(bodies) * batch
        stored = PredictionRecord.objects.filter(deployment=deployment).count()
        assert stored == n, (stored, n)
        print(f"  batches of {batch:>5}: {n:,} records ({len(bodies[0]) / batch:.0f} bytes each) "
              f"in {elapsed:.2f} s = {n / elapsed:,.0f} records/s")
    started = time.perf_counter()
    rolled = 0
    while m := rollups.rollup():
        rolled += m
    elapsed = time.perf_counter() - started
    print(f"rollup of the last run: {rolled:,} records folded into minute rollups + hourly "
          f"sketches in {elapsed:.2f} s = {rolled / elapsed:,.0f} records/s")

    # --- 2. metrics API over 7 days of rollups ---------------------------------------------
    MinuteRollup.objects.filter(deployment=deployment).delete()
    FeatureSketch.objects.filter(deployment=deployment).delete()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=7)
    minutes = 7 * 24 * 60
    per_minute = args.total / minutes
    started = time.perf_counter()
    rows = []
    ref = version.reference_stats["features"]
    for m in range(minutes):
        count = float(round(per_minute * (0.6 + 0.8 * ((m % 1440) / 1440))))
        latencies = rng.lognormal(2.5, 0.5, 64)
        buckets = stats.empty_buckets()
        for v in latencies:
            buckets[stats.latency_bucket(v)] += count / 64
        rows.append(MinuteRollup(
            deployment=deployment, revision=1, minute=start + timedelta(minutes=m),
            count=count, errors=float(rng.poisson(count * 0.005)),
            latency_sum=float(latencies.mean() * count), latency_buckets=buckets,
            predictions={"classes": {"0": count * 0.5, "1": count * 0.3, "2": count * 0.2},
                         "n": 0, "sum": 0.0, "values": []}))
    MinuteRollup.objects.bulk_create(rows, batch_size=2000)
    sketches = []
    for h in range(7 * 24):
        sample = {name: rng.normal(0, 1, stats.SAMPLE_PER_SKETCH).tolist() for name in ("x1",)}
        features = {
            "x1": {"counts": [per_minute * 6] * (len(ref["x1"]["bin_edges"]) - 1),
                   "seen": per_minute * 60, "sample": sample["x1"]},
            "x2": {"counts": [per_minute * 6] * (len(ref["x2"]["bin_edges"]) - 1),
                   "seen": per_minute * 60,
                   "sample": rng.exponential(2, stats.SAMPLE_PER_SKETCH).tolist()},
            "color": {"counts": {"red": per_minute * 20, "green": per_minute * 20,
                                 "blue": per_minute * 20}},
        }
        sketches.append(FeatureSketch(deployment=deployment, revision=1,
                                      hour=start + timedelta(hours=h),
                                      rows=int(per_minute * 60), features=features))
    FeatureSketch.objects.bulk_create(sketches)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_minuterollup; ANALYZE monitoring_featuresketch")
    total = sum(MinuteRollup.objects.filter(deployment=deployment)
                .values_list("count", flat=True))
    print(f"\nseeded {minutes:,} minute rollups + {len(sketches)} hourly sketches standing for "
          f"{total:,.0f} records in {time.perf_counter() - started:.1f} s")

    _, secret = team_services.create_token(actor=user, name=f"bench-{time.time()}")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    span = {"start": start.isoformat(), "end": end.isoformat()}
    calls = {
        "metrics 7d (default step 1 h)": ("/api/v1/deployments/bench-churn/metrics/", span),
        "metrics 7d, step 10 min": ("/api/v1/deployments/bench-churn/metrics/",
                                    {**span, "step": 600}),
        "metrics 24h (step 5 min)": ("/api/v1/deployments/bench-churn/metrics/",
                                     {"start": (end - timedelta(days=1)).isoformat(),
                                      "end": end.isoformat()}),
        "drift 7d": ("/api/v1/deployments/bench-churn/drift/", span),
    }
    print(f"\n{'call':<32} {'p50 ms':>8} {'p95 ms':>8}  (n={args.repeat}, target p95 < 300 ms)")
    for label, (path, params) in calls.items():
        first = api.get(path, params)
        assert first.status_code == 200, (path, first.content[:300])
        timings = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            response = api.get(path, params)
            timings.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        print(f"{label:<32} {statistics.median(timings):8.1f} {_pct(timings, 0.95):8.1f}")
    body = api.get(*calls["metrics 7d (default step 1 h)"]).json()
    print(f"(7-day totals from the API: {body['totals']['requests']:,.0f} requests, "
          f"p95 {body['totals']['latency_p95']} ms)")


if __name__ == "__main__":
    main()
