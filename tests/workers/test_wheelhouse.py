"""Fetching a model environment's wheels: for the image's interpreter, wheels only, from the
configured index, allow-list applied to every dependency.

The fetch tests run real ``pip download`` against a PEP 503 index on loopback (tests/pkgindex.py)
for this interpreter; the Docker tests in tests/registry/test_model_environments.py run the same
code for the serving base image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.pkgindex import calls_home, listener, make_sdist, make_wheel, package_index
from workers.runtimes.wheelhouse import (
    PROBE,
    PackageNotAllowed,
    PackagePolicy,
    Target,
    WheelFetchError,
    closure,
    fetch,
)

BOOKWORM = {"version": [3, 11, 2], "implementation": "cpython",
            "soabi": "cpython-311-x86_64-linux-gnu", "machine": "x86_64",
            "libc": ["glibc", "2.36"], "markers": {"python_version": "3.11"}}


def test_target_tags_follow_the_probed_image_not_this_host() -> None:
    target = Target.from_probe(BOOKWORM)
    platforms = target.platforms()
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64",
            "manylinux1_x86_64", "manylinux_2_5_x86_64"} <= set(platforms)
    assert platforms[-1] == "linux_x86_64" and "manylinux_2_37_x86_64" not in platforms
    args = target.pip_args()
    assert args[:6] == ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    assert target.describe() == "CPython 3.11 manylinux (glibc 2.36) x86_64"

    arm = Target.from_probe({**BOOKWORM, "machine": "aarch64", "libc": ["glibc", "2.31"],
                             "soabi": "cpython-312-aarch64-linux-gnu", "version": [3, 12, 1]})
    assert arm.platforms()[0] == "manylinux_2_31_aarch64"
    assert arm.platforms()[-2:] == ["manylinux2014_aarch64", "linux_aarch64"]
    assert not any("manylinux1" in p or "2_16" in p for p in arm.platforms())
    assert arm.abi == "cp312"


def test_a_non_glibc_base_image_is_refused_with_the_reason() -> None:
    with pytest.raises(WheelFetchError, match="only glibc"):
        Target.from_probe({**BOOKWORM, "libc": ["", ""]})


def test_platform_settings_replace_the_hosts_indexes_or_keep_them_when_empty(tmp_path) -> None:
    host = PackagePolicy(index_url=None, extra_index_urls=("file:///opt/pypi/simple",),
                         find_links=("/opt/wheels",), ca_bundle="/etc/ssl/ca.crt")
    kept = host.configured(allowed=["Scikit_Learn"])
    assert kept.extra_index_urls == host.extra_index_urls and kept.find_links == ("/opt/wheels",)
    assert kept.allowed == frozenset({"scikit-learn"})
    assert "https://pypi.org/simple (pip's default)" in kept.describe()

    own = host.configured(index_url="https://pypi.internal/simple",
                          extra_index_urls=["https://more.internal/simple"])
    assert own.pip_args() == ["--index-url", "https://pypi.internal/simple",
                              "--extra-index-url", "https://more.internal/simple",
                              "--cert", "/etc/ssl/ca.crt"]

    offline = PackagePolicy(offline=True, find_links=("/opt/wheels",)).configured(
        index_url="https://pypi.internal/simple")
    assert offline.pip_args() == ["--no-index", "--find-links", "/opt/wheels"]

    # The platform's wheel folder is searched besides whatever indexes are in force.
    mirror = host.configured(index_url="https://pypi.internal/simple", wheel_folder="/srv/w")
    assert mirror.find_links == ("/srv/w",) and "wheels in /srv/w" in mirror.describe()
    assert host.configured(wheel_folder="/srv/w").find_links == ("/opt/wheels", "/srv/w")
    assert PackagePolicy(offline=True).configured(wheel_folder="/srv/w").pip_args() == \
        ["--no-index", "--find-links", "/srv/w"]


def test_closure_follows_extras_and_the_targets_markers() -> None:
    dists = {
        "app": [Requirement("dep>=1"), Requirement("win-only; sys_platform == 'win32'"),
                Requirement("old-py; python_version < '3.11'"),
                Requirement("fancy; extra == 'fancy'")],
        "dep": [Requirement("leaf")],
        "fancy": [], "leaf": [], "win-only": [], "old-py": [],
    }
    env = {"sys_platform": "linux", "python_version": "3.11"}
    assert closure([Requirement("app")], dists, env) == {
        "app": "required by app", "dep": "app needs it", "leaf": "dep needs it"}
    assert "fancy" in closure([Requirement("app[fancy]")], dists, env)
    assert "old-py" in closure([Requirement("app")], dists, {**env, "python_version": "3.10"})


@pytest.fixture(scope="module")
def this_interpreter() -> Target:
    """This interpreter, probed by the same script the base image runs."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout
    return Target.from_probe(json.loads(out))


