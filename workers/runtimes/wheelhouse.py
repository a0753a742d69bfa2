"""Fetch a model environment's wheels on the worker, so the image build needs no network.

``pip download --only-binary=:all:`` resolves the serving requirements plus the model's for the
serving image's interpreter (Python version, implementation, ABI and platform probed from the
base image on the engine that builds it, never assumed from this host) from the configured
package index into a wheelhouse under the data dir. Only wheels are ever fetched: no sdist is
built, so no package's code runs here; a package without a compatible wheel fails the build
naming it. The allow-list of the platform settings then applies to every package the model's
requirements pull in. ``images.py`` copies the wheelhouse into a ``docker build`` that runs with
``network_mode="none"`` and installs as a non-root user. Django-free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

LogFn = Callable[[str], None]
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PYPI = "https://pypi.org/simple"
PROBE_LABEL = "modelport.probe"
MAX_METADATA_BYTES = 8 * 1048576  # read into memory to follow Requires-Dist
# Run inside the base image (stdlib only): what pip there would call its own environment.
PROBE = r"""
import json, os, platform, sys, sysconfig
i = sys.implementation
v = "%d.%d.%d" % i.version[:3]
if i.version.releaselevel != "final":
    v += i.version.releaselevel[0] + str(i.version.serial)
print(json.dumps({
    "version": list(sys.version_info[:3]), "implementation": i.name,
    "soabi": sysconfig.get_config_var("SOABI") or "", "machine": platform.machine(),
    "libc": list(platform.libc_ver()),
    "markers": {"implementation_name": i.name, "implementation_version": v,
                "os_name": os.name, "platform_machine": platform.machine(),
                "platform_release": platform.release(), "platform_system": platform.system(),
                "platform_version": platform.version(),
                "python_full_version": platform.python_version(),
                "platform_python_implementation": platform.python_implementation(),
                "python_version": ".".join(platform.python_version_tuple()[:2]),
                "sys_platform": sys.platform}}))
"""


class WheelFetchError(RuntimeError):
    """The wheels of a model environment could not be fetched (no wheel, conflict, index down)."""


class PackageNotAllowed(WheelFetchError):
    """A requirement, or a dependency of one, is not in the platform's allowed packages."""


# --- The interpreter the wheels are for ------------------------------------------------------
@dataclass(frozen=True)
class Target:
    python: tuple[int, int, int]
    implementation: str  # sys.implementation.name: "cpython"
    soabi: str  # "cpython-311-x86_64-linux-gnu"
    machine: str  # "x86_64", "aarch64"
    glibc: tuple[int, int]
    markers: dict[str, str] = dataclasses.field(hash=False, compare=False)

    @classmethod
    def from_probe(cls, data: dict[str, Any]) -> Target:
        libc, libc_version = [*(data.get("libc") or []), "", ""][:2]
        if libc != "glibc" or not re.match(r"^\d+\.\d+", libc_version or ""):
            raise WheelFetchError(f"the serving base image's C library is {libc or 'unknown'!r}: "
                                  "only glibc (manylinux) base images are supported")
        major, minor = (int(p) for p in libc_version.split(".")[:2])
        return cls(python=tuple(data["version"][:3]), implementation=str(data["implementation"]),
                   soabi=str(data.get("soabi") or ""), machine=str(data["machine"]),
                   glibc=(major, minor), markers=dict(data.get("markers") or {}))

    @property
    def short_impl(self) -> str:
        return {"cpython": "cp", "pypy": "pp"}.get(self.implementation, self.implementation[:2])

    @property
    def abi(self) -> str:
        parts = self.soabi.split("-")
        if self.implementation == "cpython" and len(parts) > 1:
            return "cp" + parts[1]  # "311", or "313t" for a free-threaded build
        if self.implementation == "pypy" and len(parts) > 1:
            return f"{parts[0]}_{parts[1]}".replace(".", "_")
        return f"{self.short_impl}{self.python[0]}{self.python[1]}"

    def platforms(self) -> list[str]:
        """manylinux tags from the image's glibc down (with their legacy aliases), then the
        plain ``linux_<arch>`` tag: what pip inside the image accepts."""
        arch, (major, minor) = self.machine, self.glibc
        lowest = 5 if arch in ("x86_64", "i686") else 17
        tags: list[str] = []
        for m in range(minor, lowest - 1, -1) if major == 2 else ():
            tags.append(f"manylinux_2_{m}_{arch}")
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(m)
            if legacy and (m == 17 or arch in ("x86_64", "i686")):
                tags.append(f"{legacy}_{arch}")
        return [*tags, f"linux_{arch}"]

    def pip_args(self) -> list[str]:
        args = ["--python-version", f"{self.python[0]}.{self.python[1]}",
                "--implementation", self.short_impl, "--abi", self.abi]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args

    def describe(self) -> str:
        name = {"cpython": "CPython", "pypy": "PyPy"}.get(self.implementation,
                                                           self.implementation)
        return (f"{name} {self.python[0]}.{self.python[1]} manylinux (glibc "
                f"{self.glibc[0]}.{self.glibc[1]}) {self.machine}")

    def key(self) -> str:
        return f"{self.short_impl}-{self.abi}-{'.'.join(map(str, self.python))}-" \
               f"glibc{self.glibc[0]}.{self.glibc[1]}-{self.machine}"

    def marker_environment(self) -> dict[str, str]:
        return {**self.markers, "extra": ""}


