"""Installations that never touch each other (issue 26, seen 4), on the real Docker Engine.

The test process is one installation (its PostgreSQL test database, its data dir). A second
installation runs in subprocesses with another data dir and its own SQLite database
(``tests/deployments/second_installation.py``) and deploys under the same deployment name.
Neither lists, adopts or removes the other's container; an orphan of this installation is
removed with an audit record, the other installation's orphan is left alone (and its own
sweep removes it). Containers made before installation ids are adopted only when they carry
one of this installation's replica keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deployments import services
from deployments.models import Deployment, DeploymentEvent
from deployments.orphans import sweep
from deployments.reconcile import reconcile_deployment
from teams.installation import installation_id
from teams.models import AuditEvent
from tests.deployments.conftest import key_of, unique_name
from workers.factory import get_runtime
from workers.runtimes.base import LABEL_INSTALLATION, ReplicaSpec

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parents[2]


class Second:
    """The other installation: each command a subprocess on its own data dir and database."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items()
                    if k not in {"DATABASE_URL", "REDIS_URL", "MODELPORT_DATA_DIR"}}
        self.env.update({"DJANGO_SETTINGS_MODULE": "config.settings.test",
                         "MODELPORT_DATA_DIR": str(data_dir), "MODELPORT_RUNTIME": "docker",
                         "MODELPORT_DOCKER_NETWORK": "none", "MODELPORT_DRAIN_SECONDS": "1",
                         "MODELPORT_READY_TIMEOUT_S": "120"})

    def __call__(self, *args: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "tests.deployments.second_installation",
                               *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, f"second installation {args}:\n{done.stderr[-4000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def second(tmp_path: Path, docker_client: Any) -> Any:
    other = Second(tmp_path / "second-installation")
    yield other
    for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTALLATION}"}):
        if container.labels.get(LABEL_INSTALLATION) not in (None, installation_id()) and \
                str(other.data_dir) in json.dumps(container.attrs.get("Mounts") or []):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


def labelled(docker_client: Any, name: str) -> dict[str, str]:
    """Container name -> its installation label, for every container of deployment `name`."""
    return {c.name: c.labels.get(LABEL_INSTALLATION, "")
            for c in docker_client.containers.list(
                all=True, filters={"label": f"modelport.deployment={name}"})}


def test_two_installations_with_the_same_deployment_name_never_touch_each_others_replicas(
        docker_client, docker_env, platform_serving_image, engineer, team, v1, iris_dir,
        second, monkeypatch):
    name = unique_name("twin")
    docker_env.append(name)
    ours = installation_id()
    d = services.create_deployment(actor=engineer, team=team, name=name, model="iris",
                                   version=1, replicas=1,
                                   resources={"cpu": 0.5, "memory_mb": 768})
    assert d.runtime == "docker"
    assert reconcile_deployment(d.pk) == "healthy"
    (mine,) = get_runtime("docker").list_replicas(name)
    assert mine.id.startswith(f"mp-{ours[:8]}-{name}-r1-")

    # The other installation deploys the same name on the same engine: its own container.
    theirs_state = second("deploy", name, str(iris_dir))
    assert theirs_state["status"] == "healthy", theirs_state
    theirs = theirs_state["installation"]
    assert theirs != ours
    (their_replica,) = theirs_state["replicas"]
    assert their_replica != mine.id and their_replica.startswith(f"mp-{theirs[:8]}-{name}-")
    assert labelled(docker_client, name) == {mine.id: ours, their_replica: theirs}

    # Neither lists, adopts or removes the other's container.
    assert [s.id for s in get_runtime("docker").list_replicas()] == [mine.id]
    assert get_runtime("docker").get_replica(their_replica).status.value == "missing"
    get_runtime("docker").remove_replica(their_replica)  # not ours: ignored
    assert reconcile_deployment(d.pk) == "healthy"
    assert [r.runtime_id for r in Deployment.objects.get(pk=d.pk).replica_set.all()] == \
        [mine.id]
    assert second("reconcile", name)["replicas"] == [their_replica]
    assert labelled(docker_client, name) == {mine.id: ours, their_replica: theirs}
    assert docker_client.containers.get(their_replica).status == "running"

    # The other installation's orphan (deleted there, its removal lost) is left alone here...
    assert second("forget", name)["replicas"] == [their_replica]
    assert sweep() == []
    assert docker_client.containers.get(their_replica).status == "running"

    # ...and ours is removed by our sweep, with an audit record; theirs still runs.
    monkeypatch.setattr("deployments.passes.enqueue_remove", lambda *a, **k: None)
    services.delete(actor=engineer, deployment=Deployment.objects.get(pk=d.pk))
    assert sweep() == [mine.id]
    record = AuditEvent.objects.get(action="deployment.orphan_removed")
    assert record.object_repr == name and record.before["replica"] == mine.id
    assert "not in this installation's database" in record.after["reason"]
    assert labelled(docker_client, name) == {their_replica: theirs}

    # The other installation's own sweep removes its orphan (and only that).
    swept = second("sweep")
    assert swept["removed"] == [their_replica] and swept["audited"] == [their_replica]
    assert labelled(docker_client, name) == {}


