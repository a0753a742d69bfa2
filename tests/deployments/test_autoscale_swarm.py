"""The scaler's count on a real single-node Docker Swarm (host networking): the reconciler
converges 1 → 2 → 1 → 0 → 1 by adding and removing replica services. On Swarm a replica is one
single-task service (``workers/runtimes/swarm.py`` says why), so scaling never recreates or
updates the services that stay: the first replica's service keeps its id throughout until the
deployment sleeps, when every service goes (no task, nothing reserved on the node) and the
route stays; a wake creates the first one again.

The load is what the gateways would have written (``TrafficSample``), as in test_autoscale.py;
the decisions are the real scaler's."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from compute import targets
from deployments import autoscale, services
from deployments.models import Deployment
from deployments.reconcile import reconcile_deployment
from gateway import routes
from quotas.services import usage
from tests.deployments.test_autoscale import traffic
from tests.deployments.test_swarm_target import converge_healthy, services_of
from tests.swarm_fixtures import remove_services, swarm  # noqa: F401 - fixture

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(900)]


@pytest.fixture
def swarm_target(swarm, platform_serving_image, settings, no_enqueue, admin_user,  # noqa: F811
                 monkeypatch):
    settings.MODELPORT_DRAIN_SECONDS = 0.5
    settings.MODELPORT_READY_TIMEOUT_S = 240
    settings.MODELPORT_AUTOSCALE_WINDOW_S = 10
    woken: list[int] = []  # the wake task's pass is run by the test itself
    monkeypatch.setattr(autoscale, "task", lambda name: type(
        "T", (), {"delay": staticmethod(woken.append)}))
    routes.invalidate()
    target = targets.create_target(actor=admin_user, name="swarm-auto", kind="swarm",
                                   settings={"network": "host", "port_range": [22600, 22699]})
    names: list[str] = []
    yield target, names
    for name in names:
        remove_services(swarm, f"modelport.deployment={name}")
    routes.invalidate()


def ids(client, name: str) -> dict[int, str]:
    """Replica index → service id."""
    return {int(s.attrs["Spec"]["Labels"]["modelport.replica"]): s.id
            for s in services_of(client, name)}


def test_the_count_converges_on_swarm_by_adding_and_removing_replica_services(
        swarm, swarm_target, engineer, team, v1):  # noqa: F811
    target, names = swarm_target
    name = f"swa-{time.monotonic_ns() % 10**8}"
    names.append(name)
    d = services.create_deployment(
        actor=engineer, team=team, name=name, model="iris", version=1, target=target.name,
        resources={"cpu": 0.25, "memory_mb": 512},
        autoscaling={"min_replicas": 1, "max_replicas": 2, "target": 2,
                     "scale_down_delay_s": 0, "idle_to_zero_after_s": 60})
    converge_healthy(name)
    first = ids(swarm, name)
    assert list(first) == [0]

    traffic(d, in_flight=4.0)  # 4 in flight against 2 per replica
    assert autoscale.autoscale(d.pk).wanted == 2
    d = converge_healthy(name)
    up = ids(swarm, name)
    assert sorted(up) == [0, 1] and up[0] == first[0]  # added, nothing recreated
    assert d.replicas == 2

    later = timezone.now() + timedelta(seconds=30)  # the window holds no request any more
    assert autoscale.autoscale(d.pk, now=later).wanted == 1
    converge_healthy(name)
    assert ids(swarm, name) == first  # the added service removed, the first untouched

    asleep = timezone.now() + timedelta(seconds=120)  # past idle_to_zero_after_s
    assert autoscale.autoscale(d.pk, now=asleep).wanted == 0
    assert reconcile_deployment(d.pk) == "idle"
    d.refresh_from_db()
    assert d.status == "idle" and d.replicas == 0
    assert services_of(swarm, name) == []  # no task left on the node
    assert usage(team).used.cpu == Decimal("0")
    assert routes.route_for(name) is not None  # the route stays for the wake

    assert autoscale.wake(d.pk) is True
    d = converge_healthy(name)
    assert d.replicas == 1 and list(ids(swarm, name)) == [0]
    assert usage(team).used.cpu == Decimal("0.25")
    assert Deployment.objects.get(pk=d.pk).revision == 1  # no revision was made
