"""Batch chunks on several plain Docker hosts with a registry (real Docker, PostgreSQL, a
loopback ``docker-registry``): the job's runner builds the serving image on its own engine and
pushes it; each host's start task runs the registry reference, never a build of its own.

Simulated hosts sharing this machine's one engine, as in ``test_hosts_docker.py`` (whose
fixture this reuses); the pull by an engine that has nothing is
``tests/workers/test_registry_images.py``.
"""

from __future__ import annotations

import contextlib

import pytest

from jobs import host_tasks
from jobs.models import HostChunk
from tests.jobs.conftest import iris_frame, run_to_end
from tests.jobs.test_hosts_docker import make_job, output_of, two_hosts  # noqa: F401 - fixture
from tests.registry_fixture import Registry, registry, tag_of  # noqa: F401 - fixture

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(900)]


def test_chunks_on_hosts_run_the_pushed_image(two_hosts, registry: Registry,  # noqa: F811
                                              docker_jobs, engineer, iris_version):
    target, (a, b) = two_hosts
    prefix = f"{registry.address}/jobs"
    target.settings = {"placement": "hosts", "registry": prefix}
    target.save()
    frame = iris_frame(2_000, seed=9)
    job = make_job(engineer, iris_version, target, frame, chunk_rows=1_000)
    images: set[str] = set()

    def heartbeats(j):
        for name in (a, b):
            host_tasks.report_host_chunks(name)
        for row in HostChunk.objects.filter(job=j):
            images.add(str(row.spec.get("image")))
            if row.runtime_id:
                with contextlib.suppress(Exception):
                    images.add(docker_jobs.containers.get(row.runtime_id)
                               .attrs["Config"]["Image"])
        return False

    try:
        assert run_to_end(job, until=heartbeats, limit_s=600) == "succeeded", \
            job.status_message
        assert len(images) == 1, images
        ref = images.pop()
        assert ref.startswith(f"{prefix}/serving:"), ref
        assert tag_of(ref) in registry.tags("jobs/serving")
        assert len(output_of(engineer, job)) == 2_000
    finally:
        for image in docker_jobs.images.list(name=f"{prefix}/serving"):
            for tag in image.tags:
                with contextlib.suppress(Exception):
                    docker_jobs.images.remove(tag, noprune=True)
