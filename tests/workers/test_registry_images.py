"""Serving images reach other engines through a registry (issue 23), on the real Docker Engine:
the platform's engine builds the iris serving image (shared with the other Docker tests) and
pushes it to a loopback ``docker-registry``; a second dockerd started here — its own data root,
nothing shared with the first — pulls it as a host worker would and runs a replica that serves
a prediction. A registry that does not answer fails the start with the registry named and
nothing left. Swarm services name the registry reference when the target has a registry (a
spec-level check; the three-node swarm is the cross-host tests').

The push/pull figures are printed (``-s``) for docs/beyond-one-host.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deployments.host_side import host_image
from deployments.hosts_runtime import HostsRuntime
from serving.sockets import request
from tests.extra_dockerd import extra_dockerd
from tests.registry_fixture import Registry, free_port, registry, tag_of  # noqa: F401 - fixture
from tests.workers.conftest import TEST_LABEL, TEST_PORT_RANGE
from workers.runtimes.base import ReplicaRuntimeError, ReplicaSpec, wait_ready
from workers.runtimes.docker import DockerRuntime
from workers.runtimes.images import ImageBuilder, normalize_requirements
from workers.runtimes.registry_push import RegistryPublisher, is_registry_ref, split_ref
from workers.runtimes.swarm import SwarmRuntime

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def _spec(deployment: str, image: str, model_dir: Path | None) -> ReplicaSpec:
    return ReplicaSpec(deployment=deployment, revision=1, replica=0, image=image,
                       model_dir=str(model_dir) if model_dir else None, model_name="iris",
                       model_version="1", cpu=1.0, memory_mb=768, labels={TEST_LABEL: "1"},
                       installation="registry-test")


def _host_runtime(client: Any, tmp_path: Path) -> DockerRuntime:
    """What ``workers.factory.host_worker_runtime`` builds, on ``client``'s engine."""
    return DockerRuntime(client, network="host", bind_host="127.0.0.1",
                         port_range=TEST_PORT_RANGE, state_dir=tmp_path / "runtime",
                         host_name="h2", installation="registry-test",
                         extra_labels={TEST_LABEL: "1"})


def _untag(client: Any, ref: str) -> None:
    """Drop the registry tag from the platform's engine (the image itself is shared)."""
    with contextlib.suppress(Exception):
        client.images.remove(ref.partition("@")[0], noprune=True)


def test_ref_helpers() -> None:
    assert split_ref("127.0.0.1:5000/mp/serving:abc") == ("127.0.0.1:5000/mp/serving", "abc")
    assert split_ref("127.0.0.1:5000/mp/serving") == ("127.0.0.1:5000/mp/serving", "latest")
    pinned = "127.0.0.1:5000/mp/serving:abc@sha256:" + "0" * 64
    assert split_ref(pinned) == ("127.0.0.1:5000/mp/serving", "sha256:" + "0" * 64)
    assert is_registry_ref(pinned)
    assert is_registry_ref("127.0.0.1:5000/mp/serving:abc")
    assert is_registry_ref("registry.example.com/serving:abc")
    assert not is_registry_ref("modelport/serving:abc")
    assert is_registry_ref("r.example/mp/serving:x", "r.example/mp")
    assert not is_registry_ref("r.example/other/serving:x", "r.example/mp")


