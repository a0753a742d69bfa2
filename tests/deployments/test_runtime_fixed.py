"""A deployment's runtime is fixed when it is created (issue 26, seen 2).

``MODELPORT_RUNTIME=auto`` is resolved once, at creation, and every reconcile uses that: a
deployment made while Docker was away runs as local processes and stays there when Docker
comes back; a Docker deployment whose engine stops answering is degraded with the reason —
not failed, not moved — and healthy again when it answers. Docker "away" is this process's
Docker endpoint (``DOCKER_HOST``) pointing at a socket nothing listens on: the platform's
client really finds no daemon there. Nothing is mocked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client

from deployments import services
from deployments.models import Deployment, Revision
from deployments.reconcile import reconcile_deployment
from gateway import routes
from tests.deployments.conftest import COLUMNS, ROWS, unique_name
from tests.factories import make_token
from tests.fixtures import bearer_client
from workers.factory import get_runtime

URL = "/api/v1/deployments/"


@pytest.fixture
def auto(settings, no_enqueue, db):
    """MODELPORT_RUNTIME=auto, as ``make run`` has it; local replicas removed afterwards."""
    settings.MODELPORT_RUNTIME = "auto"
    settings.MODELPORT_DOCKER_NETWORK = "none"
    settings.MODELPORT_DRAIN_SECONDS = 0
    settings.MODELPORT_READY_TIMEOUT_S = 120
    routes.invalidate()
    yield
    local = get_runtime("local")
    for replica in local.list_replicas():
        local.remove_replica(replica.id)
    routes.invalidate()


def docker_away(monkeypatch, tmp_path: Path) -> None:
    """This process's Docker endpoint: a socket path where no daemon listens."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker-here.sock'}")


def predict(user, name: str) -> list:
    _, secret = make_token(user, name=f"fixed-{name}")
    response = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").post(
        f"/serve/{name}/invocations", content_type="application/json",
        data={"dataframe_split": {"columns": COLUMNS, "data": ROWS}})
    assert response.status_code == 200, response.content
    return response.json()["predictions"]


