"""How a Docker host gets a model (``deployments/host_models.py``, the endpoint
``deployments/api/host_artifacts.py``): over HTTP from a live platform on 127.0.0.1
(pytest-django's ``live_server``, the real Django app in a thread of this process, on the
test's PostgreSQL database), authenticated by the host's token, checksum-verified, cached per
host by SHA-256, one download per artifact at a time, the cache bounded.

Downloads are counted where the platform opens the stored artifact (the view's
``open_artifact``), so a cache hit is proven by the platform never streaming again.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from compute.models import ExecutionTarget, Host
from core import host_tokens
from deployments import host_models, host_side, services
from deployments.api import host_artifacts
from deployments.models import Replica
from registry import storage
from registry.models import RegisteredModel
from tests.deployments.conftest import make_version
from workers.runtimes import ReplicaState, ReplicaStatus

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class Platform:
    """The live platform and what a host needs from it; ``streams`` counts artifact
    downloads served."""

    def __init__(self, url: str, host: Host, other: Host, deployment) -> None:
        self.url, self.host, self.other, self.deployment = url, host, other, deployment
        self.streams: list[str] = []

    def place(self, version, host: Host | None = None, status: str = "placing") -> Replica:
        """A replica of a new revision running ``version``, placed on ``host``."""
        d = services.update_deployment(actor=self.deployment.created_by,
                                       deployment=self.deployment, version=version.version)
        self.deployment = d
        return Replica.objects.create(
            deployment=d, runtime_id=f"r-{uuid.uuid4().hex[:8]}", revision=d.revision,
            index=0, status="starting", host=host or self.host, host_status=status,
            placed_at=timezone.now())

    def get(self, host: str, sha: str, token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.get(self.url + host_models.artifact_path(host, sha), headers=headers,
                            timeout=30)


@pytest.fixture
def platform(live_server, settings, monkeypatch, no_enqueue, engineer, team, v1):
    settings.MODELPORT_PLATFORM_URL = live_server.url
    settings.MODELPORT_HOST_MODEL_SOURCE = "fetch"
    target = ExecutionTarget.objects.create(name="hosts", kind="docker",
                                            settings={"placement": "hosts"})
    hosts = [Host.objects.create(name=f"h-{n}-{uuid.uuid4().hex[:6]}", queue=f"host.h-{n}",
                                 target=target, cpu=8, memory_mb=16384,
                                 last_heartbeat=timezone.now()) for n in "ab"]
    d = services.create_deployment(actor=engineer, team=team, name="iris-h", model="iris",
                                   version=1, replicas=1, target="hosts",
                                   resources={"cpu": 1, "memory_mb": 512})
    p = Platform(live_server.url, hosts[0], hosts[1], d)
    def counted(name: str):
        p.streams.append(name)
        return storage.open_artifact(name)

    monkeypatch.setattr(host_artifacts, "open_artifact", counted)
    return p


def other_model_dir(iris_dir: Path, tmp_path: Path, tag: str) -> Path:
    """The iris model with one more file: another artifact (another SHA-256)."""
    target = tmp_path / f"iris-{tag}"
    shutil.copytree(iris_dir, target)
    (target / "NOTE.txt").write_text(f"variant {tag}\n")
    return target


def cached(root: Path) -> list[str]:
    """Everything in the cache but its lock files."""
    return sorted(p.name for p in root.iterdir() if p.name != ".locks") if root.exists() else []


def test_a_host_fetches_a_placed_model_once_and_checks_its_sha256(platform, v1):
    row = platform.place(v1)
    said: list[str] = []
    path = host_models.model_dir_on_host(v1, host=platform.host.name, progress=said.append)
    assert path == host_models.cache_root() / v1.artifact_sha256
    assert (path / "MLmodel").is_file() and (path / "model.pkl").is_file()
    assert all(p.stat().st_mode & 0o004 for p in path.rglob("*"))  # uid 10001 reads it
    assert platform.streams == [v1.artifact_name]
    assert said == [f"fetching model iris v1 ({v1.artifact_size / 2**20:.1f} MB) from the "
                    "platform"]
    assert cached(host_models.cache_root()) == [v1.artifact_sha256]  # no temp files left

    again = host_models.model_dir_on_host(v1, host=platform.host.name)
    assert again == path and platform.streams == [v1.artifact_name]  # a hit: no download
    assert row.pk


def test_the_answer_carries_size_and_sha256_and_is_the_stored_bytes(platform, v1):
    platform.place(v1)
    answer = platform.get(platform.host.name, v1.artifact_sha256,
                          host_tokens.host_token(platform.host.name))
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Checksum-SHA256"] == v1.artifact_sha256
    assert int(answer.headers["X-Artifact-Size"]) == v1.artifact_size == len(answer.content)
    with storage.open_artifact(v1.artifact_name) as stored:
        assert answer.content == stored.read()


def test_a_missing_or_wrong_token_is_401(platform, v1):
    platform.place(v1)
    host, sha = platform.host.name, v1.artifact_sha256
    for token in (None, "", "mph_" + "0" * 64, host_tokens.host_token(platform.other.name),
                  host_tokens.host_token(host, secret="another-installation")):
        answer = platform.get(host, sha, token)
        assert answer.status_code == 401, (token, answer.text)
        assert answer.json()["code"] == "not_authenticated"
    basic = requests.get(platform.url + host_models.artifact_path(host, sha), timeout=30,
                         headers={"Authorization": "Basic " + host_tokens.host_token(host)})
    assert basic.status_code == 401
    assert platform.streams == []


def test_a_host_gets_only_what_is_placed_on_it(platform, v1, iris_model, iris_dir, tmp_path):
    """404 for an artifact placed on another host, one only a removing replica uses, one that
    exists but is placed nowhere, and one that does not exist: all alike."""
    other = make_version(iris_model, 2, other_model_dir(iris_dir, tmp_path, "b"))
    leaving = make_version(iris_model, 3, other_model_dir(iris_dir, tmp_path, "c"))
    unplaced = make_version(iris_model, 4, other_model_dir(iris_dir, tmp_path, "d"))
    platform.place(other, host=platform.other)
    platform.place(leaving, status="removing")
    platform.place(v1)
    host = platform.host.name
    token = host_tokens.host_token(host)
    for version in (other, leaving, unplaced):
        answer = platform.get(host, version.artifact_sha256, token)
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == ("No artifact with this SHA-256 is placed on this "
                                           "host.")
    assert platform.get(host, "f" * 64, token).status_code == 404
    assert platform.get(host, v1.artifact_sha256, token).status_code == 200
    # The other host gets its own (with its own token), not this one's.
    other_token = host_tokens.host_token(platform.other.name)
    assert platform.get(platform.other.name, other.artifact_sha256, other_token).status_code \
        == 200
    assert platform.get(platform.other.name, v1.artifact_sha256, other_token).status_code \
        == 404
    with pytest.raises(host_models.ModelFetchFailed, match="HTTP 404"):
        host_models.model_dir_on_host(unplaced, host=host)
    assert cached(host_models.cache_root()) == []


@pytest.mark.parametrize("tamper", ["flip a byte", "append", "truncate"])
def test_a_tampered_stored_artifact_is_refused_and_nothing_is_cached(platform, v1, tamper):
    platform.place(v1)
    stored = Path(storage.artifact_storage().path(v1.artifact_name))
    data = bytearray(stored.read_bytes())
    if tamper == "flip a byte":
        data[len(data) // 2] ^= 0xFF
    elif tamper == "append":
        data += b"\0" * 1000
    else:
        data = data[:-100]
    stored.write_bytes(bytes(data))
    with pytest.raises(host_models.ModelFetchFailed, match="refused") as refused:
        host_models.model_dir_on_host(v1, host=platform.host.name)
    assert ("sha256" if tamper == "flip a byte" else "bytes, the registry recorded") \
        in str(refused.value)
    assert cached(host_models.cache_root()) == []


class Recorder:
    """The host worker's runtime, reduced to what ``start_on_host`` calls (no container: the
    Docker test is test_docker_hosts.py, which fetches too); it keeps each spec and the
    replica row's message at the moment the container would start."""

    installation = "test"

    def __init__(self, row_id: int) -> None:
        self.row_id, self.specs, self.messages = row_id, [], []

    def ensure_image(self, requirements, on_log=None) -> str:
        return "modelport/serving:fake"

    def image_for(self, image, requirements, on_log=None) -> str:
        return self.ensure_image(requirements, on_log)

    def start_replica(self, spec) -> ReplicaState:
        self.specs.append(spec)
        self.messages.append(Replica.objects.get(pk=self.row_id).message)
        return ReplicaState(id=spec.name, deployment=spec.deployment, revision=spec.revision,
                            replica=spec.replica, status=ReplicaStatus.RUNNING,
                            url="http://unused")