@pytest.mark.django_db
def test_the_platform_pushes_and_a_second_engine_pulls_and_serves(
        docker_client: Any, image_builder: Any, serving_image: str, iris_requirements: list[str],
        iris_model_dir: Path, registry: Registry, tmp_path: Path,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deployments.host_side")
    prefix = f"{registry.address}/mp"
    # The reconciler's side: built (cached here) on this engine, pushed, the registry ref.
    hosts = HostsRuntime(SimpleNamespace(settings={"placement": "hosts", "registry": prefix}),
                         installation="registry-test", image_builder=image_builder)
    lines: list[str] = []
    started = time.monotonic()
    ref = hosts.ensure_image(iris_requirements, lines.append)
    push_s = time.monotonic() - started
    try:
        # Pinned to the pushed manifest: a host verifies it gets exactly this build.
        assert ref.startswith(f"{prefix}/{serving_image.rsplit('/', 1)[-1]}@sha256:"), \
            lines[-10:]
        assert tag_of(ref) in registry.tags("mp/serving")
        assert any(line.startswith("pushing ") for line in lines)
        assert any(line.startswith("pushed ") for line in lines)
        size_mb = docker_client.images.get(serving_image).attrs["Size"] / 1e6
        # Again, from a fresh runtime (as the next reconcile builds one): layers are there.
        started = time.monotonic()
        again = HostsRuntime(SimpleNamespace(settings={"placement": "hosts",
                                                       "registry": prefix}),
                             installation="registry-test", image_builder=image_builder)
        assert again.ensure_image(iris_requirements) == ref
        repush_s = time.monotonic() - started

        deployment = f"t-{uuid.uuid4().hex[:8]}"
        with extra_dockerd() as engine:
            rt = _host_runtime(engine.client, tmp_path)
            pulled: list[str] = []
            row = SimpleNamespace(pk=0, runtime_id=f"{deployment}.h2", host=None)
            started = time.monotonic()
            # The host worker's side: a registry ref is pulled, never built here.
            assert host_image(runtime=rt, row=row, image=ref,
                              requirements=iris_requirements) == ref
            pull_s = time.monotonic() - started
            progress = [r.getMessage() for r in caplog.records]
            assert any(f"pulling {ref} from {registry.address}" in m for m in progress), progress
            assert any(f"pulled {ref}" in m for m in progress), progress
            assert not engine.client.images.list(name="modelport/serving")  # nothing built
            rt.ensure_pulled(ref, pulled.append)  # present now: no pull, no line
            assert pulled == []
            state = rt.start_replica(_spec(deployment, ref, iris_model_dir))
            try:
                assert state.url and state.url.startswith("http://127.0.0.1:")
                assert wait_ready(state.url, timeout=180,
                                  alive=lambda: rt.get_replica(state.id).alive), \
                    rt.logs(state.id, 50)
                body = json.dumps({"dataframe_split": {"columns": COLUMNS,
                                                       "data": [[5.1, 3.5, 1.4, 0.2]]}})
                status, answer = request(state.url + "/invocations", "POST", body.encode(),
                                         {"Content-Type": "application/json"}, timeout=10)
                assert status == 200, answer
                assert json.loads(answer)["predictions"] == [0]
                container = engine.client.containers.get(state.id)
                assert container.attrs["Config"]["Image"] == ref
                assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
            finally:
                rt.remove_replica(state.id)
        print(f"\nserving image {size_mb:.0f} MB: push to a loopback registry {push_s:.1f}s "
              f"(first in this registry), again {repush_s:.2f}s; pull by a second engine "
              f"{pull_s:.1f}s")
    finally:
        _untag(docker_client, ref)


def test_a_host_builds_itself_when_the_image_names_no_registry(tmp_path: Path) -> None:
    def pull(image: str, on_log: Any = None) -> None:
        raise AssertionError(f"nothing to pull without a registry ({image})")

    for repository in ("modelport/serving", "registry.example.com/serving"):
        # Not an engine: image_for decides before it would call one.
        rt = DockerRuntime(object(), network="host", state_dir=tmp_path / "runtime",
                           image_builder=ImageBuilder(None, "base:x", repository=repository))
        rt.ensure_image = lambda requirements, on_log=None: "built-here"  # type: ignore[method-assign]
        rt.ensure_pulled = pull  # type: ignore[method-assign]
        own_name = rt.images.tag_for(normalize_requirements(["scikit-learn==1.5.0"]))
        for image in ("", "modelport/serving:abc-def", own_name):
            assert rt.image_for(image, ["scikit-learn==1.5.0"]) == "built-here", image


def test_a_registry_that_does_not_answer_fails_the_start_naming_it(
        docker_client: Any, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    ref = f"{address}/mp/serving:missing"
    rt = _host_runtime(docker_client, tmp_path)
    deployment = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ReplicaRuntimeError) as caught:
        rt.start_replica(_spec(deployment, ref, None))
    message = str(caught.value)
    assert f"pulling {ref} from registry {address} failed" in message, message
    assert "connection refused" in message.lower(), message  # transient: retried later
    assert not docker_client.containers.list(
        all=True, filters={"label": f"modelport.deployment={deployment}"})
    assert not docker_client.images.list(name=f"{address}/mp/serving")


def test_a_push_to_a_registry_that_does_not_answer_names_it(
        docker_client: Any, serving_image: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    publisher = RegistryPublisher(docker_client, f"{address}/mp")
    ref = publisher.ref_for(serving_image)
    try:
        with pytest.raises(ReplicaRuntimeError, match=f"pushing {ref} to registry {address}") \
                as caught:
            publisher.publish(serving_image)
        assert "connection refused" in str(caught.value)  # a transient cause: retried
    finally:
        _untag(docker_client, ref)


def test_swarm_services_name_the_registry_image(
        docker_client: Any, image_builder: Any, iris_requirements: list[str],
        registry: Registry, tmp_path: Path) -> None:  # noqa: F811
    prefix = f"{registry.address}/swarm"
    rt = SwarmRuntime(docker_client, image_builder=image_builder, state_dir=tmp_path,
                      publisher=RegistryPublisher(docker_client, prefix),
                      installation="registry-test")
    ref = rt.ensure_image(iris_requirements)
    try:
        assert ref.startswith(f"{prefix}/serving:")
        assert tag_of(ref) in registry.tags("swarm/serving")
        kwargs = rt.service_spec(_spec("t-swarm", ref, None), 21001)
        assert kwargs["task_template"]["ContainerSpec"]["Image"] == ref
        # Batch jobs on that swarm take the same image.
        assert rt.batch_runtime().ensure_batch_image(iris_requirements) == ref
    finally:
        _untag(docker_client, ref)


def test_explicit_credentials_go_with_pushes_pulls_and_service_creation() -> None:
    import docker
    from docker import auth

    # No engine needed: with a version given, the client does not connect until called.
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41")
    try:
        RegistryPublisher(client, "registry.example.com:5000/mp",
                          auth_config={"username": "ci", "password": "s3cret"})
        found = auth.resolve_authconfig(client.api._auth_configs, "registry.example.com:5000")
        assert found is not None
        assert (found["username"], found["password"]) == ("ci", "s3cret")
    finally:
        client.close()


def test_a_registry_with_authentication_takes_the_configured_credentials(
        docker_client: Any, base_image: str, tmp_path: Path) -> None:
    """Basic auth over plain HTTP on loopback (tests only): a push or a pull without the
    credentials fails naming the registry; with ``auth_config`` (what
    MODELPORT_IMAGE_REGISTRY_USERNAME/_PASSWORD give) both work. The base image stands in
    for a serving image: smaller, same mechanism."""
    import docker

    from tests.registry_fixture import running_registry

    with running_registry(users={"ci": "s3cret"}) as reg:
        prefix = f"{reg.address}/auth"
        anonymous = RegistryPublisher(docker_client, prefix)
        ref = anonymous.ref_for(base_image)
        client = docker.from_env(timeout=300)  # its own auth store
        try:
            with pytest.raises(ReplicaRuntimeError, match=f"pushing {ref} to registry {prefix}"):
                anonymous.publish(base_image)
            pinned = RegistryPublisher(client, prefix, auth_config={
                "username": "ci", "password": "s3cret"}).publish(base_image)
            assert pinned.startswith(f"{ref}@sha256:")
            with extra_dockerd() as engine:
                bare = _host_runtime(engine.client, tmp_path)
                with pytest.raises(ReplicaRuntimeError,
                                   match=f"pulling {pinned} from registry {reg.address}"):
                    bare.ensure_pulled(pinned)
                rt = DockerRuntime(engine.client, network="host", state_dir=tmp_path / "rt2",
                                   registry_auth={"username": "ci", "password": "s3cret"})
                rt.ensure_pulled(pinned)
                assert engine.client.images.get(pinned).id == \
                    docker_client.images.get(base_image).id
        finally:
            client.close()
            _untag(docker_client, ref)
