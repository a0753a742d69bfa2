"""Artifact storage through Django's storage API, content-addressed by SHA-256.

A model directory is packed into a canonical zip (sorted members, fixed timestamps and modes),
so the same files always give the same bytes and the same address, and are stored once — on the
local filesystem by default, on S3-compatible storage when ``STORAGES["artifacts"]`` says so.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import storages

_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    sha256: str
    size: int


def artifact_storage():
    return storages["artifacts"]


def canonical_zip(model_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(model_dir).as_posix(), date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, path.read_bytes())
    return buffer.getvalue()


def store_model_dir(model_dir: Path) -> StoredArtifact:
    data = canonical_zip(model_dir)
    digest = hashlib.sha256(data).hexdigest()
    name = f"sha256/{digest[:2]}/{digest}.zip"
    storage = artifact_storage()
    if not storage.exists(name):
        saved = storage.save(name, ContentFile(data))
        if saved != name:  # a concurrent writer won the race; same content either way
            storage.delete(saved)
    return StoredArtifact(name=name, sha256=digest, size=len(data))


def open_artifact(name: str):
    return artifact_storage().open(name, "rb")


def unpack_artifact(name: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with open_artifact(name) as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as bundle:
        bundle.extractall(dest)
    return dest
