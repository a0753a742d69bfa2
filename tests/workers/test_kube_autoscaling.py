"""A deployment's own autoscaling on the Kubernetes runtime: SCHEMA AND CONTRACT TESTS against
``kube_fake.FakeKubeAPI`` (no API server runs here; see test_runtime_kubernetes.py for what
that does and does not cover).

The reconciler passes ``Deployment.autoscaling`` in ``ReplicaSpec.autoscaling``. Metric "cpu"
renders the revision's HorizontalPodAutoscaler (min/max replicas, averageUtilization = the
target), kept in line when the settings change; "concurrency" and "rps" render none (the
platform's scaler drives the count; an HPA would need a custom-metrics adapter). Scaled to
zero, the revision keeps no pod and no HPA that could bring one back; a wake starts afresh.
"""

from __future__ import annotations

from typing import Any

from tests.workers.kube_fake import FakeKubeAPI
from tests.workers.test_runtime_kubernetes import (  # noqa: F401 - fake is a fixture
    fake,
    runtime_for,
    spec,
    validate,
)
from workers.runtimes.base import ScalingHint
from workers.runtimes.kube_manifests import Autoscaling, autoscaling_for, build_hpa

HPA = "horizontalpodautoscalers"
NAME = "mp-iris-r3"


def by_cpu(**kw: Any) -> ScalingHint:
    values: dict[str, Any] = {"min_replicas": 2, "max_replicas": 5, "metric": "cpu",
                              "target": 65}
    values.update(kw)
    return ScalingHint(**values)


def utilization(hpa: dict[str, Any]) -> int:
    return hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]


def test_cpu_autoscaling_renders_a_valid_hpa_with_its_bounds_and_target() -> None:
    hpa = build_hpa(spec(autoscaling=by_cpu()), autoscaling_for(spec(autoscaling=by_cpu()),
                                                                None),
                    namespace="models", min_replicas=1)
    validate(hpa)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"], utilization(hpa)) == \
        (2, 5, 65)
    # The replicas Modelport asked for are the floor when above min_replicas.
    hpa = build_hpa(spec(), Autoscaling(max_replicas=5, min_replicas=2), namespace="models",
                    min_replicas=4)
    validate(hpa)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 5)


def test_concurrency_and_rps_render_no_hpa_and_override_the_targets_default() -> None:
    default = Autoscaling(max_replicas=9, cpu_utilization=80)
    for metric in ("concurrency", "rps"):
        assert autoscaling_for(spec(autoscaling=by_cpu(metric=metric, target=4)),
                               default) is None
    assert autoscaling_for(spec(), default) is default  # a fixed count: the target's HPA
    own = autoscaling_for(spec(autoscaling=by_cpu(target=150.0)), default)
    assert own is not None and own.cpu_utilization == 100  # a percentage of the request


def test_the_runtime_creates_the_hpa_and_follows_the_deployments_settings(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake, url_mode="service")
    rt.start_replica(spec(autoscaling=by_cpu()))
    (created,) = fake.bodies("POST", HPA)
    validate(created)
    assert (created["spec"]["minReplicas"], created["spec"]["maxReplicas"],
            utilization(created)) == (2, 5, 65)
    assert created["spec"]["scaleTargetRef"]["name"] == NAME
    # The scaler raised the count past min_replicas: the floor follows the indices.
    for index in (1, 2):
        rt.start_replica(spec(replica=index, autoscaling=by_cpu()))
    assert fake.get(HPA, NAME)["spec"]["minReplicas"] == 3
    # PATCH /deployments/{name}/ changed the bounds and the target (no new revision): the HPA
    # follows at the next start.
    rt.start_replica(spec(replica=3, autoscaling=by_cpu(max_replicas=8, target=50)))
    hpa = fake.get(HPA, NAME)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"], utilization(hpa)) == \
        (4, 8, 50)
    # Switched to concurrency: the platform's scaler alone, the HPA goes.
    rt.start_replica(spec(replica=4, autoscaling=by_cpu(metric="concurrency", target=4)))
    assert fake.get(HPA, NAME) is None


def test_concurrency_autoscaling_leaves_the_count_to_the_platform(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake, autoscaling=Autoscaling(max_replicas=9))  # the target's default
    hint = by_cpu(metric="concurrency", target=4)
    rt.start_replica(spec(autoscaling=hint))
    rt.start_replica(spec(replica=1, autoscaling=hint))
    assert fake.bodies("POST", HPA) == []
    dep = fake.get("deployments", NAME)
    assert dep["spec"]["replicas"] == 2  # exactly the count the platform's scaler set


def test_scaled_to_zero_no_pod_and_no_hpa_remain_and_a_wake_starts_afresh(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake, url_mode="service")
    ids = [rt.start_replica(spec(replica=i, autoscaling=by_cpu(min_replicas=1))).id
           for i in (0, 1)]
    for replica_id in ids:  # the reconciler's sleep_all: drain, then remove each replica
        rt.stop_replica(replica_id, timeout=5)
        rt.remove_replica(replica_id)
    assert rt.list_replicas("iris") == []
    for kind in ("deployments", HPA, "services"):
        assert fake.get(kind, NAME) is None, kind  # nothing can scale it back up by itself
    woken = rt.start_replica(spec(autoscaling=by_cpu(min_replicas=1)))
    assert [s.id for s in rt.list_replicas("iris")] == [woken.id]
    assert fake.get("deployments", NAME)["spec"]["replicas"] == 1
    assert fake.get(HPA, NAME)["spec"]["minReplicas"] == 1