def probe_target(client: Any, image: str, timeout: int = 120,
                 labels: dict[str, str] | None = None) -> Target:
    """Run the interpreter of `image` once (no network, no capabilities, read-only, an
    unprivileged uid) and read what it is: the base image is the platform's own. `labels`:
    added to the probe container's (the installation it runs for)."""
    container = client.containers.create(
        image, entrypoint=["python3", "-c", PROBE], network_mode="none", user="65534:65534",
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        mem_limit="256m", pids_limit=64, labels={**(labels or {}), PROBE_LABEL: "1"})
    try:
        container.start()
        status = container.wait(timeout=timeout)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
        if status.get("StatusCode") != 0 or not out:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise WheelFetchError(f"could not probe the Python of {image}: exit "
                                  f"{status.get('StatusCode')} {err.strip()[-300:]}")
        return Target.from_probe(json.loads(out.splitlines()[-1]))
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


# --- Where packages come from, and which may come ----------------------------------------------
@functools.cache
def pip_config() -> dict[str, str]:
    """``pip config list`` of this host, read once per process (starting pip takes 1-3 s; a
    runtime, so an image builder, is made per reconcile). A change needs a worker restart."""
    config: dict[str, str] = {}
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                              capture_output=True, text=True, timeout=30, check=False)
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            config[key.split(".")[-1]] = value.strip().strip("'\"")
    except (OSError, subprocess.SubprocessError):
        pass
    return config


def _host_setting(env_names: Iterable[str], key: str) -> str:
    for name in env_names:
        if os.environ.get(name):
            return os.environ[name]
    return pip_config().get(key, "")


