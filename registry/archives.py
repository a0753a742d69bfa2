"""Safe extraction of uploaded model archives (.zip, .tar.gz, and tar with bz2/xz or none).

Refuses, before writing anything: absolute paths, ``..`` components, links of any kind, device
files, more than ``max_members`` members, more than ``max_bytes`` uncompressed, and archives
that expand more than ``max_ratio`` times their own size (beyond a small allowance): a
decompression bomb costs what reading its headers costs, not what inflating it would.

- zip: the sizes come from the central directory, read without inflating anything; zipfile
  never inflates a member past its declared size (a longer stream fails its CRC).
- tar: each header is checked as it is read, so an oversized member is refused before tarfile
  seeks (inflates) over its data; the decompressed stream itself refuses to go past what the
  archive may expand to, so a header that is itself huge (pax, GNU long name) cannot cost more.

While writing, the real number of bytes is counted too.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import InvalidInput

from .formats import ACCEPTED

_CHUNK = 1 << 20
MB = 1 << 20
# Tar headers and padding take room besides the members' data: at most this per member.
_TAR_OVERHEAD_PER_MEMBER = 4096
# What a damaged archive raises while being read (zlib, bz2 and lzma each their own).
# zipfile raises NotImplementedError for unknown compression, RuntimeError for encryption.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
            lzma.LZMAError, ValueError, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class Limits:
    max_members: int
    max_bytes: int
    max_ratio: float = 100.0
    # Archives expanding to no more than this are never refused for their ratio (small text
    # files compress very well); inflating this much costs well under a second.
    ratio_free_bytes: int = 64 * MB


class ArchiveRefused(InvalidInput):
    code = "bad_archive"


@dataclass(frozen=True)
class _Allowance:
    """How many bytes an archive of a given size may expand to, and why not more."""

    bytes: int
    reason: str

    @classmethod
    def of(cls, archive_size: int, limits: Limits) -> _Allowance:
        by_ratio = max(int(limits.max_ratio * archive_size), limits.ratio_free_bytes)
        if by_ratio < limits.max_bytes:
            return cls(by_ratio, f"Archive expands more than {limits.max_ratio:g} times its own "
                                 f"size ({archive_size / MB:.1f} MB): refused as a likely "
                                 "decompression bomb.")
        return cls(limits.max_bytes, f"Archive expands to more than {limits.max_bytes // MB} MB.")

    def refuse(self, declared: int | None = None) -> ArchiveRefused:
        detail = f" Its members declare {declared / MB:.1f} MB." if declared else ""
        return ArchiveRefused(self.reason + detail)


def _checked_name(name: str) -> PurePosixPath:
    if "\\" in name or "\x00" in name:
        raise ArchiveRefused(f"Archive member '{name}' has an illegal character in its name.")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise ArchiveRefused(f"Archive member '{name}' has an absolute path.")
    if ".." in path.parts:
        raise ArchiveRefused(f"Archive member '{name}' escapes the archive with '..'.")
    return path


def _copy_limited(source, target: Path, budget: list[int], allowance: _Allowance) -> None:
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > allowance.bytes:
                raise allowance.refuse()
            out.write(chunk)


def _extract_zip(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        bundle = zipfile.ZipFile(archive)
    except _CORRUPT as exc:
        raise ArchiveRefused(f"Not a readable zip archive: {exc}.") from None
    with bundle:
        members = bundle.infolist()
        if len(members) > limits.max_members:
            raise ArchiveRefused(f"Archive has {len(members)} members; the limit is "
                                 f"{limits.max_members}.")
        allowance = _Allowance.of(archive.stat().st_size, limits)
        declared = sum(m.file_size for m in members)
        if declared > allowance.bytes:
            raise allowance.refuse(declared)
        for member in members:
            path = _checked_name(member.filename)
            mode = member.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveRefused(f"Archive member '{member.filename}' is a symbolic link; "
                                     "links are not allowed in model archives.")
        budget = [0]
        for member in members:
            path = _checked_name(member.filename)
            target = dest.joinpath(*path.parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with bundle.open(member) as source:
                    _copy_limited(source, target, budget, allowance)
            except _CORRUPT as exc:
                raise ArchiveRefused(f"Archive member '{member.filename}' is corrupt: "
                                     f"{exc}.") from None


class _Bounded:
    """The decompressed tar stream, refusing any read or seek past ``limit``: tarfile reads
    headers of any declared size into memory and skips member data by seeking (which inflates
    it), so this is what bounds the work whatever the headers say."""

    def __init__(self, raw: BufferedIOBase, limit: int, allowance: _Allowance) -> None:
        self.raw, self.limit, self.allowance = raw, limit, allowance

    def read(self, size: int = -1) -> bytes:
        position = self.raw.tell()
        if size is None or size < 0:
            size = self.limit - position + 1
        if position + size > self.limit:
            raise self.allowance.refuse()
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset > self.limit:
            raise self.allowance.refuse()
        return self.raw.seek(offset)

    def tell(self) -> int:
        return self.raw.tell()


def _tar_stream(archive: Path) -> BufferedIOBase | None:
    """The archive's decompressed bytes if it is a tar (plain, gzip, bz2 or xz), else None.
    Decided from magic numbers, never by letting tarfile read a header."""
    with archive.open("rb") as head:
        start = head.read(512)
    if start[:2] == b"\x1f\x8b":
        return gzip.open(archive, "rb")
    if start[:3] == b"BZh":
        return bz2.open(archive, "rb")
    if start[:6] == b"\xfd7zXZ\x00":
        return lzma.open(archive, "rb")
    if start[257:262] == b"ustar":
        return archive.open("rb")
    return None


def _tar_members(bundle: tarfile.TarFile, limits: Limits,
                 allowance: _Allowance) -> list[tarfile.TarInfo]:
    """Every member, each checked as its header is read — before tarfile skips its data."""
    members: list[tarfile.TarInfo] = []
    declared = 0
    for member in bundle:
        members.append(member)
        if len(members) > limits.max_members:
            raise ArchiveRefused(f"Archive has more than {limits.max_members} members.")
        _checked_name(member.name)
        if member.issym() or member.islnk():
            raise ArchiveRefused(f"Archive member '{member.name}' is a link to "
                                 f"'{member.linkname}'; links are not allowed in model "
                                 "archives.")
        if not (member.isfile() or member.isdir()):
            raise ArchiveRefused(f"Archive member '{member.name}' is not a regular file.")
        declared += member.size
        if declared > allowance.bytes:
            raise allowance.refuse(declared)
    return members


def _extract_tar(stream: BufferedIOBase, archive_size: int, dest: Path, limits: Limits) -> None:
    allowance = _Allowance.of(archive_size, limits)
    bounded: Any = _Bounded(stream, allowance.bytes + _TAR_OVERHEAD_PER_MEMBER
                            * (limits.max_members + 4), allowance)
    try:
        bundle = tarfile.open(fileobj=bounded, mode="r:")  # noqa: SIM115 - closed below
    except _CORRUPT as exc:
        raise ArchiveRefused(f"Not a readable tar archive: {exc}.") from None
    with bundle:
        try:
            members = _tar_members(bundle, limits, allowance)
        except _CORRUPT as exc:
            raise ArchiveRefused(f"Archive is corrupt: {exc}.") from None
        budget = [0]
        for member in members:
            path = _checked_name(member.name)
            target = dest.joinpath(*path.parts) if path.parts else dest
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                source = bundle.extractfile(member)
                if source is None:
                    raise ArchiveRefused(f"Archive member '{member.name}' cannot be read.")
                _copy_limited(source, target, budget, allowance)
            except _CORRUPT as exc:
                raise ArchiveRefused(f"Archive member '{member.name}' is corrupt: "
                                     f"{exc}.") from None


def extract_model_archive(archive: Path, dest: Path, limits: Limits) -> Path:
    """Extract ``archive`` into ``dest`` and return the MLflow model directory inside it."""
    dest.mkdir(parents=True, exist_ok=True)
    with archive.open("rb") as head:
        magic = head.read(4)
    if magic.startswith(b"PK"):
        _extract_zip(archive, dest, limits)
        return find_model_root(dest)
    stream = _tar_stream(archive)
    if stream is None:
        raise ArchiveRefused("Unknown archive type; upload a .zip or .tar.gz of an MLflow "
                             "model directory.")
    with stream:
        _extract_tar(stream, archive.stat().st_size, dest, limits)
    return find_model_root(dest)


def find_model_root(root: Path) -> Path:
    if (root / "MLmodel").is_file():
        return root
    children = [c for c in root.iterdir() if c.name not in {"__MACOSX", ".DS_Store"}]
    if len(children) == 1 and children[0].is_dir() and (children[0] / "MLmodel").is_file():
        return children[0]
    raise ArchiveRefused("No MLmodel file at the top of the archive (or in its single top "
                         f"folder): this is not an MLflow model directory. Upload {ACCEPTED}.",
                         code="missing_mlmodel")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
