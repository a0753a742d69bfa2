"""Server time of every portal page with realistic data (target: < 200 ms each).

Usage: DATABASE_URL=postgres://user@127.0.0.1:5432/postgres .venv/bin/python bench/pages.py
It creates (or reuses) a scratch database ``modelport_bench_pages`` on that server and seeds it
once with bulk inserts: 10 teams, 1,000 models with 5 versions each, 100 deployments with 3
revisions, 2 replicas and 30 events each, 24 hours of per-minute monitoring rollups for every
deployment (144,000 rows), alert rules (10 firing), 30 resource requests and 20,000 audit events.
Then it renders every page through Django's full stack in process (test client: server time, no
network) as a maintainer of three teams and as a platform admin, and prints p50/p95 and the
number of SQL queries per page, flagging pages over the target. ``--reseed`` starts over.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from scratch import percentile, setup_django

TARGET_MS = 200.0
TEAMS = 10
SEED_MARK = "bench-pages-v1"


def seed(n_models: int, n_deployments: int, versions: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from deployments.models import Deployment, DeploymentEvent, Replica, Revision
    from monitoring.models import LATENCY_COLUMNS, Alert, AlertRule, MinuteRollup
    from quotas import services as quota_services
    from quotas.models import Reservation, ResourceRequest
    from registry.models import ModelAlias, ModelVersion, RegisteredModel
    from teams.models import AuditEvent, Membership, Team

    rng = random.Random(0)
    started = time.perf_counter()
    user_model = get_user_model()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE teams_auditevent")
        Deployment.objects.all().delete()
        RegisteredModel.objects.all().delete()
        ResourceRequest.objects.all().delete()
        Reservation.objects.all().delete()
        Team.objects.all().delete()
        user_model.objects.filter(username__startswith="bench").delete()
        admin = user_model.objects.create_superuser("bench-admin", "admin@example.com", "x")
        user = user_model.objects.create_user("bench-user", "user@example.com", "x")
        colleagues = [user_model.objects.create_user(f"bench-{i}", f"b{i}@example.com", "x")
                      for i in range(20)]
        teams = Team.objects.bulk_create([Team(slug=f"team-{i:02d}", name=f"Team {i}")
                                          for i in range(TEAMS)])
        Membership.objects.bulk_create(
            [Membership(team=t, user=user, role="maintainer") for t in teams[:3]]
            + [Membership(team=t, user=c, role=rng.choice(["viewer", "engineer", "maintainer"]))
               for t in teams for c in rng.sample(colleagues, 5)])
        for team in teams:
            quota_services.get_quota(team)
        kinds = ["fraud", "churn", "ranking", "forecast", "vision", "nlp", "pricing"]
        models = RegisteredModel.objects.bulk_create([RegisteredModel(
            name=f"{kinds[i % 7]}-model-{i:04d}", team=teams[i % TEAMS], created_by=user,
            description=(desc := f"{kinds[i % 7].title()} model {i}, gradient boosting on "
                                 f"{rng.randint(10, 90)} features"),
            search_text=RegisteredModel.compute_search_text(f"{kinds[i % 7]}-model-{i:04d}", desc),
            tags=["tabular", kinds[i % 7]], card=f"# Model {i}\n\nTrained weekly.")
            for i in range(n_models)], batch_size=2000)
        example = {"dataframe_split": {"columns": [f"f{i}" for i in range(8)],
                                       "data": [[round(rng.random(), 3) for _ in range(8)]]}}
        all_versions = ModelVersion.objects.bulk_create([ModelVersion(
            model=m, version=n, status="ready", source_format="mlflow", flavor="sklearn",
            input_example=example, metrics={"accuracy": round(0.8 + n / 100, 3), "f1": 0.7},
            params={"max_depth": 6}, lineage={"git_commit": f"{n:040x}"}, created_by=user,
            signature={"inputs": [{"name": f"f{i}", "type": "double"} for i in range(8)]})
            for m in models for n in range(1, versions + 1)], batch_size=5000)
        latest = {v.model_id: v for v in all_versions if v.version == versions}
        ModelAlias.objects.bulk_create([ModelAlias(model=m, name="production",
                                                   version=latest[m.pk]) for m in models[::3]])
        statuses = ["healthy"] * 8 + ["degraded", "failed", "starting", "stopped"]
        deployments = Deployment.objects.bulk_create([Deployment(
            name=f"{models[i * 7].name}-prod", team=models[i * 7].team, model=models[i * 7],
            version=latest[models[i * 7].pk], replicas=2, cpu=Decimal("0.5"), memory_mb=512,
            revision=3, status=(status := statuses[i % len(statuses)]),
            stopped=status == "stopped", progress=100,
            traffic=[{"revision": 3, "percent": 90}, {"revision": 2, "percent": 10}],
            strategy={"type": "canary"}, created_by=user) for i in range(n_deployments)])
        version_of = {(v.model_id, v.version): v for v in all_versions}
        Revision.objects.bulk_create([Revision(
            deployment=d, number=n, model_version=version_of[(d.model_id, versions - 3 + n)],
            reason="bench", state="active" if n == 3 else "superseded", spec={"replicas": 2})
            for d in deployments for n in (1, 2, 3)])
        Replica.objects.bulk_create([Replica(
            deployment=d, runtime_id=f"{d.name}-r3-{k}", revision=3, index=k, status="running",
            ready=d.status == "healthy" or k == 0, url=f"http://127.0.0.1:{20000 + i * 2 + k}")
            for i, d in enumerate(deployments) for k in range(2)])
        DeploymentEvent.objects.bulk_create([DeploymentEvent(
            deployment=d, revision=3, kind=rng.choice(["info", "traffic", "warning"]),
            message=f"event {k}") for d in deployments for k in range(30)])
        Reservation.objects.bulk_create([Reservation(
            team=d.team, owner=d.owner, state="running", cpu=Decimal("1.0"), memory_mb=1024,
            deployments=1) for d in deployments])
        rules = AlertRule.objects.bulk_create([AlertRule(
            deployment=d, name="error rate", metric="error_rate", threshold=5.0)
            for d in deployments])
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        Alert.objects.bulk_create([Alert(rule=r, state="firing" if i % 10 == 0 else "resolved",
                                         value=7.5, message="error rate 7.5 > 5",
                                         started_at=now - timedelta(minutes=i),
                                         resolved_at=None if i % 10 == 0 else now)
                                   for i, r in enumerate(rules)])
        ResourceRequest.objects.bulk_create([ResourceRequest(
            team=teams[i % TEAMS], requested_by=user, cpu=Decimal(4), memory_mb=8192,
            gpus=i % 2, justification="More capacity for the weekly retrain",
            status="pending" if i < 15 else "denied", comment="" if i < 15 else "not now")
            for i in range(30)])
        events = []
        actions = ["model.created", "version.registered", "deployment.created", "alias.moved",
                   "token.created", "quota.updated"]
        for i in range(20_000):
            team = teams[i % TEAMS]
            events.append(AuditEvent(
                created_at=now - timedelta(minutes=i), actor=user, actor_username=user.username,
                action=actions[i % len(actions)], object_type="registry.registeredmodel",
                object_id=str(i), object_repr=f"object {i}", team=team, team_slug=team.slug,
                before={"n": i}, after={"n": i + 1}, source="api"))
        AuditEvent.objects.bulk_create(events, batch_size=5000)
        AuditEvent.objects.create(action=SEED_MARK, object_type="bench", actor=admin)
    # Monitoring: 24 h of minute rollups per deployment, outside the transaction (big).
    buckets = len(LATENCY_COLUMNS)
    batch: list = []
    for d in deployments:
        for m in range(24 * 60):
            count = rng.randint(20, 60)
            row = MinuteRollup(deployment=d, revision=3, minute=now - timedelta(minutes=m),
                               count=count, errors=rng.randint(0, 2),
                               latency_sum=count * 12.0,
                               predictions={"classes": {"0": count // 2, "1": count - count // 2}})
            row.latency_buckets = [0.0] * 3 + [float(count)] + [0.0] * (buckets - 4)
            batch.append(row)
        if len(batch) >= 20_000:
            MinuteRollup.objects.bulk_create(batch, batch_size=5000)
            batch = []
    MinuteRollup.objects.bulk_create(batch, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"seeded {n_models} models / {n_models * versions} versions, {n_deployments} "
          f"deployments, {n_deployments * 24 * 60} rollups, 20,000 audit events in "
          f"{time.perf_counter() - started:.0f} s")


def pages() -> list[tuple[str, str, str]]:
    """(label, persona, path) for every portal page, with real names from the seeded data."""
    from deployments.models import Deployment
    from registry.models import RegisteredModel
    from teams.models import Team

    d = Deployment.objects.filter(team__slug="team-00").order_by("name").first()
    m = d.model
    team = Team.objects.get(slug="team-00")
    other = RegisteredModel.objects.filter(team=team).exclude(pk=m.pk).order_by("name").first()
    user_pages = [
        ("dashboard", "/"),
        ("dashboard live fragment", "/dashboard/live/"),
        ("search 'fraud'", "/search/?q=fraud"),
        ("search 'model-04'", "/search/?q=model-04"),
        ("model list", "/models/"),
        ("model list, search", "/models/?search=churn"),
        ("model list, page 5", "/models/?page=5"),
        ("model detail", f"/models/{m.name}/"),
        ("model detail (undeployed)", f"/models/{other.name}/"),
        ("version detail", f"/models/{m.name}/versions/5/"),
        ("deployment list", "/deployments/"),
        ("deployment detail", f"/deployments/{d.name}/"),
        ("deployment status fragment", f"/deployments/{d.name}/status/"),
        ("monitoring index", "/monitoring/"),
        ("monitoring deployment (24 h)", f"/monitoring/deployments/{d.name}/"),
        ("monitoring model (24 h)", f"/monitoring/models/{m.name}/"),
        ("teams", "/teams/"),
        ("team detail", f"/teams/{team.slug}/"),
        ("add-member search 'person-1'", f"/teams/{team.slug}/people/?username=person-1"),
        ("team quota", f"/teams/{team.slug}/quota/"),
        ("resource requests", "/resource-requests/"),
        ("capacity", "/capacity/"),
        ("audit log", "/audit/"),
        ("tokens", "/tokens/"),
        ("notifications", "/notifications/"),
    ]
    admin_pages = [
        ("dashboard", "/"),
        ("search 'fraud'", "/search/?q=fraud"),
        ("model list", "/models/"),
        ("deployment list", "/deployments/"),
        ("monitoring index", "/monitoring/"),
        ("resource request queue", "/resource-requests/"),
        ("audit log", "/audit/"),
        ("users", "/users/"),
        ("users, search", "/users/?q=person-1"),
        ("users, page 20", "/users/?page=20"),
        ("add-member search 'person-1'", f"/teams/{team.slug}/people/?username=person-1"),
        ("admin: models", "/admin/registry/registeredmodel/"),
        ("admin: versions", "/admin/registry/modelversion/"),
        ("admin: deployments", "/admin/deployments/deployment/"),
        ("admin: deployment events", "/admin/deployments/deploymentevent/"),
        ("admin: teams", "/admin/teams/team/"),
        ("admin: tokens", "/admin/teams/apitoken/"),
        ("admin: audit events", "/admin/teams/auditevent/"),
        ("admin: resource requests", "/admin/quotas/resourcerequest/"),
        ("admin: team quotas", "/admin/quotas/teamquota/"),
        ("admin: alerts", "/admin/monitoring/alert/"),
        ("admin: deployment change", f"/admin/deployments/deployment/{d.pk}/change/"),
    ]
    return ([(label, "maintainer", path) for label, path in user_pages]
            + [(label, "admin", path) for label, path in admin_pages])


PEOPLE = 2000


def seed_people(count: int) -> None:
    """Accounts nobody's team has yet, for the Users page and the add-member search (added to
    an existing seed without starting over)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    users = get_user_model().objects
    have = users.filter(username__startswith="person-").count()
    if have >= count:
        return
    password = make_password(None)  # unusable: invited, as the Users page makes them
    users.bulk_create([users.model(username=f"person-{i:04d}", email=f"p{i}@corp.example",
                                   first_name=f"First{i}", last_name=f"Last{i}",
                                   password=password) for i in range(have, count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", help="only pages whose label contains this")
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    setup_django("modelport_bench_pages", env={"DJANGO_DEBUG": "0"})
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from teams.models import AuditEvent

    if args.reseed or not AuditEvent.objects.filter(action=SEED_MARK).exists():
        seed(args.models, args.deployments, args.versions)
    seed_people(PEOPLE)
    users = get_user_model().objects
    clients = {}
    for persona, username in (("maintainer", "bench-user"), ("admin", "bench-admin")):
        clients[persona] = Client()
        clients[persona].force_login(users.get(username=username))
    print(f"\n{'page':<32} {'as':<10} {'p50 ms':>7} {'p95 ms':>7} {'cpu ms':>7} {'queries':>8}  "
          f"(n={args.repeat}, target < {TARGET_MS:.0f} ms; cpu: this process's p50)")
    slow = []
    for label, persona, path in pages():
        if args.only and args.only not in label:
            continue
        client = clients[persona]
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        queries: list[str] = []

        def count(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        # An execute wrapper, not CaptureQueriesContext: request_started resets queries_log.
        with connection.execute_wrapper(count):
            client.get(path)
        timings, cpu = [], []
        for _ in range(args.repeat):
            started, cpu_started = time.perf_counter(), time.process_time()
            client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
        p50, p95 = statistics.median(timings), percentile(timings, 0.95)
        flag = "  SLOW" if p95 > TARGET_MS else ""
        if flag:
            slow.append(label)
        print(f"{label:<32} {persona:<10} {p50:7.1f} {p95:7.1f} {statistics.median(cpu):7.1f} "
              f"{len(queries):8d}{flag}")
    print(f"\n{len(slow)} page(s) over {TARGET_MS:.0f} ms p95" + (f": {', '.join(slow)}"
                                                             if slow else ""))


if __name__ == "__main__":
    main()
