"""Serving images, one per distinct set of model requirements.

Tag: ``modelport/serving:<sha256 of the sorted, normalized requirements>[:12]``. The image is
built from ``platform/serving.Dockerfile`` with a generated build context (the serving package,
the model's requirements, the host CA bundle) through the SDK's low-level API, so each build
log line streams to ``on_log``. An existing tag is reused as long as its labels say it was built
from the same base image and the same serving code; a serving-code change rebuilds only the thin
code layer (Docker's layer cache keeps the heavy dependency layer).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .base import LogFn, ReplicaRuntimeError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPOSITORY = "modelport/serving"
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LABEL_REQS = "org.modelport.requirements-sha256"
LABEL_BASE = "org.modelport.base-image"
LABEL_SERVING = "org.modelport.serving-digest"
LABEL_KIND = "org.modelport.image"
_SKIP_DIRS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache"}


class ImageBuildError(ReplicaRuntimeError):
    """`docker build` failed; the message ends with the last lines of the build log."""


def normalize_requirements(requirements: Iterable[str], mlflow_skinny: bool = True) -> list[str]:
    """Sorted, de-duplicated, canonical requirement lines.

    Comments, blank lines and pip options (``-r``, ``--index-url`` ...) are dropped: indexes and
    certificates are the platform's business, not the model's. With `mlflow_skinny`, ``mlflow``
    becomes ``mlflow-skinny`` of the same version (what serving needs, without the tracking
    server's dependencies)."""
    out: set[str] = set()
    for raw in requirements:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.add(line)
            continue
        name = canonicalize_name(req.name)
        if mlflow_skinny and name == "mlflow":
            name = "mlflow-skinny"
        text = name
        if req.extras:
            text += "[" + ",".join(sorted(canonicalize_name(e) for e in req.extras)) + "]"
        if req.url:
            text += " @ " + req.url
        elif req.specifier:
            text += ",".join(sorted(str(s) for s in req.specifier))
        if req.marker:
            text += "; " + str(req.marker)
        out.add(text)
    return sorted(out)


def requirements_digest(requirements: Iterable[str], mlflow_skinny: bool = True) -> str:
    lines = normalize_requirements(requirements, mlflow_skinny=mlflow_skinny)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@functools.cache
def _pip_config() -> dict[str, str]:
    """``pip config list``, read once per process: starting pip takes 1-3 s, and a runtime (so
    an ImageBuilder) is made for every reconcile. A changed pip config needs a worker restart."""
    config: dict[str, str] = {}
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                              capture_output=True, text=True, timeout=30, check=False)
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            config[key.split(".")[-1]] = value.strip().strip("'\"")
    except (OSError, subprocess.SubprocessError):
        pass
    return config