@pytest.fixture
def index_files(tmp_path: Path) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    return files


def _fetch(index: str, target: Target, tmp_path: Path, model: list[str],
           allowed: list[str] | None = None, lines: list[str] | None = None):
    policy = PackagePolicy(index_url=index).configured(index_url=index, allowed=allowed or [])
    return fetch(platform_requirements=[], model_requirements=model, target=target,
                 policy=policy, cache_root=tmp_path / "wheelhouses",
                 log=(lines if lines is not None else []).append)


def test_a_package_with_only_an_sdist_is_refused_by_name_and_its_setup_never_runs(
        this_interpreter: Target, index_files: Path, tmp_path: Path) -> None:
    with listener() as (home, hits):
        make_sdist(index_files, "victim-sdist", "1.0",
                   calls_home(f"{home}/setup-py-ran") + "raise SystemExit(1)\n")
        with package_index(index_files) as index, pytest.raises(WheelFetchError) as caught:
            _fetch(index, this_interpreter, tmp_path, ["victim-sdist==1.0"])
    message = str(caught.value)
    assert message.startswith(f"no wheel of victim-sdist for {this_interpreter.describe()} on "
                              f"{index}")
    assert "never builds a package from source" in message
    assert hits == []


def test_wheels_are_fetched_once_per_requirement_set_then_reused(
        this_interpreter: Target, index_files: Path, tmp_path: Path) -> None:
    make_wheel(index_files, "victim-app", "1.0", requires=["victim-dep>=1"])
    make_wheel(index_files, "victim-dep", "1.2")
    with package_index(index_files) as index:
        first = _fetch(index, this_interpreter, tmp_path, ["victim-app==1.0"])
        lines: list[str] = []
        again = _fetch(index, this_interpreter, tmp_path, ["victim-app==1.0"], lines=lines)
    assert sorted(w.name for w in first.wheels) == ["victim_app-1.0-py3-none-any.whl",
                                                     "victim_dep-1.2-py3-none-any.whl"]
    assert first.model_packages == ["victim-app", "victim-dep"]
    assert again.path == first.path and any("cached" in line for line in lines)


def test_a_wheel_only_in_the_platforms_wheel_folder_is_found(
        this_interpreter: Target, index_files: Path, tmp_path: Path) -> None:
    # An air-gapped site: the index mirror lacks a package its wheel folder has.
    folder = tmp_path / "mirror-wheels"
    folder.mkdir()
    make_wheel(index_files, "victim-app", "1.0", requires=["victim-local>=1"])
    make_wheel(folder, "victim-local", "2.0")
    with package_index(index_files) as index:
        with pytest.raises(WheelFetchError, match="victim-local"):
            _fetch(index, this_interpreter, tmp_path, ["victim-app==1.0"])
        policy = PackagePolicy(index_url=index).configured(index_url=index,
                                                           wheel_folder=str(folder))
        found = fetch(platform_requirements=[], model_requirements=["victim-app==1.0"],
                      target=this_interpreter, policy=policy,
                      cache_root=tmp_path / "wheelhouses", log=[].append)
    assert sorted(w.name for w in found.wheels) == ["victim_app-1.0-py3-none-any.whl",
                                                     "victim_local-2.0-py3-none-any.whl"]


def test_the_allow_list_applies_to_every_dependency_and_names_what_pulled_it_in(
        this_interpreter: Target, index_files: Path, tmp_path: Path) -> None:
    make_wheel(index_files, "victim-app", "1.0", requires=["victim-dep>=1"])
    make_wheel(index_files, "victim-dep", "1.2")
    with package_index(index_files) as index, pytest.raises(PackageNotAllowed) as caught:
        _fetch(index, this_interpreter, tmp_path, ["victim-app==1.0"], allowed=["victim-app"])
    assert "not in the platform's allowed packages: victim-dep (victim-app needs it)" in \
        str(caught.value)
    with package_index(index_files) as index:
        ok = _fetch(index, this_interpreter, tmp_path, ["victim-app==1.0"],
                    allowed=["victim-app", "Victim_Dep"])
    assert ok.model_packages == ["victim-app", "victim-dep"]
