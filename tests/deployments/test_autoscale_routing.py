"""Two things the scaler on real Docker (test_autoscale_docker.py) found, kept here as fast
tests with the in-memory runtime of test_autoscale.py:

- a replica that turns ready (or is drained) changes the deployment's ``routing_version``, so
  the edge, which reloads a route only when that changes, routes to a replica the scaler added
  (it used to compare the rows after updating them in place: a scaled-up replica got no
  traffic through the edge until something else bumped the version);
- a capped scale-up is one event while the cap lasts, though the load figure in its message
  differs at every look.
"""

from __future__ import annotations

import pytest

from deployments import autoscale
from deployments.models import Deployment
from deployments.reconcile import reconcile_deployment
from deployments.reconcile.reconciler import Reconciler
from quotas.models import TeamQuota
from quotas.services import get_quota
from tests.deployments.test_autoscale import fast, running, traffic  # noqa: F401 - fixture
from workers.runtimes import ScalingHint

pytestmark = pytest.mark.django_db


def version(d: Deployment) -> int:
    return Deployment.objects.values_list("routing_version", flat=True).get(pk=d.pk)


def test_a_replica_turning_ready_or_draining_changes_the_routing_version(
        fast, engineer, team, v1, upstreams):  # noqa: F811
    d, runtime = running(engineer, team, upstreams, min_replicas=2)
    reconciler = Reconciler(d, runtime)
    before = version(d)
    reconciler.publish()
    assert version(d) == before  # nothing changed: the edge keeps its route
    victim = runtime.list_replicas(d.name)[1].id
    reconciler.draining.add(victim)
    reconciler.publish()
    assert version(d) == before + 1
    reconciler.draining.discard(victim)
    reconciler.publish()
    assert version(d) == before + 2


def test_a_capped_scale_up_is_one_event_while_the_load_changes(
        fast, engineer, team, v1, upstreams):  # noqa: F811
    get_quota(team)
    TeamQuota.objects.filter(team=team).update(cpu=1)  # room for 2 x 0.5 CPU
    d, _ = running(engineer, team, upstreams)
    for in_flight in (8.0, 7.3, 9.1, 6.4):  # the figure in the message differs every look
        traffic(d, in_flight=in_flight)
        autoscale.autoscale(d.pk)
    d.refresh_from_db()
    assert d.replicas == 2
    caps = list(d.events.filter(kind="warning").values_list("message", flat=True))
    assert len(caps) == 1 and caps[0].startswith("Scale-up capped at 2 of the 4"), caps


def test_the_reconciler_gives_the_runtime_the_deployments_autoscaling(
        fast, engineer, team, v1, upstreams):  # noqa: F811
    """What Kubernetes turns into an HPA (workers/runtimes/kube_manifests.autoscaling_for)."""
    d, runtime = running(engineer, team, upstreams, metric="cpu", target=60, min_replicas=2)
    seen: list = []
    start = runtime.start_replica
    runtime.start_replica = lambda spec: (seen.append(spec.autoscaling), start(spec))[1]
    Deployment.objects.filter(pk=d.pk).update(replicas=3)
    reconcile_deployment(d.pk, runtime)
    assert seen == [ScalingHint(min_replicas=2, max_replicas=4, metric="cpu", target=60.0)]