def default_ca_bundle() -> str | None:
    for candidate in (os.environ.get("MODELPORT_BUILD_CA_BUNDLE"), os.environ.get("PIP_CERT"),
                      os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"),
                      DEFAULT_CA_BUNDLE):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _has_wheels(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and any(Path(path).glob("*.whl"))


@dataclass(frozen=True)
class PackagePolicy:
    """Indexes and local wheel folders to fetch from, and the allowed packages (canonical
    names; empty: any). ``offline``: no index at all, only the local folders."""

    index_url: str | None = None  # None: pip's default (PyPI)
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    offline: bool = False
    allowed: frozenset[str] = frozenset()
    ca_bundle: str | None = None
    proxy: str | None = None
    cache_dir: str | None = None  # None: pip's own default cache; "" : no cache

    @classmethod
    def from_host(cls, *, offline: bool | None = None, ca_bundle: str | bool | None = True,
                  platform_wheelhouse: str | os.PathLike[str] | None = None) -> PackagePolicy:
        """This host's pip configuration: MODELPORT_PIP_* / PIP_* variables, then ``pip
        config`` (file:// indexes and find-links folders included: pip runs on this host)."""
        if offline is None:
            offline = os.environ.get("MODELPORT_PIP_OFFLINE", "0") == "1"
        index = _host_setting(("MODELPORT_PIP_INDEX_URL", "PIP_INDEX_URL"), "index-url")
        extra = _host_setting(("MODELPORT_PIP_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"),
                              "extra-index-url").split()
        links = _host_setting(("PIP_FIND_LINKS",), "find-links").split()
        if platform_wheelhouse and _has_wheels(platform_wheelhouse):
            links.append(str(platform_wheelhouse))
        cache = os.environ.get("PIP_CACHE_DIR") or pip_config().get("cache-dir") or None
        if (os.environ.get("PIP_NO_CACHE_DIR") or pip_config().get("no-cache-dir", "")) \
                .lower() in ("1", "true", "yes", "on"):
            cache = ""
        return cls(index_url=index or None, extra_index_urls=tuple(extra),
                   find_links=tuple(dict.fromkeys(links)), offline=offline,
                   ca_bundle=default_ca_bundle() if ca_bundle is True else (ca_bundle or None),
                   proxy=_host_setting(("PIP_PROXY",), "proxy") or None, cache_dir=cache)

    def configured(self, *, index_url: str = "", extra_index_urls: Iterable[str] = (),
                   allowed: Iterable[str] = (), wheel_folder: str = "",
                   platform_wheelhouse: str | os.PathLike[str] | None = None) -> PackagePolicy:
        """This (host) policy with the platform settings applied: a configured index replaces
        the host's indexes and local folders (except the platform's own wheelhouse); empty
        settings keep the host's. A configured wheel folder is searched in every case (offline
        mode included: it is local). Offline mode keeps using local folders only."""
        extra = tuple(u for u in extra_index_urls if u)
        allowed_names = frozenset(canonicalize_name(n) for n in allowed if n)
        folder = (wheel_folder,) if wheel_folder else ()
        if index_url and not self.offline:
            links = (str(platform_wheelhouse),) if platform_wheelhouse and \
                _has_wheels(platform_wheelhouse) else ()
            return dataclasses.replace(self, index_url=index_url, extra_index_urls=extra,
                                       find_links=tuple(dict.fromkeys(links + folder)),
                                       allowed=allowed_names)
        return dataclasses.replace(self, extra_index_urls=extra or self.extra_index_urls,
                                   find_links=tuple(dict.fromkeys(self.find_links + folder)),
                                   allowed=allowed_names)

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.offline:
            args.append("--no-index")
        else:
            if self.index_url:
                args += ["--index-url", self.index_url]
            for url in self.extra_index_urls:
                args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        if self.ca_bundle:
            args += ["--cert", self.ca_bundle]
        if self.proxy:
            args += ["--proxy", self.proxy]
        if self.cache_dir == "":
            args.append("--no-cache-dir")
        elif self.cache_dir:
            args += ["--cache-dir", self.cache_dir]
        return args

    def describe(self) -> str:
        parts = [] if self.offline else [self.index_url or f"{PYPI} (pip's default)",
                                         *self.extra_index_urls]
        parts += [f"wheels in {link}" for link in self.find_links]
        return ", ".join(parts) or "no package source (offline, no wheel folder)"

    def source_key(self) -> str:
        return json.dumps([self.offline, self.index_url, self.extra_index_urls, self.find_links])


# --- Wheel metadata and the allow-list ---------------------------------------------------------
@dataclass
class Wheelhouse:
    path: Path  # the folder holding exactly the wheels of this environment
    wheels: list[Path]
    # Packages only the model's requirements pull in (the allow-list applies to these).
    model_packages: list[str]


def wheel_requirements(wheel: Path) -> tuple[str, list[Requirement]]:
    """(canonical name, Requires-Dist) read from the wheel's METADATA; nothing is executed."""
    name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
    with zipfile.ZipFile(wheel) as archive:
        member = next((n for n in archive.namelist() if n.count("/") == 1
                       and n.endswith(".dist-info/METADATA")), None)
        if member is None:
            raise WheelFetchError(f"{wheel.name} has no .dist-info/METADATA: not a wheel")
        if archive.getinfo(member).file_size > MAX_METADATA_BYTES:
            raise WheelFetchError(f"{wheel.name}: its METADATA is over "
                                  f"{MAX_METADATA_BYTES // 1048576} MB")
        message = email.parser.Parser().parsestr(archive.read(member).decode("utf-8", "replace"))
    requires: list[Requirement] = []
    for line in message.get_all("Requires-Dist") or []:
        with contextlib.suppress(InvalidRequirement):
            requires.append(Requirement(line))
    return name, requires


def closure(roots: Iterable[Requirement], dists: dict[str, list[Requirement]],
            environment: dict[str, str]) -> dict[str, str]:
    """Every package `roots` need in `environment` (extras and markers evaluated), mapped to
    what asked for it first: a root requirement line, or ``"<parent> needs it"``."""
    def applies(req: Requirement, extras: frozenset[str]) -> bool:
        if req.marker is None:
            return True
        return any(req.marker.evaluate({**environment, "extra": e}) for e in ("", *extras))

    why: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[Requirement, str]] = [(r, f"required by {r}") for r in roots
                                            if applies(r, frozenset())]
    while queue:
        req, reason = queue.pop(0)
        name, extras = canonicalize_name(req.name), frozenset(canonicalize_name(e)
                                                              for e in req.extras)
        why.setdefault(name, reason)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for dep in dists.get(name, []):
            if applies(dep, extras):
                queue.append((dep, f"{name} needs it"))
    return why


