"""The Python client (``client/`` in the repository) as a wheel the platform serves itself, so a
team installs it with ``pip install <platform>/client/<wheel>`` instead of from a checkout.

The wheel is built here, in memory, from ``client/pyproject.toml`` and the package's source
files: a pure-Python ``py3-none-any`` wheel is a zip with the package and a ``.dist-info``
folder, so no build backend, network or writable directory is needed (the image and ``make
run`` ship ``client/``). The build is byte-for-byte reproducible (sorted members, a fixed
timestamp and file mode): every web process builds the same file, so the ``#sha256=`` a PEP 503
index page gives matches the file any other process serves. It is rebuilt when a source file
changes (a developer's checkout), otherwise once per process.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tomllib
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: no build time in the file


@dataclass(frozen=True)
class Wheel:
    project: str  # as declared: modelport-client
    version: str
    filename: str  # modelport_client-0.1.0-py3-none-any.whl
    requires_python: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def source_dir() -> Path:
    return Path(settings.BASE_DIR) / "client"


def _sources(root: Path, packages: list[str]) -> list[Path]:
    files = []
    for package in packages:
        files += [p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


@lru_cache(maxsize=4)
def _source_files(root: Path, stamp: tuple) -> tuple[Path, ...]:
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return (root / "pyproject.toml",
            *_sources(root, list(config["tool"]["setuptools"]["packages"])))


def _fingerprint(root: Path) -> tuple:
    """What the wheel is built from, by modification time and size. The files are listed again
    only when ``pyproject.toml`` or a folder of ``client/`` changes (a file added or removed)."""
    stamp = tuple((str(d), d.stat().st_mtime_ns, d.stat().st_size)
                  for d in (root / "pyproject.toml", *sorted(root.glob("*/"))))
    paths = _source_files(root, stamp)
    return tuple((str(p), *(lambda s: (s.st_mtime_ns, s.st_size))(p.stat())) for p in paths)


def _metadata(project: dict, readme: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {r}" for r in project.get("dependencies", [])]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _build(root: Path) -> Wheel:
    config = tomllib.loads((root / "pyproject.toml").read_text())
    project, packages = config["project"], list(config["tool"]["setuptools"]["packages"])
    dist = re.sub(r"[-_.]+", "_", project["name"]).lower()
    version = str(project["version"])
    info = f"{dist}-{version}.dist-info"
    readme = (root / "README.md").read_text() if (root / "README.md").exists() else ""
    members: dict[str, bytes] = {
        p.relative_to(root).as_posix(): p.read_bytes() for p in _sources(root, packages)}
    scripts = project.get("scripts", {})
    members[f"{info}/METADATA"] = _metadata(project, readme).encode()
    members[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: modelport (core/client_dist.py)"
                                b"\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    if scripts:
        members[f"{info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
            f"{name} = {target}\n" for name, target in sorted(scripts.items()))).encode()
    members[f"{info}/top_level.txt"] = "".join(f"{p}\n" for p in packages).encode()
    record = [_record_line(name, data) for name, data in members.items()]
    members[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():  # dist-info last, RECORD at the very end
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o100644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return Wheel(project=project["name"], version=version,
                 filename=f"{dist}-{version}-py3-none-any.whl",
                 requires_python=str(project.get("requires-python", "")),
                 content=buffer.getvalue())


@lru_cache(maxsize=1)
def _cached(root: str, fingerprint: tuple) -> Wheel:
    return _build(Path(root))


def client_wheel() -> Wheel:
    """The client's wheel, built once per process (again if its sources changed)."""
    root = source_dir()
    return _cached(str(root), _fingerprint(root))
