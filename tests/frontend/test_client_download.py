"""The Python client installable from the platform itself (issue 18): the wheel built from
``client/`` is served at /client/<wheel> and through a PEP 503 index at /client/simple/, without
sign-in, and a real ``pip`` installs it into a fresh virtual environment from a live server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from django.test import Client

from core.client_dist import _build, client_wheel, source_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_is_the_client_package_and_builds_byte_for_byte_the_same():
    wheel = client_wheel()
    assert wheel.filename == f"modelport_client-{wheel.version}-py3-none-any.whl"
    assert _build(source_dir()).content == wheel.content  # every web process serves one file
    names = zipfile.ZipFile(BytesIO(wheel.content)).namelist()
    info = f"modelport_client-{wheel.version}.dist-info"
    assert "modelport/cli.py" in names and "modelport/__init__.py" in names
    assert names[-1] == f"{info}/RECORD"
    archive = zipfile.ZipFile(BytesIO(wheel.content))
    metadata = archive.read(f"{info}/METADATA").decode()
    assert "Name: modelport-client" in metadata and "Requires-Dist: httpx" in metadata
    assert "modelport = modelport.cli:main" in archive.read(f"{info}/entry_points.txt").decode()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_a_changed_or_added_source_file_makes_a_new_wheel(settings, tmp_path):
    shutil.copytree(ROOT / "client", tmp_path / "client",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    settings.BASE_DIR = tmp_path
    before = client_wheel()
    assert client_wheel() is before  # cached while nothing changes
    (tmp_path / "client" / "modelport" / "extra.py").write_text("X = 1\n")
    after = client_wheel()
    assert "modelport/extra.py" in zipfile.ZipFile(BytesIO(after.content)).namelist()
    assert after.sha256 != before.sha256


@pytest.mark.django_db
def test_the_page_the_index_and_the_file_need_no_sign_in():
    wheel = client_wheel()
    page = Client().get("/client/")
    assert page.status_code == 200
    assert f"/client/{wheel.filename}</code>" in page.content.decode()
    root = Client().get("/client/simple/").content.decode()
    assert '<a href="modelport-client/">modelport-client</a>' in root
    project = Client().get("/client/simple/modelport-client/")
    assert project.status_code == 200
    href = re.search(r'<a href="([^"]+)"', project.content.decode())[1]
    assert href == f"../../{wheel.filename}#sha256={wheel.sha256}"
    assert 'data-requires-python="&gt;=3.10"' in project.content.decode()
    # pip normalises the name; any spelling of it finds the project.
    assert Client().get("/client/simple/Modelport_Client/").status_code == 200
    served = Client().get(f"/client/{wheel.filename}")
    assert served.status_code == 200 and served.content == wheel.content
    assert served["Content-Disposition"] == f'attachment; filename="{wheel.filename}"'


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/client/simple/requests/", "/client/other-1.0-py3-none-any.whl",
                                  "/client/modelport_client-0.0.1-py3-none-any.whl"])
def test_anything_else_under_client_is_a_404(path):
    assert Client().get(path).status_code == 404


@pytest.mark.django_db
def test_only_reads_are_allowed():
    wheel = client_wheel()
    assert Client().post(f"/client/{wheel.filename}").status_code == 405
    assert Client().head(f"/client/{wheel.filename}").status_code == 200


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_pip_installs_the_client_from_a_live_platform(live_server, tmp_path):
    """A fresh venv, a real pip. The client comes from the platform only (no other index has
    it); its dependency, httpx, from the machine's configured package index (an offline mirror
    here), as it would from a team's usual index."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip, wheel = [str(venv / "bin" / "python"), "-m", "pip"], client_wheel()
    by_index = subprocess.run(
        [*pip, "install", "--index-url", f"{live_server.url}/client/simple/", "modelport-client"],
        capture_output=True, text=True, timeout=600)
    assert by_index.returncode == 0, by_index.stdout[-2000:] + by_index.stderr[-2000:]
    assert f"{live_server.url}/client/{wheel.filename}" in by_index.stdout
    by_url = subprocess.run(
        [*pip, "install", "--no-index", "--no-deps", "--force-reinstall",
         f"{live_server.url}/client/{wheel.filename}"],
        capture_output=True, text=True, timeout=300)
    assert by_url.returncode == 0, by_url.stdout[-2000:] + by_url.stderr[-2000:]

    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import modelport; print(modelport.__version__, modelport.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True)
    version, location = where.stdout.split()
    assert version == wheel.version and location.startswith(str(venv))
    cli = subprocess.run([str(venv / "bin" / "modelport"), "--help"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert cli.returncode == 0 and "usage: modelport" in cli.stdout


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [(1440, 900), (390, 844)])
def test_the_client_page_fits_and_its_link_downloads_the_wheel(live_server, page, size):
    """Signed out, at desktop and phone sizes: the command scrolls inside its own box, the page
    does not, and the footer link leads here (the shared ``page`` fixture also fails on any CSP
    violation)."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.goto(f"{live_server.url}/login/")
    page.get_by_role("link", name="Python client").click()
    page.get_by_role("heading", name="Python client and CLI").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
    assert page.get_by_role("button", name="Copy pip install").is_visible()
    wheel = client_wheel()
    with page.expect_download() as download:
        page.get_by_role("link", name=wheel.filename).click()
    assert download.value.suggested_filename == wheel.filename
