"""Safe extraction of uploaded model archives (.zip, .tar.gz).

Refuses, before writing anything: absolute paths, ``..`` components, links of any kind, device
files, more than ``max_members`` members, more than ``max_bytes`` uncompressed. While writing, the
real number of bytes is counted too, so a header that lies about sizes cannot fill the disk.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from config.errors import InvalidInput

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_members: int
    max_bytes: int


class ArchiveRefused(InvalidInput):
    code = "bad_archive"


def _checked_name(name: str) -> PurePosixPath:
    if "\\" in name or "\x00" in name:
        raise ArchiveRefused(f"Archive member '{name}' has an illegal character in its name.")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise ArchiveRefused(f"Archive member '{name}' has an absolute path.")
    if ".." in path.parts:
        raise ArchiveRefused(f"Archive member '{name}' escapes the archive with '..'.")
    return path


def _copy_limited(source, target: Path, budget: list[int], limits: Limits) -> None:
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > limits.max_bytes:
                raise ArchiveRefused(
                    f"Archive expands to more than {limits.max_bytes // (1 << 20)} MB.")
            out.write(chunk)


def _extract_zip(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ArchiveRefused(f"Not a readable zip archive: {exc}.") from None
    with bundle:
        members = bundle.infolist()
        if len(members) > limits.max_members:
            raise ArchiveRefused(f"Archive has {len(members)} members; the limit is "
                                 f"{limits.max_members}.")
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise ArchiveRefused(
                f"Archive expands to more than {limits.max_bytes // (1 << 20)} MB.")
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
                    _copy_limited(source, target, budget, limits)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                if isinstance(exc, ArchiveRefused):
                    raise
                raise ArchiveRefused(f"Archive member '{member.filename}' is corrupt: "
                                     f"{exc}.") from None


def _extract_tar(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        bundle = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveRefused(f"Not a readable tar archive: {exc}.") from None
    with bundle:
        try:
            members = []
            for member in bundle:
                members.append(member)
                if len(members) > limits.max_members:
                    raise ArchiveRefused(f"Archive has more than {limits.max_members} members.")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveRefused(f"Archive is corrupt: {exc}.") from None
        if sum(m.size for m in members if m.isfile()) > limits.max_bytes:
            raise ArchiveRefused(
                f"Archive expands to more than {limits.max_bytes // (1 << 20)} MB.")
        for member in members:
            _checked_name(member.name)
            if member.issym() or member.islnk():
                raise ArchiveRefused(f"Archive member '{member.name}' is a link to "
                                     f"'{member.linkname}'; links are not allowed in model "
                                     "archives.")
            if not (member.isfile() or member.isdir()):
                raise ArchiveRefused(f"Archive member '{member.name}' is not a regular file.")
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
                _copy_limited(source, target, budget, limits)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ArchiveRefused(f"Archive member '{member.name}' is corrupt: "
                                     f"{exc}.") from None


def extract_model_archive(archive: Path, dest: Path, limits: Limits) -> Path:
    """Extract ``archive`` into ``dest`` and return the MLflow model directory inside it."""
    dest.mkdir(parents=True, exist_ok=True)
    with archive.open("rb") as head:
        magic = head.read(4)
    if magic.startswith(b"PK"):
        _extract_zip(archive, dest, limits)
    elif magic[:2] == b"\x1f\x8b" or tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, limits)
    else:
        raise ArchiveRefused("Unknown archive type; upload a .zip or .tar.gz of an MLflow "
                             "model directory.")
    return find_model_root(dest)


def find_model_root(root: Path) -> Path:
    if (root / "MLmodel").is_file():
        return root
    children = [c for c in root.iterdir() if c.name not in {"__MACOSX", ".DS_Store"}]
    if len(children) == 1 and children[0].is_dir() and (children[0] / "MLmodel").is_file():
        return children[0]
    raise ArchiveRefused("No MLmodel file at the top of the archive (or in its single top "
                         "folder): this is not an MLflow model directory.", code="missing_mlmodel")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