@pytest.mark.docker
def test_made_while_docker_was_away_it_stays_local_when_docker_comes_back(
        auto, docker_client, engineer, team, v1, monkeypatch, tmp_path):
    name = unique_name("early")
    docker_away(monkeypatch, tmp_path)
    api = bearer_client(engineer)
    response = api.post(URL, {"name": name, "team": team.slug, "model": "iris", "version": 1,
                              "replicas": 1, "resources": {"cpu": 0.5, "memory_mb": 768}},
                        format="json")
    assert response.status_code == 202 and response.json()["runtime"] == "local"
    d = Deployment.objects.get(name=name)
    assert reconcile_deployment(d.pk) == "healthy"
    (replica,) = d.replica_set.all()
    assert predict(engineer, name) == [0, 2]

    monkeypatch.delenv("DOCKER_HOST")  # Docker comes up a minute later
    assert docker_client.ping()
    for _ in range(2):
        assert reconcile_deployment(d.pk) == "healthy"
    d.refresh_from_db()
    assert d.runtime == "local" and d.status == "healthy"
    assert [r.runtime_id for r in d.replica_set.all()] == [replica.runtime_id]
    assert docker_client.containers.list(
        all=True, filters={"label": f"modelport.deployment={name}"}) == []
    assert [s.id for s in get_runtime("local").list_replicas(name)] == [replica.runtime_id]
    assert predict(engineer, name) == [0, 2]
    assert not d.events.filter(kind__in=["warning", "error"]).exists()
    page = Client()
    page.force_login(engineer)
    html = page.get(f"/deployments/{name}/").content.decode()
    assert 'id="runtime"' in html and "Local processes (unsandboxed)" in html
    # New deployments, made now that Docker answers, run there; this one was not moved.
    assert services.create_deployment(actor=engineer, team=team, name=unique_name("later"),
                                      model="iris", version=1).runtime == "docker"


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_docker_deployment_whose_engine_stops_answering_is_degraded_not_failed_nor_moved(
        auto, docker_client, docker_env, engineer, team, v1, monkeypatch, tmp_path):
    name = unique_name("steady")
    docker_env.append(name)
    d = services.create_deployment(actor=engineer, team=team, name=name, model="iris",
                                   version=1, replicas=1,
                                   resources={"cpu": 0.5, "memory_mb": 768})
    assert d.runtime == "docker"
    assert reconcile_deployment(d.pk) == "healthy"
    (container,) = d.replica_set.values_list("runtime_id", flat=True)

    docker_away(monkeypatch, tmp_path)  # the engine stops answering
    for _ in range(2):
        assert reconcile_deployment(d.pk) == "unreachable"
    d.refresh_from_db()
    assert d.status == "degraded" and d.runtime == "docker"
    # "on target default" when the default target row exists (a flushed database has none)
    assert re.match(r"Runtime unreachable: the Docker runtime( on target default)? does not "
                    r"answer \(", d.status_message), d.status_message
    assert "No such file or directory" in d.status_message  # the reason, from the client
    assert "nothing is moved or restarted elsewhere" in d.status_message
    (warning,) = d.events.filter(kind="warning")  # one event, not one per pass
    assert warning.message == d.status_message
    assert Revision.objects.get(deployment=d, number=1).state == "active"  # not failed
    assert get_runtime("local").list_replicas(name) == []  # not moved
    assert list(d.replica_set.values_list("runtime_id", flat=True)) == [container]

    monkeypatch.delenv("DOCKER_HOST")  # it answers again
    assert reconcile_deployment(d.pk) == "healthy"
    d.refresh_from_db()
    assert d.status == "healthy"
    assert list(d.replica_set.values_list("runtime_id", flat=True)) == [container]
    assert d.events.filter(message="The Docker runtime answers again; reconciling.").exists()


def test_existing_deployments_get_the_runtime_they_run_on(settings, engineer, team, v1,
                                                          no_enqueue):
    """The migration: a target's kind, else what built the current revision's image, else
    MODELPORT_RUNTIME when it names one; "auto" with nothing built is decided on the next
    reconcile, once (with an event)."""
    from importlib import import_module

    from compute.models import ExecutionTarget
    from deployments.runtime_health import fix_runtime

    migration = import_module("deployments.migrations.0007_deployment_runtime")
    swarm = ExecutionTarget.objects.create(name="swarm-1", kind="swarm",
                                           endpoint="tcp://manager:2376")

    def made(name: str, image: str = "", target=None) -> Deployment:
        d = services.create_deployment(actor=engineer, team=team, name=name, model="iris",
                                       version=1)
        Revision.objects.filter(deployment=d).update(image=image)
        Deployment.objects.filter(pk=d.pk).update(runtime="", target=target)
        return d

    local = made("was-local", "local:/usr/bin/python3")
    docker = made("was-docker", "modelport/serving:6fc8f6de09c2")
    clustered = made("on-swarm", target=swarm)
    unbuilt = made("never-built")
    settings.MODELPORT_RUNTIME = "auto"
    then = MigrationLoader(connection).project_state(
        ("deployments", "0007_deployment_runtime")).apps
    migration.fix_existing(then, None)
    runtimes = dict(Deployment.objects.values_list("name", "runtime"))
    assert runtimes == {"was-local": "local", "was-docker": "docker", "on-swarm": "swarm",
                        "never-built": ""}
    settings.MODELPORT_RUNTIME = "local"
    unbuilt.refresh_from_db()
    assert fix_runtime(unbuilt) == "local"
    assert fix_runtime(unbuilt) == "local"
    assert unbuilt.events.filter(message__startswith="Runtime fixed: Local processes").count() \
        == 1
    del local, docker, clustered