def test_start_on_host_mounts_the_fetched_model_and_says_so_on_the_row(platform, v1):
    row = platform.place(v1)
    runtime = Recorder(row.pk)
    host_side.start_on_host(replica_id=row.pk, runtime=runtime)
    [spec] = runtime.specs
    assert spec.model_dir == str(host_models.cache_root() / v1.artifact_sha256)
    assert runtime.messages == [f"fetching model iris v1 ({v1.artifact_size / 2**20:.1f} MB) "
                                "from the platform"]
    row.refresh_from_db()
    assert row.host_status == "running" and platform.streams == [v1.artifact_name]


@pytest.mark.parametrize("cause", ["unreachable", "tampered"])
def test_a_failed_fetch_fails_the_start_with_a_clear_message(platform, v1, settings, cause):
    """(A 404 fails it the same way: ``test_a_host_gets_only_what_is_placed_on_it``.)"""
    row = platform.place(v1)
    if cause == "unreachable":
        settings.MODELPORT_PLATFORM_URL = "http://127.0.0.1:9"  # nothing listens there
    else:
        stored = Path(storage.artifact_storage().path(v1.artifact_name))
        stored.write_bytes(stored.read_bytes()[::-1])
    runtime = Recorder(row.pk)
    host_side.start_on_host(replica_id=row.pk, runtime=runtime)
    row.refresh_from_db()
    assert runtime.specs == [] and row.host_status == "failed"
    expected = ("the platform is unreachable at http://127.0.0.1:9/api/v1/hosts/"
                if cause == "unreachable" else "the downloaded bytes hash to sha256 ")
    assert row.message.startswith("ModelFetchFailed: model iris v1: ") and expected in \
        row.message, row.message
    assert cached(host_models.cache_root()) == []


