"""Several plain Docker hosts that are real hosts (``tests/netlab.py``, ``tests/hosts_lab.py``):
each host is a network namespace with its own Docker Engine and its own host worker, reaching
the platform only over a bridge. Replicas get their image from the registry and their model
over HTTP from the platform, bind their host's address, answer through the edge, ship their
prediction logs over the network; canary and rollback span hosts; a host whose link is cut is
lost, its replicas rescheduled, the gateway stops routing to it, and its stale containers go
when the link is back. Nothing is mocked.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from compute.models import Host
from deployments.models import Deployment, Replica
from monitoring.models import PredictionRecord
from teams.models import AuditEvent
from tests.deployments.conftest import COLUMNS, ROWS
from tests.factories import make_token
from tests.hosts_lab import LabPlatform, unique
from tests.lab_processes import Traffic

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True)]
BODY = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}


def api(platform: LabPlatform, user) -> requests.Session:
    _, secret = make_token(user, name=unique("lab"))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    return session


def predict(platform: LabPlatform, session: requests.Session, name: str,
            timeout: float = 30) -> requests.Response:
    return session.post(f"{platform.edge}/serve/{name}/invocations", json=BODY, timeout=timeout)


def hosts_up(platform: LabPlatform, *names: str) -> None:
    for name in names:
        platform.start_host_worker(name)
    platform.wait("the hosts to register", lambda: Host.objects.filter(
        name__in=names, state="alive").count() == len(names), timeout=90)
    for name in names:
        assert Host.objects.get(name=name).address == platform.lab.hosts[name].address


def healthy(platform: LabPlatform, name: str, timeout: float = 400) -> Deployment:
    def done():
        d = Deployment.objects.get(name=name)
        return d if d.status == "healthy" else None
    return platform.wait(f"{name} to be healthy", done, timeout=timeout)


def placed(name: str) -> dict[str, list[Replica]]:
    out: dict[str, list[Replica]] = {}
    for row in Replica.objects.filter(deployment__name=name).select_related("host"):
        out.setdefault(row.host.name if row.host else "", []).append(row)
    return out


def test_replicas_on_two_hosts_serve_through_the_edge_and_ship_logs(lab_platform, engineer, v1):
    platform = lab_platform
    hosts_up(platform, "lab-a", "lab-b")
    session = api(platform, engineer)
    name = unique("lab")
    created = session.post(f"{platform.web}/api/v1/deployments/", json={
        "name": name, "team": "ml-search", "model": "iris", "version": 1, "replicas": 2,
        "resources": {"cpu": 0.5, "memory_mb": 768}, "target": "lab-hosts"}, timeout=30)
    assert created.status_code == 202, created.text
    healthy(platform, name)

    spread = placed(name)
    assert sorted(spread) == ["lab-a", "lab-b"], spread
    for host, rows in spread.items():
        address = platform.lab.hosts[host].address
        assert all(r.url.startswith(f"http://{address}:") for r in rows), [r.url for r in rows]
        on_engine = platform.lab.clients[host].containers.list(
            filters={"label": f"modelport.deployment={name}"})
        assert [c.name for c in on_engine] == [r.runtime_id for r in rows]
        # The model came over HTTP into the host's own cache, not from the platform's disk.
        mounts = [m["Source"] for c in on_engine for m in c.attrs["Mounts"]]
        own = str(platform.lab.hosts[host].dir)
        assert mounts and all(m.startswith(own) for m in mounts), mounts

    answers = [predict(platform, session, name) for _ in range(20)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers[:3]]
    assert answers[0].json()["predictions"] == [0, 2]
    # Prediction logs reach the platform over the network from both hosts.
    def logged():
        replicas = Counter(PredictionRecord.objects.filter(
            deployment__name=name).values_list("replica", flat=True))
        return replicas if len(replicas) == 2 and sum(replicas.values()) >= 20 else None
    platform.wait("prediction logs from both hosts", logged, timeout=60)


def steady(platform: LabPlatform, session: requests.Session, name: str,
            clients: int = 4) -> Traffic:
    """Steady predictions through the edge (``tests/lab_processes.py``'s ``Traffic``)."""
    return Traffic(lambda s: predict(platform, s, name, timeout=60).status_code,
                   dict(session.headers), clients=clients)


def deploy_spread(platform: LabPlatform, session: requests.Session, replicas: int = 2) -> str:
    name = unique("lab")
    created = session.post(f"{platform.web}/api/v1/deployments/", json={
        "name": name, "team": "ml-search", "model": "iris", "version": 1,
        "replicas": replicas, "resources": {"cpu": 0.5, "memory_mb": 768},
        "target": "lab-hosts"}, timeout=30)
    assert created.status_code == 202, created.text
    healthy(platform, name)
    return name


def on_other_hosts(name: str, lost: str, count: int):
    def check():
        rows = [r for rows in placed(name).values() for r in rows]
        ready = [r for r in rows if r.ready and r.host and r.host.name != lost]
        return ready if len(ready) == count and all(r.host.name != lost for r in ready) else None
    return check


def test_a_host_cut_off_under_steady_traffic_is_lost_rescheduled_and_cleaned_when_back(
        lab_platform, engineer, v1):
    platform = lab_platform
    hosts_up(platform, "lab-a", "lab-b", "lab-c")
    session = api(platform, engineer)
    name = deploy_spread(platform, session)
    spread = placed(name)
    [victim, *_] = sorted(spread)
    [lost_row] = spread[victim]
    traffic = steady(platform, session, name)
    time.sleep(3)

    cut = time.monotonic()
    platform.lab.hosts[victim].link(False)
    try:
        _lose_and_come_back(platform, session, name, victim, lost_row, traffic, cut)
    finally:
        traffic.stop()
        platform.lab.hosts[victim].link(True)  # the session's lab goes on with every host


def _lose_and_come_back(platform, session, name, victim, lost_row, traffic, cut) -> None:
    platform.wait(f"{victim} to be lost", lambda: Host.objects.get(name=victim).state == "lost",
                  timeout=60)
    assert AuditEvent.objects.filter(action="host.lost", object_repr=victim).exists()
    platform.wait("two ready replicas on the other hosts", on_other_hosts(name, victim, 2),
                  timeout=300)
    recovered = time.monotonic() - cut
    time.sleep(3)
    traffic.stop()
    failed = traffic.failed(since=cut)
    answered = len(traffic.results)
    print(f"host cut: {answered} requests, {len(failed)} failed "
          f"({Counter(f[2] for f in failed)}), recovered in {recovered:.1f} s")
    assert answered > 50
    # Only requests in flight at the cut may fail: each client has one request at a time.
    assert len(failed) <= len(traffic.threads), failed
    assert AuditEvent.objects.filter(action="deployment.replica_rescheduled",
                                     object_repr=name).exists()

    # The link comes back: the host is alive again and its worker removes the stale container.
    stale = platform.lab.clients[victim]
    platform.lab.hosts[victim].link(True)
    platform.wait(f"{victim} to be alive", lambda: Host.objects.get(name=victim).state == "alive",
                  timeout=60)
    platform.wait("the stale container to be removed", lambda: not stale.containers.list(
        all=True, filters={"name": lost_row.runtime_id}), timeout=90)
    assert predict(platform, session, name).status_code == 200


def test_a_host_whose_engine_dies_is_lost_and_its_replica_moves(lab_platform, engineer, v1):
    platform = lab_platform
    hosts_up(platform, "lab-a", "lab-b", "lab-c")
    session = api(platform, engineer)
    name = deploy_spread(platform, session, replicas=1)
    [victim] = placed(name)
    platform.lab.hosts[victim].kill_docker()
    try:
        platform.wait(f"{victim} to be lost",
                      lambda: Host.objects.get(name=victim).state == "lost", timeout=60)
        platform.wait("the replica on another host", on_other_hosts(name, victim, 1),
                      timeout=300)
        assert predict(platform, session, name).status_code == 200
    finally:
        platform.lab.clients[victim] = platform.lab.hosts[victim].start_docker()


def test_canary_and_rollback_span_hosts_without_a_failed_request(lab_platform, engineer, v1, v2):
    platform = lab_platform
    hosts_up(platform, "lab-a", "lab-b")
    session = api(platform, engineer)
    name = deploy_spread(platform, session)
    traffic = steady(platform, session, name, clients=2)
    revisions: Counter[str] = Counter()
    try:
        response = session.patch(f"{platform.web}/api/v1/deployments/{name}/", json={
            "version": 2, "strategy": {"type": "canary", "steps": [50, 100], "interval_s": 3}},
            timeout=30)
        assert response.status_code == 202, response.text

        def canary_on_both_hosts():
            rows = Replica.objects.filter(deployment__name=name, revision=2, ready=True)
            return {r.host.name for r in rows.select_related("host")} == {"lab-a", "lab-b"}
        platform.wait("revision 2 ready on both hosts", canary_on_both_hosts, timeout=300)
        platform.wait("the canary's first step", lambda: any(
            t["revision"] == 2 and 0 < t["percent"] < 100
            for t in Deployment.objects.get(name=name).traffic), timeout=120)
        time.sleep(1.5)  # the edge re-reads a changed route within a second
        for _ in range(40):
            revisions[predict(platform, session, name).headers.get("x-modelport-revision", "")] \
                += 1
        platform.wait("the canary to finish", lambda: Deployment.objects.filter(
            name=name, status="healthy", revision=2, traffic=[{"revision": 2, "percent": 100}])
            .exists(), timeout=300)
        assert Deployment.objects.get(name=name).events.filter(
            kind="traffic", message__startswith="Canary: 50%").exists()

        response = session.post(f"{platform.web}/api/v1/deployments/{name}/rollback/", json={},
                                timeout=30)
        assert response.status_code == 202 and response.json()["revision"] == 3, response.text
        platform.wait("the rollback to finish", lambda: Deployment.objects.filter(
            name=name, status="healthy", revision=3, traffic=[{"revision": 3, "percent": 100}])
            .exists(), timeout=300)
        assert sorted(placed(name)) == ["lab-a", "lab-b"]
        assert {r.revision for rows in placed(name).values() for r in rows} == {3}
        time.sleep(2)
    finally:
        traffic.stop()
    assert "2" in revisions, revisions
    assert len(traffic.results) > 30
    assert traffic.failed() == [], Counter(f[2] for f in traffic.failed())
