"""Registry API latency with a realistic catalogue: 10,000 models / 100,000 versions in PostgreSQL.

Usage: DATABASE_URL=postgres://user@127.0.0.1:5432/postgres .venv/bin/python bench/registry.py
It creates (or reuses) a scratch database ``modelport_bench`` (``--database``) on that server,
seeds it once with bulk inserts, then times list, search, filter and detail calls through the
full Django/DRF stack (in process: server time, no network) and prints p50/p95 per call. Target:
p95 < 50 ms. The same reads through MLflow's Model Registry REST API (``/mlflow/…``, answered by
Modelport: ``registry/mlflow_registry_api/``) are timed in the same run, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

from scratch import percentile, setup_django

MLFLOW = "/mlflow/api/2.0/mlflow"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--versions-per-model", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database", default="modelport_bench")
    args = parser.parse_args()
    setup_django(args.database)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.test import APIClient

    from registry.models import ModelAlias, ModelVersion, RegisteredModel
    from teams import services as team_services
    from teams.models import Membership, Team

    user, _ = get_user_model().objects.get_or_create(username="bench")
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "maintainer"})
    if RegisteredModel.objects.count() < args.models:
        started = time.perf_counter()
        RegisteredModel.objects.all().delete()
        models = RegisteredModel.objects.bulk_create(
            [RegisteredModel(
                name=f"model-{i:05d}", team=team, created_by=user,
                description=(description := f"Model number {i} for "
                                            f"{'fraud' if i % 7 else 'churn'}"),
                search_text=RegisteredModel.compute_search_text(f"model-{i:05d}", description),
                tags=["tabular", f"group-{i % 20}"]) for i in range(args.models)],
            batch_size=2000)
        batch: list[ModelVersion] = []
        for model in models:
            for n in range(1, args.versions_per_model + 1):
                batch.append(ModelVersion(
                    model=model, version=n, source_format="mlflow", status="ready",
                    flavor="sklearn", metrics={"accuracy": 0.9 + n / 1000},
                    lineage={"git_commit": f"{n:040x}"}, created_by=user))
            if len(batch) >= 20_000:
                ModelVersion.objects.bulk_create(batch, batch_size=5000)
                batch = []
        ModelVersion.objects.bulk_create(batch, batch_size=5000)
        latest = {v.model_id: v for v in ModelVersion.objects.filter(
            version=args.versions_per_model)}
        ModelAlias.objects.bulk_create([ModelAlias(model_id=m.pk, name="production",
                                                   version=latest[m.pk]) for m in models[::10]])
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        print(f"seeded {args.models} models / {args.models * args.versions_per_model} versions "
              f"in {time.perf_counter() - started:.1f} s")
    _, secret = team_services.create_token(actor=user, name=f"bench-{time.time()}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    calls = {
        "list (page 1, 50)": "/api/v1/models/",
        "list (page 100, 50)": "/api/v1/models/?page=100",
        "search 'churn'": "/api/v1/models/?search=churn",
        "filter tag + alias": "/api/v1/models/?tag=group-3&alias=production",
        "detail": "/api/v1/models/model-04242/",
        "versions list": "/api/v1/models/model-04242/versions/",
        "version detail": "/api/v1/models/model-04242/versions/7/",
        # MLflow's registry API, as MlflowClient calls it
        "mlflow: search LIKE": f"{MLFLOW}/registered-models/search?max_results=50&"
                               "filter=name+LIKE+%27model-042%25%27",
        "mlflow: search, no filter": f"{MLFLOW}/registered-models/search?max_results=100",
        "mlflow: get model": f"{MLFLOW}/registered-models/get?name=model-04242",
        "mlflow: versions of one": f"{MLFLOW}/model-versions/search?"
                                   "filter=name+%3D+%27model-04242%27",
        "mlflow: versions, 100": f"{MLFLOW}/model-versions/search?max_results=100",
        "mlflow: get version": f"{MLFLOW}/model-versions/get?name=model-04242&version=7",
        "mlflow: by alias": f"{MLFLOW}/registered-models/alias?name=model-00010&"
                            "alias=production",
    }
    print(f"\n{'call':<26} {'p50 ms':>8} {'p95 ms':>8}  (n={args.repeat}, target p95 < 50 ms)")
    for label, path in calls.items():
        client.get(path)
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        print(f"{label:<26} {statistics.median(timings):8.1f} {percentile(timings, 0.95):8.1f}")


if __name__ == "__main__":
    main()
