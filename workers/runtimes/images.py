"""Serving images, one per distinct set of model requirements.

Tag: ``modelport/serving:<requirements>-<code>``, the first 12 hex digits of the sha256 of the
sorted, normalized requirements and of what else the image is made of — the serving code, its
Dockerfile and the base image's name. Two installations sharing a Docker Engine with different
platform code therefore build different tags and never retag (or run) each other's build; with
the same code they share one image, which is the same image. A model's
requirements are first checked (``requirements.py``: names and versions only), then their wheels
and the serving stack's are fetched on this host for the base image's interpreter
(``wheelhouse.py``: wheels only, from the configured package index, allow-list applied). The
image is built from ``platform/serving.Dockerfile`` with a generated build context (the serving
package, the requirements, the wheelhouse — spooled to a temporary file, not held in memory) in
a ``docker build`` with ``network_mode="none"`` that installs as a non-root user, through the
SDK's low-level API so each build log line streams to ``on_log``. No package's code runs outside
that network-less, unprivileged build. An existing tag is reused as long as its labels say it
was built from the same base image and the same serving code (and, when the platform has an
allow-list, that its packages are still allowed); a serving-code change rebuilds only the thin
code layer (Docker's layer cache keeps the heavy dependency layer).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from docker.errors import APIError, ImageNotFound
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .base import LogFn, ReplicaRuntimeError
from .requirements import RequirementRefused, check_requirements
from .wheelhouse import (
    PackagePolicy,
    Target,
    WheelFetchError,
    Wheelhouse,
    check_allowed,
    default_ca_bundle,
    fetch,
    probe_target,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPOSITORY = "modelport/serving"
LABEL_REQS = "org.modelport.requirements-sha256"
LABEL_BASE = "org.modelport.base-image"
LABEL_SERVING = "org.modelport.serving-digest"
LABEL_KIND = "org.modelport.image"
LABEL_PACKAGES = "org.modelport.model-packages"
_SKIP_DIRS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache"}
__all__ = ["ImageBuildError", "ImageBuilder", "ImageReport", "PackagePolicy", "default_ca_bundle",
           "host_pip_index", "normalize_requirements", "requirements_digest"]


# A package whose "-cpu" variant ships the same import name without the GPU libraries: when a
# model's requirements name both (stock mlflow writes ``xgboost-cpu==X`` and ``xgboost==X``
# when xgboost-cpu is installed), the plain one is dropped — its Linux wheel pulls
# nvidia-nccl (hundreds of MB) and the two would overwrite each other's files anyway.
CPU_VARIANTS = {"tensorflow": "tensorflow-cpu", "xgboost": "xgboost-cpu"}


class ImageBuildError(ReplicaRuntimeError):
    """`docker build` failed; the message ends with the last lines of the build log."""


@dataclass(frozen=True)
class ImageReport:
    """What ``ensure_image_report`` did, for the version page: the tag, whether an existing
    image was reused, the seconds the caller waited (fetching wheels and building, or checking
    the cached image), and the image's size on the engine (None if it could not be read)."""

    tag: str
    reused: bool
    seconds: float
    size_bytes: int | None


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
        name: str = canonicalize_name(req.name)
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
    return sorted(out - set(shadowed_by_cpu_variant(out)))


def _name_of(line: str) -> str | None:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def shadowed_by_cpu_variant(requirements: Iterable[str]) -> list[str]:
    """The lines of `requirements` to drop because their ``-cpu`` variant is there too
    (``CPU_VARIANTS``): same module, without the CUDA libraries."""
    lines = list(requirements)
    names = {_name_of(line) for line in lines}
    return [line for line in lines
            if (name := _name_of(line)) in CPU_VARIANTS and CPU_VARIANTS[name] in names]


def requirements_digest(requirements: Iterable[str], mlflow_skinny: bool = True) -> str:
    lines = normalize_requirements(requirements, mlflow_skinny=mlflow_skinny)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def host_pip_index() -> tuple[str | None, list[str]]:
    """The index URL (None: pip's default, PyPI) and extra index URLs this host's pip uses:
    what a model environment is fetched from while the platform settings leave them empty."""
    policy = PackagePolicy.from_host(ca_bundle=None)
    return policy.index_url, list(policy.extra_index_urls)


