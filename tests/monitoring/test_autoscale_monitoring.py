"""What monitoring adds for autoscaling: the CPU load hook the scaler calls (registered by
``MonitoringConfig.ready``), replicas over time on the deployment's and the model's pages
(drawn as steps from ``ScaleSample``), and the desired/ready Prometheus gauges."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from deployments import autoscale
from deployments.models import Deployment, Replica, ScaleSample
from deployments.spec import Autoscaling
from monitoring import scale
from monitoring.models import ReplicaStat

from .conftest import make_deployment
from .test_pages_metrics import embedded, logged_in

NOW = timezone.now().replace(second=0, microsecond=0)


def replica(d: Deployment, rid: str, *, ready: bool = True, index: int = 0) -> Replica:
    return Replica.objects.create(deployment=d, runtime_id=rid, revision=1, index=index,
                                  status="running", ready=ready)


def stat(d: Deployment, rid: str, cpu: float, seconds_ago: float) -> None:
    ReplicaStat.objects.create(deployment=d, runtime_id=rid, revision=1, index=0,
                               at=NOW - timedelta(seconds=seconds_ago), cpu_percent=cpu,
                               memory_mb=100)


def test_the_cpu_hook_is_registered_when_monitoring_loads():
    assert scale.cpu_load in autoscale._cpu_load


def test_cpu_load_sums_each_live_replicas_mean_since_the_window(deployment):
    since = NOW - timedelta(seconds=10)
    assert scale.cpu_load(deployment=deployment, since=since) is None  # no samples yet
    replica(deployment, "a")
    replica(deployment, "b", index=1)
    stat(deployment, "a", 40, 8)
    stat(deployment, "a", 60, 2)       # a: mean 50
    stat(deployment, "b", 30, 5)       # b: mean 30
    stat(deployment, "b", 500, 30)     # before the window: not counted
    stat(deployment, "gone", 90, 3)    # a replica removed since: not counted
    assert scale.cpu_load(deployment=deployment, since=since) == pytest.approx(80)


def test_the_scaler_reads_cpu_through_the_hook(deployment):
    """``deployments.autoscale.load`` with metric cpu asks monitoring (no other source)."""
    replica(deployment, "a")
    stat(deployment, "a", 150, 1)
    a = Autoscaling.parse({"max_replicas": 4, "metric": "cpu", "target": 50})
    assert autoscale.load(deployment, a, now=NOW) == pytest.approx(150)
    assert autoscale.want(a, 1, 150)[0] == 3


def test_scale_series_holds_each_count_and_shows_the_peak_of_a_step(deployment):
    start = NOW - timedelta(minutes=5)
    ScaleSample.objects.create(deployment=deployment, at=start - timedelta(minutes=3),
                               desired=1, ready=1)
    for minute, desired, ready in ((1.5, 3, 1), (1.7, 3, 3), (3.2, 0, 0)):
        ScaleSample.objects.create(deployment=deployment, at=start + timedelta(minutes=minute),
                                   desired=desired, ready=ready)
    series = scale.scale_series(deployments=[deployment], start=start, end=NOW, step=60)
    assert series == {"desired": [1, 3, 3, 3, 0], "ready": [1, 3, 3, 3, 0], "sampled": True}


def test_scale_series_is_none_for_a_fixed_deployment_and_empty_for_a_new_autoscaled_one(
        deployment):
    start = NOW - timedelta(minutes=3)
    assert scale.scale_series(deployments=[deployment], start=start, end=NOW, step=60) is None
    deployment.autoscaling = Autoscaling(max_replicas=3).as_dict()
    series = scale.scale_series(deployments=[deployment], start=start, end=NOW, step=60)
    assert series == {"desired": [None] * 3, "ready": [None] * 3, "sampled": False}


def test_the_model_page_sums_its_deployments(deployment, team, ml_model, version, viewer):
    other = make_deployment(team, ml_model, version, name="churn-canary")
    start = NOW - timedelta(minutes=2)
    ScaleSample.objects.create(deployment=deployment, at=start - timedelta(minutes=1),
                               desired=2, ready=2)
    ScaleSample.objects.create(deployment=other, at=start + timedelta(seconds=70),
                               desired=1, ready=0)
    series = scale.scale_series(deployments=[deployment, other], start=start, end=NOW,
                                step=60)
    assert series["desired"] == [2, 3] and series["ready"] == [2, 2]
    html = logged_in(viewer).get("/monitoring/models/churn/?range=1h").content.decode()
    assert "Replicas over time" in html and "summed over the model" in html
    assert embedded(html, "series-model")["scale"]["sampled"] is True


def test_the_deployment_page_draws_replicas_over_time_for_an_autoscaled_deployment(
        deployment, viewer):
    html = logged_in(viewer).get("/monitoring/deployments/churn-prod/?range=1h").content \
        .decode()
    assert "Replicas over time" not in html  # a fixed count: nothing to draw
    Deployment.objects.filter(pk=deployment.pk).update(
        autoscaling=Autoscaling(max_replicas=3, idle_to_zero_after_s=60).as_dict())
    ScaleSample.objects.create(deployment=deployment, at=NOW - timedelta(minutes=20),
                               desired=2, ready=2)
    html = logged_in(viewer).get("/monitoring/deployments/churn-prod/?range=1h").content \
        .decode()
    assert 'data-chart="scale"' in html and "between 1 and 3, 0 when idle" in html
    shown = embedded(html, "series-all")["scale"]
    assert shown["sampled"] and shown["desired"][-1] == 2
    assert len(shown["desired"]) == len(embedded(html, "series-all")["timestamps"])


def test_prometheus_replica_gauges(deployment, team, ml_model, version, settings):
    settings.MODELPORT_METRICS_TOKEN = "prometheus-secret"
    Deployment.objects.filter(pk=deployment.pk).update(replicas=3)
    replica(deployment, "a")
    replica(deployment, "b", index=1)
    replica(deployment, "c", index=2, ready=False)
    idle = make_deployment(team, ml_model, version, name="churn-idle")
    Deployment.objects.filter(pk=idle.pk).update(replicas=0, status="idle")
    stopped = make_deployment(team, ml_model, version, name="churn-stopped")
    Deployment.objects.filter(pk=stopped.pk).update(replicas=2, stopped=True)
    text = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer prometheus-secret") \
        .content.decode()
    assert 'modelport_deployment_replicas_desired{deployment="churn-prod"} 3.0' in text
    assert 'modelport_deployment_replicas_ready{deployment="churn-prod"} 2.0' in text
    assert 'modelport_deployment_replicas_desired{deployment="churn-idle"} 0.0' in text
    assert 'modelport_deployment_replicas_ready{deployment="churn-idle"} 0.0' in text
    assert 'modelport_deployment_replicas_desired{deployment="churn-stopped"} 0.0' in text
    assert 'modelport_deployments{status="idle"} 1.0' in text
