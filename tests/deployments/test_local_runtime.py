"""Without Docker (`make run` on a bare machine): the same reconciler runs replicas as local
processes through the local runtime, and the gateway serves them."""

from __future__ import annotations

import pytest

from deployments import services
from deployments.models import Deployment
from deployments.reconcile import reconcile_deployment
from gateway import routes
from tests.deployments.conftest import COLUMNS, ROWS
from tests.factories import make_token


@pytest.fixture
def local_runtime(settings, no_enqueue, db):  # db: runtimes carry the installation's id
    from workers.factory import get_runtime

    settings.MODELPORT_RUNTIME = "local"
    settings.MODELPORT_PORT_RANGE = (22000, 22499)
    settings.MODELPORT_DRAIN_SECONDS = 0
    routes.invalidate()
    runtime = get_runtime()
    yield runtime
    for replica in runtime.list_replicas():
        runtime.remove_replica(replica.id)
    routes.invalidate()


def test_deploy_predict_stop_with_local_processes(local_runtime, engineer, team, v1):
    from django.test import Client

    d = services.create_deployment(actor=engineer, team=team, name="iris-local", model="iris",
                                   version=1, replicas=1)
    assert reconcile_deployment(d.pk) == "healthy"
    d.refresh_from_db()
    assert d.status == "healthy" and d.replica_set.get().url.startswith("http+unix://")
    _, secret = make_token(engineer, name="local")
    response = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").post(
        "/serve/iris-local/invocations", content_type="application/json",
        data={"dataframe_split": {"columns": COLUMNS, "data": ROWS}})
    assert response.status_code == 200, response.content
    assert response.json()["predictions"] == [0, 2]
    services.stop(actor=engineer, deployment=Deployment.objects.get(pk=d.pk))
    assert reconcile_deployment(d.pk) == "stopped"
    assert local_runtime.list_replicas("iris-local") == []