def test_two_starts_at_once_download_once(platform, v1, monkeypatch):
    """The first download is held until the second thread has asked for the cache lock (so
    they truly overlap); the second then waits and uses the first one's files."""
    platform.place(v1)
    real_flock = host_models.fcntl.flock
    asked = threading.Semaphore(0)

    def flock(handle, operation):
        if operation == host_models.fcntl.LOCK_EX:
            asked.release()
        return real_flock(handle, operation)

    monkeypatch.setattr(host_models.fcntl, "flock", flock)
    second_waits = threading.Event()
    counted = host_artifacts.open_artifact  # the fixture's counting wrapper

    def gated(name: str):
        handle = counted(name)
        assert asked.acquire(timeout=60) and asked.acquire(timeout=60)  # both threads asked
        second_waits.set()
        return handle

    monkeypatch.setattr(host_artifacts, "open_artifact", gated)
    version = type(v1).objects.select_related("model").get(pk=v1.pk)
    results: list[Path | BaseException] = []

    def start() -> None:
        try:
            results.append(host_models.model_dir_on_host(version, host=platform.host.name))
        except BaseException as exc:
            results.append(exc)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert second_waits.is_set()
    target = host_models.cache_root() / v1.artifact_sha256
    assert results == [target, target]
    assert platform.streams == [v1.artifact_name]  # counted by the fixture's wrapper: once


