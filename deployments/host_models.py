"""A model version's files on a Docker host, for the replicas its host worker starts.

With ``MODELPORT_HOST_MODEL_SOURCE=fetch`` (the default: a host shares no disk with the
platform) the host worker downloads the version's stored artifact from the platform
(``GET /api/v1/hosts/{host}/artifacts/{sha256}/``, bearer: the host's token,
``core.host_tokens``) into a per-host cache keyed by the artifact's SHA-256:

- streamed into a temporary file while hashing; a size or SHA-256 other than the registry's
  is refused and the file removed — nothing half-written is ever in the cache;
- unpacked by the registry's safe extraction (no absolute paths, ``..``, links; size limits),
  made world-readable (replicas run as uid 10001 and mount it read-only), renamed into place;
- one download per artifact at a time, across threads and processes (a file lock): a second
  start waits for the first download and uses its result;
- the cache is bounded (``MODELPORT_HOST_CACHE_MB``): after a fetch, and at each heartbeat,
  artifacts no replica on this host uses are removed, least recently used first.

With ``shared`` the host mounts the platform's data dir (NFS…) and unpacks from the shared
artifact storage as a single-machine install does (``registry.model_dirs``).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests
from django.conf import settings

from core import host_tokens
from registry import archives
from registry.model_dirs import model_dir_for
from registry.models import ModelVersion

from .models import Replica, Revision

log = logging.getLogger(__name__)
MB = 1 << 20
_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


class ModelFetchFailed(RuntimeError):
    """The platform did not give this host the model (unreachable, refused, or bytes that are
    not the registry's): the replica start fails with this message."""


def cache_root() -> Path:
    configured = settings.MODELPORT_HOST_CACHE_DIR
    return Path(configured) if configured else (
        Path(settings.MODELPORT_DATA_DIR) / "host-cache" / "models")


def platform_url() -> str:
    return (settings.MODELPORT_PLATFORM_URL or settings.MODELPORT_BASE_URL).rstrip("/")


def artifact_path(host: str, sha256: str) -> str:
    return f"/api/v1/hosts/{host}/artifacts/{sha256}/"


def model_dir_on_host(version: ModelVersion, *, host: str,
                      progress: Callable[[str], None] | None = None) -> Path:
    """The version's MLflow model dir on this host: fetched from the platform into the host
    cache (``fetch``), or unpacked from the shared storage (``shared``)."""
    if settings.MODELPORT_HOST_MODEL_SOURCE == "shared":
        return model_dir_for(version)
    sha = version.artifact_sha256
    if not version.artifact_name or len(sha) != 64 or not set(sha) <= _HEX:
        raise ModelFetchFailed(f"{version} has no stored artifact with a SHA-256 to fetch.")
    root = cache_root()
    target = root / sha
    fetched = False
    # Always under the artifact's lock: eviction takes it too, and re-checks what replicas use
    # under it; this start's replica row exists already, so a model returned here is kept.
    with _lock(root, sha):
        if not (target / "MLmodel").exists():  # not cached, or another start fetched it
            _fetch(version, host=host, root=root, progress=progress)
            fetched = True
        _touch(target)
    if fetched:
        try:  # the cache bound is best effort: it never fails a start
            evict(host=host)
        except OSError:
            log.warning("host %s: model cache eviction failed", host, exc_info=True)
    return target


def _fetch(version: ModelVersion, *, host: str, root: Path,
           progress: Callable[[str], None] | None) -> None:
    sha = version.artifact_sha256
    # Recorded at registration; a row without it (made by hand) is bounded by the upload limit.
    size = version.artifact_size
    url = platform_url() + artifact_path(host, sha)
    what = f"model {version.model.name} v{version.version}"
    say = (f"fetching {what} ({size / MB:.1f} MB) from the platform" if size is not None
           else f"fetching {what} from the platform")
    log.info("host %s: %s at %s", host, say, url)
    if progress is not None:
        progress(say)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".fetch-"))
    try:
        download = staging / "artifact.zip"
        started = time.monotonic()
        _download(url, host=host, dest=download, sha256=sha, size=size, what=what)
        unpacked = staging / "model"
        try:
            archives.extract_model_archive(download, unpacked, _limits())
        except archives.ArchiveRefused as exc:
            raise ModelFetchFailed(f"{what}: the downloaded artifact cannot be unpacked: "
                                   f"{exc.message}") from None
        download.unlink()
        for path in [unpacked, *unpacked.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        target = root / sha
        if target.exists():  # an incomplete entry (no MLmodel) left by hand: replaced
            os.rename(target, staging / "old")
        os.rename(unpacked, target)
        log.info("host %s: fetched %s (sha256 %s…) in %.1f s", host, what, sha[:12],
                 time.monotonic() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(url: str, *, host: str, dest: Path, sha256: str, size: int | None,
              what: str) -> None:
    """Stream ``url`` into ``dest``, refusing anything but exactly ``size`` bytes hashing to
    ``sha256`` (what the registry recorded, not what the answer says)."""
    most = size if size is not None else settings.MODELPORT_ARCHIVE_MAX_MB * MB
    headers = {"Authorization": f"Bearer {host_tokens.host_token(host)}"}
    timeout = (10, settings.MODELPORT_HOST_FETCH_TIMEOUT_S)
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout,
                          allow_redirects=False) as answer:
            if answer.status_code != 200:
                detail = answer.text[:200] if answer.status_code < 500 else ""
                raise ModelFetchFailed(f"{what}: the platform answered HTTP "
                                       f"{answer.status_code} at {url} {detail}".rstrip())
            digest, received = hashlib.sha256(), 0
            with dest.open("wb") as out:
                for chunk in answer.iter_content(_CHUNK):
                    received += len(chunk)
                    if received > most:
                        break
                    digest.update(chunk)
                    out.write(chunk)
    except requests.RequestException as exc:
        raise ModelFetchFailed(f"{what}: the platform is unreachable at {url}: "
                               f"{exc.__class__.__name__}: {exc}") from None
    if received > most or (size is not None and received != size):
        raise ModelFetchFailed(f"{what}: received {received}{'+' if received > most else ''} "
                               f"bytes, the registry recorded {size}: refused.")
    if digest.hexdigest() != sha256:
        raise ModelFetchFailed(f"{what}: the downloaded bytes hash to sha256 "
                               f"{digest.hexdigest()}, the registry recorded {sha256}: refused.")


def _limits() -> archives.Limits:
    return archives.Limits(max_members=settings.MODELPORT_ARCHIVE_MAX_MEMBERS,
                           max_bytes=settings.MODELPORT_ARCHIVE_MAX_MB * MB,
                           max_ratio=settings.MODELPORT_ARCHIVE_MAX_RATIO)


@contextmanager
def _lock(root: Path, sha: str, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on one artifact of the cache (flock: per open file, so it holds
    between threads of one worker as between processes). ``wait=False`` yields False at once
    when someone else holds it."""
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{sha}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _touch(target: Path) -> None:
    """Mark the entry used now: eviction removes the least recently used first."""
    with suppress(FileNotFoundError):
        os.utime(target)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def used_on_host(host: str) -> set[str]:
    """SHA-256s of the artifacts of every replica placed on ``host`` (whatever its state: a
    removing replica's container may still have the files mounted)."""
    placed = set(Replica.objects.filter(host__name=host).values_list("deployment_id", "revision"))
    if not placed:
        return set()
    deployments = {d for d, _ in placed}
    return {sha for d, n, sha in Revision.objects.filter(deployment_id__in=deployments)
            .values_list("deployment_id", "number", "model_version__artifact_sha256")
            if (d, n) in placed}


def evict(*, host: str, limit_mb: int | None = None) -> list[str]:
    """Remove cached artifacts no replica on ``host`` uses, least recently used first, until
    the cache is within ``MODELPORT_HOST_CACHE_MB``; the ones in use stay even above it."""
    root = cache_root()
    if not root.is_dir():
        return []
    _sweep_leftovers(root)
    limit = (settings.MODELPORT_HOST_CACHE_MB if limit_mb is None else limit_mb) * MB
    entries = [p for p in root.iterdir() if p.is_dir() and len(p.name) == 64]
    sizes = {p.name: _size(p) for p in entries}
    total = sum(sizes.values())
    if total <= limit:
        return []
    keep = used_on_host(host)
    removed = []
    for entry in sorted(entries, key=lambda p: p.stat().st_mtime):
        if total <= limit:
            break
        if entry.name in keep:
            continue
        with _lock(root, entry.name, wait=False) as mine:
            if not mine:  # being fetched or used for a start right now
                continue
            if entry.name in used_on_host(host):  # placed here since ``keep`` was read
                continue
            # gone from the cache at once, even if the rmtree fails; a unique name, so an
            # earlier failed removal never blocks this one
            trash = Path(tempfile.mkdtemp(dir=root, prefix=f".evict-{entry.name[:12]}-"))
            os.rename(entry, trash / "model")
            shutil.rmtree(trash, ignore_errors=True)
        total -= sizes[entry.name]
        removed.append(entry.name)
        log.info("host %s: removed cached model %s… (%.1f MB, unused)", host, entry.name[:12],
                 sizes[entry.name] / MB)
    return removed


def _sweep_leftovers(root: Path, older_than_s: float = 3600) -> None:
    """Staging and trash directories a killed worker left (``.fetch-*``, ``.evict-*``): they
    are not in the cache and not counted, so nothing else would ever remove them."""
    cutoff = time.time() - older_than_s
    for path in root.glob(".*-*"):
        if path.name.startswith((".fetch-", ".evict-")) and path.is_dir():
            with suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
