"""50 simultaneous deploy/scale admissions against a quota that fits only some, on PostgreSQL.

Each thread has its own database connection (Django's are per thread) and closes it at the end.
The quota row lock (``select_for_update``) must serialise them: admitted ones sum to at most the
limit, every refusal is a 409 ``quota_exceeded``, nothing deadlocks.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, connections

from compute import inventory
from core.errors import Conflict
from quotas import services
from quotas.models import Reservation
from teams.models import Team
from tests.factories import AdminFactory, MembershipFactory, TeamFactory, UserFactory
from tests.fixtures import bearer_client
from tests.quotas.conftest import set_limits

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 50


def _run_all(work) -> list:
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (deadlock?)"
    return results


def test_fifty_concurrent_deploys_and_scales_never_over_allocate():
    team = TeamFactory(slug="ml-search")
    set_limits(team, cpu="10", memory_mb=20480, deployments=100)
    # Ten deployments already exist with 0.5 CPU each; half the threads scale them, half deploy.
    for n in range(10):
        services.admit(team=team, owner=f"deployment:existing-{n}", cpu="0.5", memory_mb=512,
                       deployments=1)
    team_id = team.pk

    def work(i: int) -> str:
        team = Team.objects.get(pk=team_id)
        owner = f"deployment:existing-{i % 10}" if i % 2 else f"deployment:new-{i}"
        try:
            services.admit(team=team, owner=owner, cpu="0.75", memory_mb=512,
                           deployments=0 if i % 2 else 1)
        except Conflict as exc:
            assert exc.status_code == 409 and exc.code == "quota_exceeded", exc.message
            return "refused"
        return "admitted"

    results = _run_all(work)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    admitted = results.count("admitted")
    assert admitted + results.count("refused") == THREADS
    # 10 - 5 = 5 CPU free, 0.75 each: exactly 6 fit.
    assert admitted == 6
    assert connection.vendor == "postgresql"
    used = services.usage(team).used
    assert used.cpu == Decimal("5") + Decimal("0.75") * admitted <= Decimal("10")
    assert used.memory_mb == 512 * (10 + admitted)
    total = sum(r.cpu for r in Reservation.objects.filter(team=team))
    assert total == used.cpu


def test_fifty_concurrent_resource_requests_and_quota_reads_through_the_api():
    """The API under concurrency: filing requests while an admin approves them; no 5xx."""
    team = TeamFactory(slug="ml-search")
    admin = AdminFactory(username="root")
    users = []
    for n in range(5):
        user = UserFactory(username=f"eng{n}")
        MembershipFactory(team=team, user=user)
        users.append(user)
    clients = [bearer_client(u) for u in users]
    admin_client = bearer_client(admin)
    set_limits(team, cpu="1")

    def work(i: int) -> int:
        if i % 5 == 4:
            return admin_client.get("/api/v1/teams/ml-search/quota/").status_code
        response = clients[i % 5].post("/api/v1/resource-requests/", {
            "team": "ml-search", "cpu": 1, "justification": f"load test {i}"}, format="json")
        if response.status_code != 201:
            return response.status_code
        return admin_client.post(f"/api/v1/resource-requests/{response.json()['id']}/approve/",
                                 {"comment": "ok"}, format="json").status_code

    results = _run_all(work)
    assert all(r == 200 for r in results), results
    approved = sum(1 for i in range(THREADS) if i % 5 != 4)
    assert services.usage(Team.objects.get(slug="ml-search")).limits.cpu == 1 + approved


def test_concurrent_gpu_allocations_across_teams_never_share_a_device():
    """Threads of five teams race for eight devices; each device ends with one holder at most."""
    admin = AdminFactory(username="root")
    inventory.register_host(actor=admin, name="gpu-box", cpu=64, memory_mb=1024,
                           gpus=[(str(n), "A100-80GB") for n in range(8)])
    team_ids = []
    for n in range(5):
        team = TeamFactory(slug=f"team-{n}")
        set_limits(team, gpus=8)
        services.admit(team=team, owner=f"deployment:t{n}", gpus=8)
        team_ids.append(team.pk)

    def work(i: int) -> str:
        team = Team.objects.get(pk=team_ids[i % 5])
        try:
            inventory.allocate_gpus(team=team, count=1 + i % 2, owner=f"deployment:t{i % 5}/r{i}")
        except Conflict as exc:
            assert exc.status_code == 409, exc.message
            return "refused"
        return "allocated"

    results = _run_all(work)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    from compute.models import GpuAllocation

    active = list(GpuAllocation.objects.active().values_list("device_id", flat=True))
    assert len(active) == len(set(active)) <= 8
    assert results.count("allocated") >= 1


def test_concurrent_resizes_of_one_deployment_apply_totals_not_sums():
    """Reconcile retries and scale calls racing on one owner: the last totals win, never a sum."""
    team = TeamFactory(slug="ml-search")
    set_limits(team, cpu="8", memory_mb=8192, deployments=5)
    team_id = team.pk

    def work(i: int) -> str:
        team = Team.objects.get(pk=team_id)
        cpu = 1 + i % 10  # 9 and 10 do not fit in 8
        try:
            services.resize(team=team, owner="deployment:same", cpu=cpu, memory_mb=512,
                            deployments=1)
        except Conflict as exc:
            assert exc.status_code == 409 and exc.code == "quota_exceeded", exc.message
            return "refused"
        return f"set {cpu}"

    results = _run_all(work)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert results.count("refused") == 10
    reservation = Reservation.objects.get(owner="deployment:same")
    assert f"set {reservation.cpu.normalize()}" in results
    assert reservation.memory_mb == 512 and reservation.deployments == 1
    assert services.usage(team).used.cpu == reservation.cpu <= 8
