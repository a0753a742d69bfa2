"""An image registry for tests: Debian's ``docker-registry`` (Docker Distribution 2.8, the
``registry:2`` server) started with a generated config — storage in a temporary directory,
plain HTTP on the address the caller gives (loopback here; the cross-host tests put it on the
bridge address, which the hosts' engines then need as ``--insecure-registry``).

    with running_registry("127.0.0.1:0") as reg:   # port 0: a free port is picked
        reg.address   # "127.0.0.1:41234", what image references start with

``registry`` is the pytest fixture (one loopback registry per test session). Skips when the
binary is missing (fails under MODELPORT_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import missing_service

BINARY = os.environ.get("MODELPORT_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")
CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
  secret: {secret}
"""
AUTH = """auth:
  htpasswd:
    realm: modelport-test
    path: {path}
"""


@dataclass
class Registry:
    address: str  # host:port, as image references name it
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log(self) -> str:
        path = self.directory / "registry.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for ``repository`` (empty when none)."""
        import json

        try:
            with urllib.request.urlopen(f"{self.url}/v2/{repository}/tags/list",
                                        timeout=5) as answer:
                return list(json.load(answer).get("tags") or [])
        except urllib.error.HTTPError:
            return []


def tag_of(ref: str) -> str:
    """The tag of ``repo:tag`` or of a pinned ``repo:tag@sha256:…``."""
    return ref.partition("@")[0].rpartition(":")[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=1) as answer:
            return bool(answer.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # it answers, asking for credentials
    except (OSError, urllib.error.URLError):
        return False


def _bcrypt(password: str) -> str:
    """The htpasswd entry Distribution accepts (bcrypt only), from libxcrypt through
    ``crypt`` (no bcrypt package needed)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2 ** 10))


@contextlib.contextmanager
def running_registry(address: str = "127.0.0.1:0", *, timeout: float = 30,
                     users: dict[str, str] | None = None) -> Iterator[Registry]:
    """Start ``docker-registry serve`` on ``address`` (port 0: a free one), wait until
    ``/v2/`` answers, yield it; stop it and delete its storage afterwards. ``users``
    (name → password): basic authentication from an htpasswd file (bcrypt), over plain HTTP —
    tests only; production puts TLS in front of it."""
    if not Path(BINARY).is_file():
        missing_service(f"{BINARY} is missing (apt-get install docker-registry)")
    host, _, port = address.rpartition(":")
    if port in ("", "0"):
        address = f"{host}:{free_port(host)}"
    directory = Path(tempfile.mkdtemp(prefix="mp-registry-"))
    (directory / "data").mkdir()
    config = directory / "config.yml"
    text = CONFIG.format(root=directory / "data", address=address,
                         secret=secrets.token_hex(16))
    if users:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text("".join(f"{name}:{_bcrypt(password)}\n"
                                    for name, password in users.items()))
        text += AUTH.format(path=htpasswd)
    config.write_text(text)
    with (directory / "registry.log").open("wb") as log:
        process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    registry = Registry(address=address, directory=directory, process=process)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(registry.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer on {address}:\n"
                                   + registry.log())
            time.sleep(0.1)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """One loopback registry for the session: modules that push the shared serving image push
    its layers once."""
    with running_registry("127.0.0.1:0") as reg:
        yield reg
