"""Several plain Docker hosts with a registry (real Docker, PostgreSQL, a loopback
``docker-registry``): the reconciler builds the serving image on its own engine, pushes it, the
revision records the registry reference and the host worker runs exactly that image.

Both "hosts" share this machine's one engine here (see ``test_docker_hosts.py``), so the host's
pull finds the image the push tagged; the pull itself by an engine that has nothing is
``tests/workers/test_registry_images.py`` (a second dockerd), and across network namespaces the
lead's cross-host tests.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest

from deployments.models import Replica, Revision
from tests.deployments.test_docker import converge, deploy, gateway_client, invoke
from tests.deployments.test_docker_hosts import hosts  # noqa: F401 - fixture
from tests.fixtures import bearer_client
from tests.registry_fixture import Registry, registry, tag_of  # noqa: F401 - fixture

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(900)]


def test_hosts_run_the_image_the_reconciler_pushed(hosts, registry: Registry,  # noqa: F811
                                                   docker_client, engineer, v1):
    prefix = f"{registry.address}/mp"
    hosts.target.settings = {"placement": "hosts", "registry": prefix}
    hosts.target.save()
    name = f"mh-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=2, target="hosts",
           resources={"cpu": 0.5, "memory_mb": 512})
    ref = ""
    try:
        converge(name)
        ref = Revision.objects.get(deployment__name=name, number=1).image
        assert ref.startswith(f"{prefix}/serving:") and "@sha256:" in ref, ref
        assert tag_of(ref) in registry.tags("mp/serving")
        rows = list(Replica.objects.filter(deployment__name=name).select_related("host"))
        assert sorted(r.host.name for r in rows) == sorted(hosts.names)  # spread
        for row in rows:
            container = docker_client.containers.get(row.runtime_id)
            assert container.attrs["Config"]["Image"] == ref
        assert invoke(gateway_client(engineer), name).status_code == 200
        from deployments.models import DeploymentEvent

        build_log = "\n".join(DeploymentEvent.objects.filter(deployment__name=name)
                              .values_list("message", flat=True))
        assert f"the hosts pull it from {prefix}" in build_log, build_log[-2000:]
    finally:
        if ref:
            for container in docker_client.containers.list(
                    all=True, filters={"label": f"modelport.deployment={name}"}):
                container.remove(force=True, v=True)
            with contextlib.suppress(Exception):
                docker_client.images.remove(ref.partition("@")[0], noprune=True)