class _Tar:
    """A build context written to a temporary file (root-owned, world-readable entries, mtime 0
    so identical content hits Docker's layer cache): a wheelhouse can be hundreds of MB."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - close()
        self.tar = tarfile.open(fileobj=self.file, mode="w")  # noqa: SIM115 - closed in finish()

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 0
        self.tar.addfile(info, io.BytesIO(data))

    def add_file(self, name: str, path: Path, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = path.stat().st_size, mode, 0
        with path.open("rb") as fh:
            self.tar.addfile(info, fh)

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
                self.add_file(target, path, 0o755 if os.access(path, os.X_OK) else 0o644)

    def finish(self) -> IO[bytes]:
        self.tar.close()
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def tree_digest(paths: Iterable[Path], root: Path) -> str:
    h = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(root)
            if any(part in _SKIP_DIRS for part in rel.parts) or f.suffix == ".pyc":
                continue
            h.update(rel.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


PolicySource = PackagePolicy | Callable[[], PackagePolicy]


class ImageBuilder:
    """Builds and caches serving images on one Docker Engine (explicit args, no Django).

    `packages`: where wheels come from and which packages are allowed — a PackagePolicy, or a
    callable read at build time (the platform settings); default: this host's pip configuration
    (MODELPORT_PIP_OFFLINE=1 or `offline`: local wheel folders only). `wheel_cache`: where
    fetched wheelhouses are kept (default ~/.cache/modelport/wheelhouses)."""

    def __init__(self, client: Any, base_image: str, *,
                 repository: str | None = None,
                 source_dir: str | os.PathLike[str] = REPO_ROOT,
                 ca_bundle: str | bool | None = True,
                 packages: PolicySource | None = None,
                 wheel_cache: str | os.PathLike[str] | None = None,
                 offline: bool | None = None,
                 lock_dir: str | os.PathLike[str] | None = None,
                 mlflow_skinny: bool = True,
                 build_timeout: int = 3600,
                 fetch_timeout: int = 1800,
                 container_labels: dict[str, str] | None = None) -> None:
        self.client = client
        self.base_image = base_image
        self.repository = (repository or os.environ.get("MODELPORT_SERVING_REPOSITORY")
                           or DEFAULT_REPOSITORY)
        self.source_dir = Path(source_dir)
        self.ca_bundle = ca_bundle  # True: the host bundle; None/False: none; str: that file
        self.packages = packages
        self.offline = offline
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        self.wheel_cache = Path(wheel_cache) if wheel_cache else \
            Path(cache) / "modelport" / "wheelhouses"
        self.lock_dir = Path(lock_dir) if lock_dir else None
        self.mlflow_skinny = mlflow_skinny
        self.build_timeout = build_timeout  # seconds without output before a build fails
        self.fetch_timeout = fetch_timeout
        self._lock = threading.Lock()
        self._targets: dict[str, Target] = {}
        # On the containers it runs itself (the base image's probe): whose they are.
        self.container_labels = dict(container_labels or {})

    # --- naming -----------------------------------------------------------------------------
    def tag_for(self, requirements: Iterable[str], serving_digest: str | None = None) -> str:
        """The image's tag: requirements and serving code (``serving_digest``, computed when
        not given) both name it."""
        digest = requirements_digest(requirements, mlflow_skinny=self.mlflow_skinny)
        code = hashlib.sha256(f"{serving_digest or self.serving_digest()}\n"
                              f"{self.base_image}".encode()).hexdigest()
        return f"{self.repository}:{digest[:12]}-{code[:12]}"

    def _serving_files(self) -> list[Path]:
        root = self.source_dir
        return [root / "platform" / "serving.Dockerfile", root / "platform" / "images" /
                "wheels.sh", root / "platform" / "serving-requirements.txt", root / "serving"]

    def serving_digest(self) -> str:
        return tree_digest([p for p in self._serving_files() if p.exists()], self.source_dir)

    def platform_requirements(self) -> list[str]:
        """The serving stack's own requirements (as the Dockerfile picks them)."""
        path = self.source_dir / "serving" / "requirements.txt"
        if not path.is_file():
            path = self.source_dir / "platform" / "serving-requirements.txt"
        try:
            return check_requirements(path.read_text().splitlines(), source=path.name)
        except RequirementRefused as exc:
            raise ImageBuildError(f"the serving requirements are refused: {exc}") from None

    def policy(self) -> PackagePolicy:
        if isinstance(self.packages, PackagePolicy):
            return self.packages
        if callable(self.packages):
            return self.packages()
        return PackagePolicy.from_host(
            offline=self.offline, ca_bundle=default_ca_bundle() if self.ca_bundle is True
            else (self.ca_bundle or None),
            platform_wheelhouse=self.source_dir / "platform" / "wheelhouse")

    # --- build ------------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """Return the tag of a serving image for `requirements`, building it when needed.

        Raises ImageBuildError naming the refused requirement line, the package without a
        wheel or not allowed, or the failed build step."""
        return self.ensure_image_report(requirements, on_log).tag

    def ensure_image_report(self, requirements: list[str],
                            on_log: LogFn | None = None) -> ImageReport:
        """``ensure_image``, also saying whether the image was reused, how long it took and
        how big it is."""
        log = on_log or (lambda _line: None)
        called = time.monotonic()
        try:
            checked = check_requirements(requirements, source="the model's requirements")
        except RequirementRefused as exc:
            raise ImageBuildError(str(exc)) from None
        for line in shadowed_by_cpu_variant(checked):
            log(f"requirements: dropped {line.strip()}: {CPU_VARIANTS[_name_of(line) or '']} "
                "provides the same module without the CUDA libraries")
        reqs = normalize_requirements(checked, mlflow_skinny=self.mlflow_skinny)
        serving = self.serving_digest()
        tag = self.tag_for(reqs, serving)
        # The base image's id is part of the cache key: a rebuilt base rebuilds serving images.
        base_id = self._id_of(self.base_image)
        if base_id is None:
            raise ImageBuildError(f"base image {self.base_image} is missing (build it with "
                                  "platform/images/build-base.sh, or pull it where possible)")
        labels = {LABEL_KIND: "serving", LABEL_BASE: f"{self.base_image}@{base_id}",
                  LABEL_SERVING: serving,
                  LABEL_REQS: requirements_digest(reqs, mlflow_skinny=self.mlflow_skinny)}
        with self._locked(tag, log):
            current = self._labels_of(tag)
            old_id = self._id_of(tag) if current is not None else None
            if current is not None and all(current.get(k) == v for k, v in labels.items()) \
                    and self._still_allowed(current, tag, log):
                log(f"image {tag} cached: reusing it (no build)")
                return self._report(tag, reused=True, since=called)
            if current is not None:
                log(f"image {tag} exists but base image or serving code changed: rebuilding")
            started = time.monotonic()
            try:
                wheels = fetch(platform_requirements=self.platform_requirements(),
                               model_requirements=reqs, target=self._target(base_id, log),
                               policy=self.policy(), cache_root=self.wheel_cache, log=log,
                               timeout=self.fetch_timeout)
            except WheelFetchError as exc:
                raise ImageBuildError(f"building {tag} failed: {exc}") from None
            log(f"building {tag} FROM {self.base_image} with {len(reqs)} requirement(s), "
                f"{len(wheels.wheels)} wheel(s), no network")
            labels[LABEL_PACKAGES] = ",".join(wheels.model_packages)
            context = self._serving_context(reqs, wheels)
            try:
                self._build(context.finish(), tag, labels, "platform/serving.Dockerfile", log,
                            {"BASE_IMAGE": self.base_image, "MODELPORT_PIP_OFFLINE": "1"})
            finally:
                context.close()
            log(f"built {tag} in {time.monotonic() - started:.1f}s")
            if old_id and old_id != self._id_of(tag):
                self._remove_unused(old_id, log)
        return self._report(tag, reused=False, since=called)

    def _report(self, tag: str, *, reused: bool, since: float) -> ImageReport:
        seconds = time.monotonic() - since
        try:
            size = self.client.images.get(tag).attrs.get("Size")
        except (ImageNotFound, APIError):
            size = None
        return ImageReport(tag=tag, reused=reused, seconds=round(seconds, 2),
                           size_bytes=int(size) if isinstance(size, int) else None)

    def _still_allowed(self, labels: dict[str, str], tag: str, log: LogFn) -> bool:
        """A cached image is reused only while the allow-list still admits its packages."""
        allowed = self.policy().allowed
        if not allowed:
            return True
        if LABEL_PACKAGES not in labels:
            log(f"image {tag} predates the allow-list check: rebuilding")
            return False
        try:
            check_allowed([p for p in labels[LABEL_PACKAGES].split(",") if p], allowed)
        except WheelFetchError as exc:
            raise ImageBuildError(f"image {tag}: {exc}") from None
        return True

    def target(self, on_log: LogFn | None = None) -> Target:
        """The interpreter of the base image, which the wheels are fetched for."""
        base_id = self._id_of(self.base_image)
        if base_id is None:
            raise ImageBuildError(f"base image {self.base_image} is missing")
        return self._target(base_id, on_log or (lambda _line: None))

    def _target(self, base_id: str, log: LogFn) -> Target:
        """The base image's interpreter (probed once per base image id, cached on disk)."""
        if base_id in self._targets:
            return self._targets[base_id]
        cached = self.wheel_cache / "targets" / (base_id.replace(":", "_") + ".json")
        target = None
        if cached.is_file():
            with contextlib.suppress(ValueError, KeyError, TypeError, WheelFetchError):
                target = Target.from_probe(json.loads(cached.read_text()))
        if target is None:
            log(f"probing the Python of {self.base_image}")
            try:
                target = probe_target(self.client, self.base_image,
                                      labels=self.container_labels)
            except WheelFetchError as exc:
                raise ImageBuildError(str(exc)) from None
            except Exception as exc:  # docker.errors.*: the engine refused or is gone
                raise ImageBuildError(f"could not probe {self.base_image}: {exc}") from exc
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({
                "version": list(target.python), "implementation": target.implementation,
                "soabi": target.soabi, "machine": target.machine,
                "libc": ["glibc", f"{target.glibc[0]}.{target.glibc[1]}"],
                "markers": target.markers}))
        self._targets[base_id] = target
        return target

    def bake_model(self, serving_image: str, model_dir: str | os.PathLike[str], tag: str,
                   on_log: LogFn | None = None) -> str:
        """A thin image FROM `serving_image` with the model copied to /model (read-only use)."""
        log = on_log or (lambda _line: None)
        ctx = _Tar()
        try:
            ctx.add_bytes("Dockerfile", (f"FROM {serving_image}\n"
                                         "COPY --chown=0:0 model/ /model/\n").encode())
            ctx.add_tree(Path(model_dir), "model")
            labels = {LABEL_KIND: "model", "org.modelport.serving-image": serving_image}
            self._build(ctx.finish(), tag, labels, "Dockerfile", log, {})
        finally:
            ctx.close()
        return tag

    def _serving_context(self, reqs: list[str], wheels: Wheelhouse) -> _Tar:
        root = self.source_dir
        if not (root / "serving").is_dir():
            raise ImageBuildError(f"no serving package at {root / 'serving'}")
        self.wheel_cache.mkdir(parents=True, exist_ok=True)
        ctx = _Tar(self.wheel_cache)
        try:
            ctx.add_dir("platform")
            for rel in ("platform/serving.Dockerfile", "platform/serving-requirements.txt"):
                ctx.add_file(rel, root / rel)
            ctx.add_dir("platform/images")
            ctx.add_file("platform/images/wheels.sh", root / "platform/images/wheels.sh",
                         0o755)
            ctx.add_bytes("platform/extra-requirements.txt",
                          ("\n".join(reqs) + "\n").encode())
            ctx.add_dir("platform/certs")  # the build has no network: no CA bundle needed
            ctx.add_dir("platform/wheelhouse")
            for wheel in wheels.wheels:
                ctx.add_file(f"platform/wheelhouse/{wheel.name}", wheel)
            ctx.add_tree(root / "serving", "serving")
        except BaseException:
            ctx.close()
            raise
        return ctx

    def _build(self, context: IO[bytes], tag: str, labels: dict[str, str], dockerfile: str,
               log: LogFn, buildargs: dict[str, str]) -> None:
        """`docker build` with no network at all: everything it installs is in the context."""
        tail: list[str] = []
        try:
            stream = self.client.api.build(
                fileobj=context, custom_context=True, tag=tag, dockerfile=dockerfile,
                buildargs=buildargs, labels=labels, network_mode="none", rm=True, forcerm=True,
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
        try:
            image = self.client.images.get(tag)
        except ImageNotFound:
            return None
        return dict(image.labels or {})

    def _id_of(self, tag: str) -> str | None:
        try:
            return str(self.client.images.get(tag).id)
        except ImageNotFound:
            return None

    def _remove_unused(self, image_id: str, log: LogFn) -> None:
        """Drop the image a rebuild replaced, unless a container still uses it."""
        try:
            self.client.images.remove(image_id, noprune=True)
            log(f"removed the replaced image {image_id[:19]}")
        except APIError:
            log(f"kept the replaced image {image_id[:19]} (still in use)")

    @contextlib.contextmanager
    def _locked(self, tag: str, log: LogFn) -> Iterator[None]:
        """One build of a tag at a time (in this process, and across workers with a lock
        dir). Waiting is said in the log: another build may take minutes, and a silent wait
        looks frozen."""
        if not self._lock.acquire(blocking=False):
            log(f"waiting for another build of {tag} (in this worker)")
            self._lock.acquire()
        try:
            if self.lock_dir is None:
                yield
                return
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            path = self.lock_dir / ("build-" + tag.replace("/", "_").replace(":", "_") + ".lock")
            with open(path, "a+") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log(f"waiting for another build of {tag} (another worker)")
                    fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            self._lock.release()


def _chunk_lines(chunk: dict[str, Any]) -> list[str]:
    text = chunk.get("stream") or chunk.get("status") or ""
    if not text and "aux" in chunk:
        text = f"image id {chunk['aux'].get('ID', '')}"
    return [line for line in str(text).splitlines() if line.strip()]
