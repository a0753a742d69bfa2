"""Test hosts that are real hosts: network namespaces on a bridge, each with its own Docker Engine.

The layout ``NetLab`` builds (all of it made and removed by the test; nothing leaves the machine):

- a **bridge namespace** (``<lab>br``) holding the bridge ``br0``: the "switch";
- the **platform's side**: a veth pair from the root namespace (where the test's web, edge,
  PostgreSQL and Redis run) into the bridge, with the lab's first address. PostgreSQL and Redis
  listen on 127.0.0.1 only, so a small TCP relay listens for them on the lab address (same port
  numbers); the web and the edge the tests start bind the lab address themselves;
- a **host namespace** per test host, with ``eth0`` (a veth into the bridge, the host's
  address), its own ``lo``, and no route anywhere else: what it reaches is the bridge;
- per host, **its own dockerd** (own ``--data-root``, ``--exec-root``, socket, pidfile; no bridge
  network, no iptables), started with ``nsenter --net=…`` because ``ip netns exec`` remounts
  /sys, which dockerd does not survive. Host workers run the same way.

Addresses: one /28 out of 198.51.100.0/24 (RFC 5737 documentation range: never routed), chosen
so it overlaps nothing on the machine; .240/28 is left to other tests. Cutting a host's link
is ``ip link set <its bridge port> down`` in the bridge namespace.

Labs are recorded in ``/tmp/modelport-netlab/<lab>/`` with the owner's pid; ``python -m
tests.netlab sweep`` (run by ``.ci/services.sh``'s stop) removes those whose owner is gone, so a
killed test run leaves no namespace, dockerd or mount behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_ROOT = Path("/tmp/modelport-netlab")
DOC_RANGE = ipaddress.ip_network("198.51.100.0/24")
RESERVED_BLOCKS = {0, 15}
CERTS_D = Path("/etc/docker/certs.d")  # .0/28 left alone; .240/28 is the edge ejection test's


class LabUnavailable(RuntimeError):
    """Namespaces, veth or dockerd cannot be used here (not root, no iproute2, a sandbox)."""


def _run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def _addresses_in_use() -> list[ipaddress.IPv4Interface]:
    out = _run("ip", "-4", "-o", "addr", "show", check=False).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]))
    return found


def _block_file(block: ipaddress.IPv4Network) -> Path:
    return STATE_ROOT / "blocks" / str(block.network_address)


def _free_block() -> ipaddress.IPv4Network:
    """A /28 nothing on the machine uses, reserved by creating its file (O_EXCL): two labs
    starting at once never pick the same block. A reservation whose owner is gone is taken."""
    used = _addresses_in_use()
    blocks = [b for i, b in enumerate(DOC_RANGE.subnets(new_prefix=28)) if i not in RESERVED_BLOCKS]
    random.shuffle(blocks)
    (STATE_ROOT / "blocks").mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if any(a.network.overlaps(block) for a in used):
            continue
        reservation = _block_file(block)
        with contextlib.suppress(OSError, ValueError):
            if not _alive(int(reservation.read_text())):
                reservation.unlink()
        try:
            fd = os.open(reservation, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return block
    raise LabUnavailable("every /28 of 198.51.100.0/24 is in use on this machine")


def _release_block(block: ipaddress.IPv4Network) -> None:
    with contextlib.suppress(OSError):
        _block_file(block).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Relay:
    """TCP relay ``listen`` → ``upstream``: PostgreSQL and Redis listen on 127.0.0.1 only; the
    hosts reach them at the lab address through this (one thread, a selector)."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server, selectors.EVENT_READ, None)
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"netlab-relay-{listen[1]}")
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._pump(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self.server.accept()
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                return
            for a, b in ((client, upstream), (upstream, client)):
                a.setblocking(False)
                self.pairs[a] = b
                self.selector.register(a, selectors.EVENT_READ, "pump")

    def _pump(self, sock: socket.socket) -> None:
        peer = self.pairs.get(sock)
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and peer is not None:
            try:  # bounded: a peer that stopped reading (a cut host) must not stall the rest
                peer.settimeout(2)
                peer.sendall(data)
                peer.setblocking(False)
                return
            except OSError:
                pass
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self.pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self.pairs.pop(s, None)
            with contextlib.suppress(Exception):
                self.selector.unregister(s)
            s.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=2)
        for s in list(self.pairs):
            self._close(s)
        self.selector.close()
        self.server.close()