def test_the_cache_bound_evicts_unused_models_oldest_first(platform, v1, settings):
    row = platform.place(v1)
    used = host_models.model_dir_on_host(v1, host=platform.host.name)
    root = host_models.cache_root()
    unused = []
    for i in range(3):  # models of replicas gone from this host, 1 MB each
        entry = root / f"{i:064x}"
        entry.mkdir()
        (entry / "MLmodel").write_bytes(b"x" * 2**20)
        unused.append(entry)
    import os

    for age, entry in enumerate([used, *unused]):  # the used one is the oldest
        os.utime(entry, (1_000_000 + age, 1_000_000 + age))
    size = host_models._size(used)
    limit_mb = (size + 2**20 + 2**20 - 1) // 2**20  # room for the used one and one more
    removed = host_models.evict(host=platform.host.name, limit_mb=limit_mb)
    assert removed == [unused[0].name, unused[1].name]
    assert cached(root) == sorted([v1.artifact_sha256, unused[2].name])
    # Over any bound, a model a replica on this host uses stays.
    assert host_models.evict(host=platform.host.name, limit_mb=0) == [unused[2].name]
    assert cached(root) == [v1.artifact_sha256]
    # Once its replica left the host, it goes too.
    Replica.objects.filter(pk=row.pk).delete()
    assert host_models.evict(host=platform.host.name, limit_mb=0) == [v1.artifact_sha256]
    assert cached(root) == []


def test_shared_source_unpacks_from_the_shared_storage_without_a_request(platform, v1,
                                                                         settings):
    settings.MODELPORT_HOST_MODEL_SOURCE = "shared"
    path = host_models.model_dir_on_host(v1, host=platform.host.name)
    assert (path / "MLmodel").is_file() and platform.streams == []
    assert host_models.cache_root() not in path.parents


def test_host_tokens_are_per_host_and_per_secret(settings):
    a = host_tokens.host_token("h-a")
    assert a.startswith("mph_") and a != host_tokens.host_token("h-b")
    assert a != host_tokens.host_token("h-a", secret="x" * 50)
    assert host_tokens.verify("h-a", f"Bearer {a}") and host_tokens.verify("h-a", f"bearer {a}")
    assert not host_tokens.verify("h-b", f"Bearer {a}")
    assert not host_tokens.verify("h-a", a) and not host_tokens.verify("h-a", "")


def test_a_version_without_an_artifact_is_not_fetched(platform, iris_model):
    bare = RegisteredModel.objects.get(pk=iris_model.pk)
    version = bare.versions.create(version=9, status="failed", source_format="mlflow")
    with pytest.raises(host_models.ModelFetchFailed, match="no stored artifact"):
        host_models.model_dir_on_host(version, host=platform.host.name)


def test_an_incomplete_cache_entry_is_fetched_again(platform, v1):
    """A directory without MLmodel under the artifact's name (left by hand) is no cache hit:
    the model is fetched and replaces it."""
    platform.place(v1)
    broken = host_models.cache_root() / v1.artifact_sha256
    broken.mkdir(parents=True)
    (broken / "junk").write_text("x")
    path = host_models.model_dir_on_host(v1, host=platform.host.name)
    assert (path / "MLmodel").is_file() and not (path / "junk").exists()
    assert platform.streams == [v1.artifact_name]
    assert cached(host_models.cache_root()) == [v1.artifact_sha256]


def test_host_tokens_differ_between_installations_sharing_a_secret(monkeypatch):
    """A staging copy of production keeps the secret key but has its own installation id."""
    ours = host_tokens.host_token("h-a")
    monkeypatch.setattr(host_tokens, "_installation", lambda: "another-installation-id")
    assert host_tokens.host_token("h-a") != ours
