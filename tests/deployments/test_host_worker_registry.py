"""A real host worker on an engine of its own, fed through a registry: a Celery host worker
process started the documented way, whose Docker is a second dockerd (``DOCKER_HOST``; own data
root, nothing shared with this machine's engine), serves a deployment of a ``"hosts"`` target
with a ``registry``. The reconciler (this process) builds the serving image on this machine's
engine and pushes it to a loopback ``docker-registry``; the host worker pulls the pinned
reference and starts the replica on its engine; the gateway gets a prediction from it.

What stays shared on this one machine: the network namespace (the replica listens on
127.0.0.1) and the data dir the model is unpacked into; the lead's cross-host tests take those
apart too.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest

from compute.models import ExecutionTarget, Host
from deployments.models import Deployment, Replica, Revision
from deployments.reconcile import reconcile_deployment
from tests.deployments.test_docker import deploy, gateway_client, invoke
from tests.deployments.test_host_workers import wait_for, workers  # noqa: F401 - fixture
from tests.extra_dockerd import extra_dockerd
from tests.fixtures import bearer_client
from tests.registry_fixture import Registry, registry  # noqa: F401 - fixture

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def test_a_host_worker_on_its_own_engine_pulls_and_serves(
        workers, registry: Registry, docker_client, engineer, v1):  # noqa: F811
    a = workers.names[0]
    prefix = f"{registry.address}/hw"
    target = ExecutionTarget.objects.get(name="hosts")
    target.settings = {"placement": "hosts", "registry": prefix}
    target.save()
    name = f"hr-{uuid.uuid4().hex[:6]}"
    ref = ""
    with extra_dockerd() as engine:
        workers.env["DOCKER_HOST"] = engine.socket
        try:
            workers.start(a)
            wait_for("the host to register", lambda: Host.objects.filter(
                name=a, state="alive", queue__startswith="host.").exists(), workers)
            deploy(bearer_client(engineer), name, replicas=1, target="hosts")
            d = Deployment.objects.get(name=name)
            outcome = reconcile_deployment(d.pk)
            ref = Revision.objects.get(deployment=d, number=1).image
            if outcome != "healthy":  # a slow first pull: the next pass finds it there
                outcome = reconcile_deployment(d.pk)
            assert outcome == "healthy", (list(d.events.values_list("message", flat=True)[:5]),
                                          workers.output())
            assert ref.startswith(f"{prefix}/serving:") and "@sha256:" in ref, ref
            [row] = Replica.objects.filter(deployment=d)
            container = engine.client.containers.get(row.runtime_id)
            assert container.attrs["Config"]["Image"] == ref
            assert not engine.client.images.list(name="modelport/serving")  # nothing built
            assert not docker_client.containers.list(  # nothing on this machine's engine
                all=True, filters={"label": f"modelport.deployment={name}"})
            assert invoke(gateway_client(engineer), name).status_code == 200
            log = (workers.logs / f"{a}.log").read_text()
            assert f"pulling {ref} from {registry.address}" in log and "pulled " in log
        finally:
            workers.stop()
            workers.procs.clear()
            if ref:
                with contextlib.suppress(Exception):
                    docker_client.images.remove(ref.partition("@")[0], noprune=True)