@dataclass
class LabHost:
    """One test host: a namespace, its address, its dockerd, the processes run in it."""

    lab: NetLab
    name: str
    netns: str
    address: str
    port: str  # the bridge-side end of its veth (``ip link set … down`` cuts the host off)
    dir: Path
    dockerd: subprocess.Popen | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def popen(self, cmd: list[str], *, env: dict[str, str] | None = None,
              log: Path | None = None, cwd: str | Path | None = None) -> subprocess.Popen:
        """Start ``cmd`` inside this host's network namespace (its own process group)."""
        out = (log or self.dir / "process.log").open("ab")
        process = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{self.netns}", *cmd],
                                   env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        out.close()
        self.processes.append(process)
        return process

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run("nsenter", f"--net=/var/run/netns/{self.netns}", *cmd, timeout=timeout)

    def start_docker(self, *, insecure_registries: tuple[str, ...] = ()) -> Any:
        """Start this host's own dockerd and return a docker SDK client for it."""
        import docker

        config = self.dir / "daemon.json"  # never the machine's /etc/docker/daemon.json
        config.write_text("{}\n")
        args = ["dockerd", "--config-file", str(config), "--data-root", str(self.dir / "data"),
                "--exec-root", str(self.dir / "x"), "-H", self.docker_host,
                "--pidfile", str(self.dir / "dockerd.pid"), "--bridge=none",
                "--iptables=false", "--ip-masq=false", "--log-level=warn"]
        for registry in insecure_registries:
            args += ["--insecure-registry", registry]
        self.dockerd = self.popen(args, log=self.dir / "dockerd.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=self.docker_host, timeout=120)
                client.ping()
                return client
            except Exception:  # not up yet
                if self.dockerd.poll() is not None or time.monotonic() > deadline:
                    raise LabUnavailable(
                        f"dockerd of {self.name} did not start: "
                        f"{(self.dir / 'dockerd.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def kill_docker(self) -> None:
        """SIGKILL this host's dockerd (its engine stops answering; containerd and the
        containers' shims may run on, as after an engine crash)."""
        if self.dockerd is not None and self.dockerd.poll() is None:
            os.killpg(self.dockerd.pid, signal.SIGKILL)
            self.dockerd.wait(timeout=30)

    def link(self, up: bool) -> None:
        """Cut (or restore) this host's link to the bridge."""
        self.lab.bridge_run("ip", "link", "set", self.port, "up" if up else "down")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None and process is not self.dockerd:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            if process is self.dockerd:
                continue
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _stop_dockerd(self.dir, self.dockerd)


def _runs_from(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` is one of this lab directory's (its command line names it)."""
    try:
        return str(directory).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_dockerd(directory: Path, process: subprocess.Popen | None) -> None:
    """Stop a lab dockerd (it stops its containers), then whatever of its containerd is left,
    then unmount what it left under its directory."""
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "dockerd.pid").read_text())
    if process is not None and process.poll() is None:
        pid = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    elif pid is not None and _runs_from(pid, directory):  # not a reused pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.2)
    # containerd and shims started by this dockerd: matched by their exec-root in the cmdline
    marker = str(directory / "x")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(directory))), reverse=True):
            _run("umount", "-l", mount, check=False)


class NetLab:
    """A bridge, the platform's side on it, and test hosts (see the module docstring)."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"):
            raise LabUnavailable("needs root, iproute2 and nsenter to make network namespaces")
        self.id = f"{random.getrandbits(20):05x}"
        self.name = f"mpl{self.id}"
        self.dir = STATE_ROOT / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.block = _free_block()
        hosts = list(self.block.hosts())
        self.platform_address = str(hosts[0])
        self._free = [str(a) for a in hosts[1:]]
        self.bridge_ns = f"{self.name}br"
        self.hosts: dict[str, LabHost] = {}
        self.relays: list[Relay] = []
        self.registry: subprocess.Popen | None = None
        self.registry_address = ""
        self._record()
        try:
            self._build_bridge()
        except Exception as exc:
            self.close()
            raise LabUnavailable(f"cannot build the test network: {exc}") from exc

    def _record(self) -> None:
        (self.dir / "lab.json").write_text(json.dumps({
            "owner": os.getpid(), "name": self.name, "block": str(self.block)}))

    def bridge_run(self, *cmd: str) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", self.bridge_ns, *cmd)

    def _build_bridge(self) -> None:
        _run("ip", "netns", "add", self.bridge_ns)
        self.bridge_run("ip", "link", "add", "br0", "type", "bridge")
        self.bridge_run("ip", "link", "set", "br0", "up")
        self.bridge_run("ip", "link", "set", "lo", "up")
        root_end = f"{self.name}p"
        _run("ip", "link", "add", root_end, "type", "veth", "peer", "name", "p0", "netns",
             self.bridge_ns)
        self.bridge_run("ip", "link", "set", "p0", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.platform_address}/{self.block.prefixlen}", "dev",
             root_end)
        _run("ip", "link", "set", root_end, "up")

    def relay(self, port: int, upstream_host: str = "127.0.0.1") -> None:
        """Make a loopback-only service (PostgreSQL, Redis) reachable at the lab address."""
        self.relays.append(Relay((self.platform_address, port), (upstream_host, port)))

    def start_registry(self, port: int) -> str:
        """Debian's ``docker-registry`` (Docker Distribution, registry:2) on the lab address
        with TLS from a CA made here: the engines trust it through
        ``/etc/docker/certs.d/<address:port>/ca.crt`` (removed again at close), as real hosts
        trust a company registry. Returns ``address:port``."""
        where = f"{self.platform_address}:{port}"
        reg = self.dir / "registry"
        reg.mkdir(exist_ok=True)
        ssl = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2")
        _run(*ssl, "-keyout", str(reg / "ca.key"), "-out", str(reg / "ca.crt"),
             "-subj", "/CN=modelport test registry CA")
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(reg / "tls.key"),
             "-out", str(reg / "tls.csr"), "-subj", f"/CN={self.platform_address}")
        (reg / "san.ext").write_text(f"subjectAltName=IP:{self.platform_address}\n")
        _run("openssl", "x509", "-req", "-in", str(reg / "tls.csr"), "-CA", str(reg / "ca.crt"),
             "-CAkey", str(reg / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(reg / "san.ext"), "-out", str(reg / "tls.crt"))
        (reg / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {reg / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {where}\n  tls:\n    certificate: {reg / 'tls.crt'}\n"
            f"    key: {reg / 'tls.key'}\n")
        trust = CERTS_D / where
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(reg / "ca.crt", trust / "ca.crt")
        (self.dir / "certs.d").write_text(str(trust))
        log = (reg / "registry.log").open("ab")
        self.registry = subprocess.Popen(["docker-registry", "serve", str(reg / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.platform_address, port), timeout=1):
                break
            if self.registry.poll() is not None or time.monotonic() > deadline:
                raise LabUnavailable("docker-registry did not start: "
                                     f"{(reg / 'registry.log').read_text()[-1500:]}")
            time.sleep(0.1)
        self.registry_address = where
        return where

    def add_host(self, name: str) -> LabHost:
        if not self._free:
            raise LabUnavailable("no address left in the lab's /28")
        address = self._free.pop(0)
        index = len(self.hosts) + 1
        netns = f"{self.name}h{index}"
        port = f"h{index}"
        host_dir = self.dir / f"h{index}"
        host_dir.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", f"{self.name}t{index}", "type", "veth", "peer", "name", port,
             "netns", self.bridge_ns)
        _run("ip", "link", "set", f"{self.name}t{index}", "netns", netns)
        ns = ("ip", "-n", netns)
        _run(*ns, "link", "set", f"{self.name}t{index}", "name", "eth0")
        _run(*ns, "addr", "add", f"{address}/{self.block.prefixlen}", "dev", "eth0")
        _run(*ns, "link", "set", "eth0", "up")
        _run(*ns, "link", "set", "lo", "up")
        self.bridge_run("ip", "link", "set", port, "master", "br0", "up")
        host = LabHost(lab=self, name=name, netns=netns, address=address, port=port,
                       dir=host_dir)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.stop()
        for relay in self.relays:
            with contextlib.suppress(Exception):
                relay.close()
        if self.registry is not None and self.registry.poll() is None:
            self.registry.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.registry.wait(timeout=20)
        _remove_lab(self.dir, self.name)
        _release_block(self.block)


def _remove_lab(directory: Path, name: str) -> None:
    with contextlib.suppress(OSError):
        trust = Path((directory / "certs.d").read_text())
        if trust.parent == CERTS_D:
            shutil.rmtree(trust, ignore_errors=True)
    for proc in Path("/proc").iterdir():  # the registry of a killed run: its config is here
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(directory).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
    for host_dir in sorted(directory.glob("h*")):
        if host_dir.is_dir():
            _stop_dockerd(host_dir, None)
    _run("ip", "link", "del", f"{name}p", check=False)
    for ns in _run("ip", "netns", "list", check=False).stdout.split("\n"):
        ns = ns.split(" ")[0]
        if ns.startswith(name):
            _run("ip", "netns", "del", ns, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def sweep() -> list[str]:
    """Remove labs whose owning process is gone (a killed test run)."""
    removed = []
    for lab in sorted(STATE_ROOT.glob("mpl*")) if STATE_ROOT.exists() else []:
        block = None
        try:
            record = json.loads((lab / "lab.json").read_text())
            block = ipaddress.ip_network(record["block"])
            if _alive(int(record["owner"])):
                continue  # still running
        except (OSError, ValueError, KeyError):
            pass
        _remove_lab(lab, lab.name)
        if block is not None:
            _release_block(block)
        removed.append(lab.name)
    return removed


if __name__ == "__main__":
    if sys.argv[1:] == ["sweep"]:
        for lab_name in sweep():
            print(f"removed test network {lab_name}")
    else:
        sys.exit("usage: python -m tests.netlab sweep")