def _requirements(lines: Iterable[str]) -> list[Requirement]:
    out: list[Requirement] = []
    for line in lines:
        with contextlib.suppress(InvalidRequirement):
            out.append(Requirement(line))
    return out


def check_allowed(model_packages: Iterable[str], allowed: frozenset[str],
                  why: dict[str, str] | None = None) -> None:
    if not allowed:
        return
    refused = sorted(set(model_packages) - allowed)
    if refused:
        detail = ", ".join(f"{n} ({(why or {}).get(n, 'required')})" for n in refused[:10])
        raise PackageNotAllowed(
            f"not in the platform's allowed packages: {detail}. A platform admin can add "
            "them (capacity page → platform settings, or PATCH /api/v1/platform/settings/).")


# --- Fetching ----------------------------------------------------------------------------------
_NO_WHEEL = re.compile(r"(?:No matching distribution found for|Could not find a version that "
                       r"satisfies the requirement) (\S+)")


def _clean_env() -> dict[str, str]:
    """This process's environment without pip's own variables and config files: the policy
    passes everything pip should use explicitly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run_pip(args: list[str], log: LogFn, timeout: int) -> tuple[int, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_clean_env(),
                            stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                lines.append(line)
                log(line)
        code = proc.wait()
    finally:
        timer.cancel()
    if code < 0:
        lines.append(f"ERROR: pip download was stopped after {timeout}s")
    return code, lines


def _fetch_error(lines: list[str], target: Target, policy: PackagePolicy) -> WheelFetchError:
    errors = [line for line in lines if line.startswith("ERROR:")] or lines[-8:]
    for line in errors:
        match = _NO_WHEEL.search(line)
        if match:
            token = match.group(1)
            try:
                name: str = canonicalize_name(Requirement(token).name)
            except InvalidRequirement:
                name = token
            return WheelFetchError(
                f"no wheel of {name} for {target.describe()} on {policy.describe()}: the "
                "platform installs wheels only and never builds a package from source (publish "
                "a wheel of it to the package index). pip said: " + " ".join(errors)[-800:])
    return WheelFetchError(f"fetching wheels from {policy.describe()} failed: "
                           + " ".join(errors)[-1200:])


def _dedupe_into_pool(wheels: list[Path], pool: Path) -> None:
    """Hard-link identical wheels of different environments to one copy on disk."""
    pool.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        shared = pool / wheel.name
        try:
            if not shared.exists():
                os.link(wheel, shared)
            elif shared.stat().st_size == wheel.stat().st_size and _sha256(shared) == \
                    _sha256(wheel):
                tmp = wheel.with_name(wheel.name + ".link")
                os.link(shared, tmp)
                os.replace(tmp, wheel)
        except OSError:
            continue  # no hard links on this file system: keep the copy


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(folder: Path) -> dict[str, list[Requirement]]:
    dists: dict[str, list[Requirement]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        try:
            name, requires = wheel_requirements(wheel)
        except (InvalidWheelFilename, zipfile.BadZipFile) as exc:
            raise WheelFetchError(f"{wheel.name} is not a usable wheel: {exc}") from None
        dists[name] = requires
    return dists


def fetch(*, platform_requirements: list[str], model_requirements: list[str], target: Target,
          policy: PackagePolicy, cache_root: str | os.PathLike[str], log: LogFn,
          timeout: int = 1800) -> Wheelhouse:
    """The wheelhouse of (platform + model) requirements for `target`: reused when this
    requirement set was fetched before from the same sources, else ``pip download`` it.

    Raises WheelFetchError (no wheel, conflict, index unreachable) or PackageNotAllowed."""
    root = Path(cache_root)
    key = hashlib.sha256(json.dumps([sorted(platform_requirements), sorted(model_requirements),
                                     target.key(), policy.source_key()]).encode()).hexdigest()
    folder = root / "sets" / key[:24]
    if not (folder / "manifest.json").is_file():
        log(f"fetching wheels for {target.describe()} from {policy.describe()}")
        _download(folder, platform_requirements, model_requirements, target, policy, log,
                  timeout)
    else:
        log(f"wheelhouse {folder.name} cached: {policy.describe()}")
    dists = _read(folder)
    env = target.marker_environment()
    platform_needs = closure(_requirements(platform_requirements), dists, env)
    model_needs = closure(_requirements(model_requirements), dists, env)
    model_only = {n: w for n, w in model_needs.items() if n not in platform_needs}
    check_allowed(model_only, policy.allowed, model_only)
    return Wheelhouse(path=folder, wheels=sorted(folder.glob("*.whl")),
                      model_packages=sorted(model_only))


def _download(folder: Path, platform_requirements: list[str], model_requirements: list[str],
              target: Target, policy: PackagePolicy, log: LogFn, timeout: int) -> None:
    root = folder.parent.parent
    (root / "sets").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        wheels_dir = work / "wheels"
        wheels_dir.mkdir()
        (work / "platform.txt").write_text("\n".join(platform_requirements) + "\n")
        (work / "model.txt").write_text("\n".join(model_requirements) + "\n")
        files = ["-r", str(work / "platform.txt"), "-r", str(work / "model.txt")]
        # pip evaluates dependency markers for this host's interpreter: when the image's differs
        # and needs more, those packages are asked for by name in another round.
        for _round in range(3):
            args = ["download", "--only-binary=:all:", "--dest", str(wheels_dir),
                    "--progress-bar", "off", "--no-input", "--timeout", "60",
                    *target.pip_args(), *policy.pip_args(), *files]
            code, lines = _run_pip(args, log, timeout)
            if code != 0:
                raise _fetch_error(lines, target, policy)
            missing = _missing(wheels_dir, platform_requirements + model_requirements, target)
            if not missing:
                break
            log(f"also fetching for {target.describe()}: {', '.join(missing)}")
            (work / f"more-{_round}.txt").write_text("\n".join(missing) + "\n")
            files += ["-r", str(work / f"more-{_round}.txt")]
        else:
            raise WheelFetchError(f"could not complete the wheelhouse for {target.describe()}")
        wheels = sorted(wheels_dir.glob("*.whl"))
        _dedupe_into_pool(wheels, root / "pool")
        (wheels_dir / "manifest.json").write_text(json.dumps(
            {"target": target.key(), "sources": policy.describe(),
             "wheels": [w.name for w in wheels]}, indent=1))
        try:
            os.rename(wheels_dir, folder)
        except OSError:
            if not (folder / "manifest.json").is_file():  # not a concurrent fetch that won
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _missing(wheels_dir: Path, lines: list[str], target: Target) -> list[str]:
    dists = _read(wheels_dir)
    env = target.marker_environment()
    wanted = closure(_requirements(lines), dists, env)
    known = [*_requirements(lines), *(dep for deps in dists.values() for dep in deps)]
    out: list[str] = []
    for name in sorted(set(wanted) - set(dists)):
        spec = next((dep for dep in known if canonicalize_name(dep.name) == name), None)
        out.append(f"{name}{spec.specifier}" if spec is not None else name)
    return out