def test_a_container_from_before_installation_ids_is_adopted_only_with_our_replica_key(
        docker_client, docker_env, platform_serving_image, engineer, team, v1, tmp_path):
    """Made by an older release: no installation label, named without an id. Ours when it
    holds the replica key of our deployment's revision; another's (a wrong key) stays theirs:
    never listed, never swept."""
    from workers.runtimes.docker import DockerRuntime

    name = unique_name("legacy")
    docker_env.append(name)
    d = services.create_deployment(actor=engineer, team=team, name=name, model="iris",
                                   version=1, replicas=1,
                                   resources={"cpu": 0.5, "memory_mb": 768})
    old_release = DockerRuntime(docker_client, state_dir=tmp_path / "old-release")  # unscoped
    image = platform_serving_image

    def legacy(revision: int, key: str, replica: int = 0) -> str:
        spec = ReplicaSpec(deployment=name, revision=revision, replica=replica, image=image,
                           env={"MODELPORT_REPLICA_KEY": key}, memory_mb=256)
        return old_release.start_replica(spec).id

    ours = legacy(1, key_of(d, 1))
    foreign = legacy(1, "f" * 64, replica=1)  # same deployment name, another database's key
    assert ours == f"mp-{name}-r1-0"
    assert labelled(docker_client, name) == {ours: "", foreign: ""}
    runtime = get_runtime("docker")
    assert [s.id for s in runtime.list_replicas(name)] == [ours]
    assert runtime.get_replica(foreign).status.value == "missing"
    assert sweep() == []  # ours is wanted (revision 1 of a known deployment); foreign unseen
    runtime.remove_replica(foreign)
    assert set(labelled(docker_client, name)) == {ours, foreign}


def test_an_orphan_left_on_the_other_runtime_is_removed_with_an_event(
        docker_client, docker_env, platform_serving_image, engineer, team, v1, settings):
    """What re-deciding "auto" used to leave behind: a deployment fixed on Docker with a local
    replica still running. The sweep removes it, with an event on the deployment."""
    name = unique_name("moved")
    docker_env.append(name)
    d = services.create_deployment(actor=engineer, team=team, name=name, model="iris",
                                   version=1, replicas=1,
                                   resources={"cpu": 0.5, "memory_mb": 768})
    assert d.runtime == "docker"
    from deployments.reconcile import model_dir_for

    local = get_runtime("local")
    stray = local.start_replica(ReplicaSpec(
        deployment=name, revision=1, replica=0, model_dir=str(model_dir_for(v1)),
        memory_mb=768))
    try:
        assert sweep() == [stray.id]
        assert local.list_replicas(name) == []
        event = DeploymentEvent.objects.get(deployment=d, kind="warning")
        assert f"Removed orphan replica {stray.id}" in event.message
        assert "is fixed on Docker; this replica runs on Local processes" in event.message
        assert AuditEvent.objects.filter(action="deployment.orphan_removed",
                                         object_repr=name).count() == 1
    finally:
        local.remove_replica(stray.id)


@pytest.mark.django_db
def test_validation_sandboxes_are_cleaned_up_only_for_this_installation(
        docker_client, platform_serving_image, settings):
    """A killed worker's sandbox of the same job name, and sandboxes older than the time
    limit: ours are removed (with an audit record), another installation's are not."""
    from deployments.orphans import sweep_sandboxes
    from registry.sandbox import _remove_leftovers

    ours, theirs = installation_id(), "0" * 32
    job = unique_name("job")

    def sandbox(owner: str) -> Any:
        return docker_client.containers.create(
            settings.MODELPORT_SERVING_BASE_IMAGE, command=["true"],
            labels={"modelport.sandbox": "1", "modelport.sandbox.job": job,
                    "modelport.managed": "1", LABEL_INSTALLATION: owner})

    def alive(container: Any) -> bool:
        return bool(docker_client.containers.list(all=True, filters={"id": container.id}))

    mine, other = sandbox(ours), sandbox(theirs)
    try:
        _remove_leftovers(docker_client, job, ours)  # a re-run of the job after a killed worker
        assert not alive(mine) and alive(other)
        mine = sandbox(ours)
        settings.MODELPORT_SANDBOX_TIMEOUT_S = -10_000  # both are "older than the limit" now
        assert sweep_sandboxes(get_runtime("docker")) == [mine.name]
        assert not alive(mine) and alive(other)
        record = AuditEvent.objects.get(action="sandbox.orphan_removed")
        assert record.object_repr == mine.name and record.after["job"] == job
    finally:
        for container in (mine, other):
            with contextlib.suppress(Exception):
                container.remove(force=True)
