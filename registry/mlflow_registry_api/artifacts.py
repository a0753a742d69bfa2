"""Downloads of Modelport's versions by MLflow clients: ``mlflow-artifacts:/modelport-registry/
<name>/<version>`` (the version's download URI) answered from Modelport's own storage.

``MlflowArtifactsRepository`` lists a folder (``GET …/artifacts?path=…``) and fetches each file
(``GET …/artifacts/<path>``) with the caller's token. The stored artifact is a canonical zip
(``storage.py``), addressed by its SHA-256: it is checked against the version's checksum before
anything is served from it, and member names come only from the zip's own listing — a requested
path is matched against them, never joined onto a filesystem path. A client fetches a model file
by file, so a check is remembered per process (``_checked``) while the stored file's size and
modification time stay the same, for ``CHECKED_FOR_S``: a model of k files is read once for
its checksum, not k + 1 times.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
import zipfile
from collections.abc import Iterator
from typing import IO

from django.http import JsonResponse, StreamingHttpResponse

from .. import storage
from ..mlflow_calls import Caller, Refusal, invalid, missing
from ..models import VersionStatus
from .lookup import version
from .render import ARTIFACT_ROOT

CHUNK = 1048576
CHECKED_FOR_S = 300.0
_CHECKED_MAX = 256
# (stored name, expected SHA-256) → (size, modification time, when checked)
_checked: dict[tuple[str, str], tuple[int, float, float]] = {}


def _stamp(name: str) -> tuple[int, float] | None:
    """The stored file's size and modification time, or None where the storage cannot say."""
    backend = storage.artifact_storage()
    try:
        return backend.size(name), backend.get_modified_time(name).timestamp()
    except (NotImplementedError, OSError):
        return None


def _already_checked(name: str, sha256: str) -> bool:
    seen = _checked.get((name, sha256))
    return (seen is not None and time.monotonic() - seen[2] < CHECKED_FOR_S
            and _stamp(name) == seen[:2])


def _remember_checked(name: str, sha256: str) -> None:
    stamp = _stamp(name)
    if stamp is None:
        return
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked[(name, sha256)] = (*stamp, time.monotonic())


def _split(path: str) -> tuple[str, str, str]:
    """``modelport-registry/<name>/<version>[/<inside>]`` → (name, version, inside)."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != ARTIFACT_ROOT or any(p in ("", ".", "..")
                                                          for p in parts):
        raise invalid(f"Not a Modelport model version path: {path!r}.")
    return parts[1], parts[2], "/".join(parts[3:])


def _open(caller: Caller, path: str) -> tuple[zipfile.ZipFile, IO[bytes], str]:
    return _open_version(caller, *_split(path))


def _open_version(caller: Caller, name: str, number: str,
                  inside: str) -> tuple[zipfile.ZipFile, IO[bytes], str]:
    found = version(caller, name, number)
    if found.status != VersionStatus.READY or not found.artifact_name:
        raise invalid(f"Version {number} of '{name}' is {found.status}: nothing to download.")
    try:
        handle = storage.open_artifact(found.artifact_name)
    except FileNotFoundError:  # the platform's fault, said in MLflow's format
        raise Refusal(500, "INTERNAL_ERROR", f"The stored artifact of '{name}' v{number} is "
                                             "missing from Modelport's storage.") from None
    if not _already_checked(found.artifact_name, found.artifact_sha256):
        digest = hashlib.sha256()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
        if digest.hexdigest() != found.artifact_sha256:
            handle.close()
            raise Refusal(500, "INTERNAL_ERROR", f"The stored artifact of '{name}' v{number} "
                                                 "does not match its checksum; it is not served.")
        _remember_checked(found.artifact_name, found.artifact_sha256)
        handle.seek(0)
    return zipfile.ZipFile(handle), handle, inside


def listing(caller: Caller, path: str) -> JsonResponse:
    bundle, handle, inside = _open(caller, path)
    try:
        prefix = f"{inside}/" if inside else ""
        files: dict[str, dict] = {}
        for info in bundle.infolist():
            if not info.filename.startswith(prefix) or info.filename == prefix:
                continue
            head, _, rest = info.filename[len(prefix):].partition("/")
            if rest:
                files.setdefault(head, {"path": head, "is_dir": True})
            else:
                files[head] = {"path": head, "is_dir": False, "file_size": info.file_size}
    finally:
        bundle.close()
        handle.close()
    if inside and not files and inside in bundle.namelist():
        base = posixpath.basename(inside)  # a file: MLflow lists it as itself
        files[base] = {"path": base, "is_dir": False}
    return JsonResponse({"files": [files[k] for k in sorted(files)]})


def _stream(bundle: zipfile.ZipFile, handle: IO[bytes], member: str) -> Iterator[bytes]:
    try:
        with bundle.open(member) as source:
            while chunk := source.read(CHUNK):
                yield chunk
    finally:
        bundle.close()
        handle.close()


def file(caller: Caller, path: str) -> StreamingHttpResponse:
    return _file(*_open(caller, path))


def version_file(caller: Caller, name: str, number: str, path: str) -> StreamingHttpResponse:
    """``model-versions/get-artifact?name=&version=&path=`` (MLflow's UI): the same file."""
    if not name or not path or any(p in ("", ".", "..") for p in path.strip("/").split("/")):
        raise invalid(f"Give a model's name, a version and a file path; got {path!r}.")
    return _file(*_open_version(caller, name, number, path.strip("/")))


def _file(bundle: zipfile.ZipFile, handle: IO[bytes], inside: str) -> StreamingHttpResponse:
    if not inside or inside not in bundle.namelist():
        bundle.close()
        handle.close()
        raise missing(f"No file {inside!r} in this model version.")
    size = bundle.getinfo(inside).file_size
    response = StreamingHttpResponse(_stream(bundle, handle, inside),
                                     content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response
