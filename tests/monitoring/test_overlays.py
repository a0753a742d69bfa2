"""What the charts draw over the series: revision markers, and per-revision lines while traffic
is split — the same figures as the metric series of that one revision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deployments.models import Revision
from monitoring import overlays, services
from monitoring.services import time_range

from .conftest import ingest_direct, make_version, minutes_ago, record, roll


def test_split_series_match_each_revisions_own_series_and_markers(deployment, ml_model):
    Revision.objects.create(deployment=deployment, number=2, reason="rollback to revision 1",
                            model_version=make_version(ml_model, 2))
    ingest_direct(deployment, [record(i, minutes_ago(30), latency=20 + i, status=500 if i < 3
                                      else 200) for i in range(30)])
    ingest_direct(deployment, [record(100 + i, minutes_ago(4), latency=300 + i)
                               for i in range(10)], revision="2")
    roll()
    start, end, step = time_range(datetime.now(UTC) - timedelta(hours=1), None)
    assert overlays.split_series(deployment=deployment, start=start, end=end, step=step) == []
    deployment.traffic = [{"revision": 1, "percent": 90}, {"revision": 2, "percent": 10}]
    split = overlays.split_series(deployment=deployment, start=start, end=end, step=step)
    assert [(s["revision"], s["percent"]) for s in split] == [(1, 90), (2, 10)]
    for entry in split:
        own = services.metrics_series(deployments=[deployment], start=start, end=end, step=step,
                                      revision=entry["revision"])
        assert entry["latency_p95"] == own["latency_p95"]
        assert entry["error_rate"] == own["error_rate"]
        assert None in entry["error_rate"] and any(v for v in entry["latency_p95"] if v)
    markers = overlays.revision_markers(deployment=deployment, start=start, end=end)
    assert [(m["revision"], m["kind"]) for m in markers] == [(1, "deploy"), (2, "rollback")]
    assert markers[1]["label"] == "r2 (v2) · rollback to revision 1"