def host_pip_index() -> tuple[str | None, list[str]]:
    """The index URL and extra index URLs this host's pip uses (env vars first, then
    ``pip config``), keeping only http(s) ones: a ``file://`` index is not reachable from a
    build. Nothing is hard-coded: whatever proxy the host points pip at is replicated."""
    index = os.environ.get("MODELPORT_PIP_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
    extra = (os.environ.get("MODELPORT_PIP_EXTRA_INDEX_URL")
             or os.environ.get("PIP_EXTRA_INDEX_URL") or "").split()
    if not index or not extra:
        config = _pip_config()
        index = index or config.get("index-url") or None
        extra = extra or config.get("extra-index-url", "").split()
    web = ("http://", "https://")
    return (index if index and index.startswith(web) else None,
            [u for u in extra if u.startswith(web)])


def default_ca_bundle() -> str | None:
    for candidate in (os.environ.get("MODELPORT_BUILD_CA_BUNDLE"), os.environ.get("PIP_CERT"),
                      os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"),
                      DEFAULT_CA_BUNDLE):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class _Tar:
    """A build context assembled in memory (root-owned, world-readable entries)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w")  # noqa: SIM115 - closed in close()

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 0
        self.tar.addfile(info, io.BytesIO(data))

    def add_dir(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        self.tar.addfile(info)

    def add_tree(self, src: Path, dest: str) -> None:
        self.add_dir(dest)
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            if any(part in _SKIP_DIRS for part in rel.parts) or path.suffix == ".pyc":
                continue
            target = f"{dest}/{rel.as_posix()}"
            if path.is_dir():
                self.add_dir(target)
            elif path.is_file():
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                self.add_bytes(target, path.read_bytes(), mode)

    def close(self) -> io.BytesIO:
        self.tar.close()
        self.buf.seek(0)
        return self.buf


def _tree_digest(paths: Iterable[Path], root: Path) -> str:
    h = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(root)
            if any(part in _SKIP_DIRS for part in rel.parts) or f.suffix == ".pyc":
                continue
            h.update(rel.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


class ImageBuilder:
    """Builds and caches serving images on one Docker Engine (explicit args, no Django)."""

    def __init__(self, client: Any, base_image: str, *,
                 repository: str = DEFAULT_REPOSITORY,
                 source_dir: str | os.PathLike[str] = REPO_ROOT,
                 ca_bundle: str | bool | None = True,
                 pip_index_url: str | None = None,
                 pip_extra_index_urls: list[str] | None = None,
                 wheelhouse: str | os.PathLike[str] | None = None,
                 offline: bool = False,
                 lock_dir: str | os.PathLike[str] | None = None,
                 mlflow_skinny: bool = True,
                 build_timeout: int = 3600) -> None:
        self.client = client
        self.base_image = base_image
        self.repository = repository
        self.source_dir = Path(source_dir)
        # True: find the host bundle; None/False: none; str: that file.
        self.ca_bundle = default_ca_bundle() if ca_bundle is True else (ca_bundle or None)
        if pip_index_url is None and pip_extra_index_urls is None and not offline:
            pip_index_url, pip_extra_index_urls = host_pip_index()
        self.pip_index_url = pip_index_url
        self.pip_extra_index_urls = list(pip_extra_index_urls or [])
        self.wheelhouse = Path(wheelhouse) if wheelhouse else None
        self.offline = offline
        self.lock_dir = Path(lock_dir) if lock_dir else None
        self.mlflow_skinny = mlflow_skinny
        self.build_timeout = build_timeout  # seconds without output before a build fails
        self._lock = threading.Lock()

    # --- naming -----------------------------------------------------------------------------
    def tag_for(self, requirements: Iterable[str]) -> str:
        digest = requirements_digest(requirements, mlflow_skinny=self.mlflow_skinny)
        return f"{self.repository}:{digest[:12]}"

    def _serving_files(self) -> list[Path]:
        root = self.source_dir
        return [root / "platform" / "serving.Dockerfile", root / "platform" / "images" /
                "pip-install.sh", root / "platform" / "serving-requirements.txt",
                root / "serving"]

    def serving_digest(self) -> str:
        return _tree_digest([p for p in self._serving_files() if p.exists()], self.source_dir)

    # --- build ------------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """Return the tag of a serving image for `requirements`, building it when needed."""
        log = on_log or (lambda _line: None)
        reqs = normalize_requirements(requirements, mlflow_skinny=self.mlflow_skinny)
        tag = self.tag_for(reqs)
        # The base image's id is part of the cache key: a rebuilt base rebuilds serving images.
        base_id = self._id_of(self.base_image)
        if base_id is None:
            raise ImageBuildError(f"base image {self.base_image} is missing (build it with "
                                  "platform/images/build-base.sh, or pull it where possible)")
        labels = {LABEL_KIND: "serving", LABEL_BASE: f"{self.base_image}@{base_id}",
                  LABEL_SERVING: self.serving_digest(),
                  LABEL_REQS: requirements_digest(reqs, mlflow_skinny=self.mlflow_skinny)}
        with self._locked(tag):
            current = self._labels_of(tag)
            old_id = self._id_of(tag) if current is not None else None
            if current is not None and all(current.get(k) == v for k, v in labels.items()):
                log(f"image {tag} cached: reusing it (no build)")
                return tag
            if current is not None:
                log(f"image {tag} exists but base image or serving code changed: rebuilding")
            log(f"building {tag} FROM {self.base_image} with {len(reqs)} requirement(s)")
            started = time.monotonic()
            context = self._serving_context(reqs)
            self._build(context, tag, labels, "platform/serving.Dockerfile", log,
                        {"BASE_IMAGE": self.base_image})
            log(f"built {tag} in {time.monotonic() - started:.1f}s")
            if old_id and old_id != self._id_of(tag):
                self._remove_unused(old_id, log)
        return tag

    def bake_model(self, serving_image: str, model_dir: str | os.PathLike[str], tag: str,
                   on_log: LogFn | None = None) -> str:
        """A thin image FROM `serving_image` with the model copied to /model (read-only use)."""
        log = on_log or (lambda _line: None)
        ctx = _Tar()
        ctx.add_bytes("Dockerfile", (f"FROM {serving_image}\n"
                                     "COPY --chown=0:0 model/ /model/\n").encode())
        ctx.add_tree(Path(model_dir), "model")
        labels = {LABEL_KIND: "model", "org.modelport.serving-image": serving_image}
        self._build(ctx.close(), tag, labels, "Dockerfile", log, {})
        return tag

    def _serving_context(self, reqs: list[str]) -> io.BytesIO:
        root = self.source_dir
        ctx = _Tar()
        ctx.add_dir("platform")
        for rel in ("platform/serving.Dockerfile", "platform/serving-requirements.txt"):
            ctx.add_bytes(rel, (root / rel).read_bytes())
        ctx.add_dir("platform/images")
        ctx.add_bytes("platform/images/pip-install.sh",
                      (root / "platform/images/pip-install.sh").read_bytes(), 0o755)
        ctx.add_bytes("platform/extra-requirements.txt", ("\n".join(reqs) + "\n").encode())
        ctx.add_dir("platform/certs")
        if self.ca_bundle:
            ctx.add_bytes("platform/certs/ca-certificates.crt",
                          Path(self.ca_bundle).read_bytes())
        if self.wheelhouse and self.wheelhouse.is_dir():
            ctx.add_tree(self.wheelhouse, "platform/wheelhouse")
        else:
            ctx.add_dir("platform/wheelhouse")
        if not (root / "serving").is_dir():
            raise ImageBuildError(f"no serving package at {root / 'serving'}")
        ctx.add_tree(root / "serving", "serving")
        return ctx.close()

    def _build(self, context: io.BytesIO, tag: str, labels: dict[str, str], dockerfile: str,
               log: LogFn, buildargs: dict[str, str]) -> None:
        args = dict(buildargs)
        args["MODELPORT_PIP_OFFLINE"] = "1" if self.offline else "0"
        if self.pip_index_url:
            args["MODELPORT_PIP_INDEX_URL"] = self.pip_index_url
        if self.pip_extra_index_urls:
            args["MODELPORT_PIP_EXTRA_INDEX_URL"] = " ".join(self.pip_extra_index_urls)
        tail: list[str] = []
        try:
            stream = self.client.api.build(
                fileobj=context, custom_context=True, tag=tag, dockerfile=dockerfile,
                buildargs=args, labels=labels, network_mode="host", rm=True, forcerm=True,
                pull=False, decode=True, timeout=self.build_timeout)
            for chunk in stream:
                for line in _chunk_lines(chunk):
                    tail = [*tail, line][-30:]
                    log(line)
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("error") or json.dumps(chunk.get("errorDetail"))
                    raise ImageBuildError(f"building {tag} failed: {detail}\n" + "\n".join(tail))
        except ImageBuildError:
            raise
        except Exception as exc:  # docker.errors.APIError, BuildError, connection errors
            raise ImageBuildError(f"building {tag} failed: {exc}\n" + "\n".join(tail)) from exc
        if self._labels_of(tag) is None:
            raise ImageBuildError(f"building {tag} produced no image\n" + "\n".join(tail))

    # --- helpers ----------------------------------------------------------------------------
    def _labels_of(self, tag: str) -> dict[str, str] | None:
        from docker.errors import ImageNotFound  # local: keep module import light

        try:
            image = self.client.images.get(tag)
        except ImageNotFound:
            return None
        return dict(image.labels or {})

    def _id_of(self, tag: str) -> str | None:
        from docker.errors import ImageNotFound

        try:
            return str(self.client.images.get(tag).id)
        except ImageNotFound:
            return None

    def _remove_unused(self, image_id: str, log: LogFn) -> None:
        """Drop the image a rebuild replaced, unless a container still uses it."""
        from docker.errors import APIError

        try:
            self.client.images.remove(image_id, noprune=True)
            log(f"removed the replaced image {image_id[:19]}")
        except APIError:
            log(f"kept the replaced image {image_id[:19]} (still in use)")

    @contextlib.contextmanager
    def _locked(self, tag: str) -> Iterator[None]:
        with self._lock:
            if self.lock_dir is None:
                yield
                return
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            path = self.lock_dir / ("build-" + tag.replace("/", "_").replace(":", "_") + ".lock")
            with open(path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)


def _chunk_lines(chunk: dict[str, Any]) -> list[str]:
    text = chunk.get("stream") or chunk.get("status") or ""
    if not text and "aux" in chunk:
        text = f"image id {chunk['aux'].get('ID', '')}"
    return [line for line in str(text).splitlines() if line.strip()]
