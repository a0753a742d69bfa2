"""Ingest CPU per record on SQLite (``make run``): the current write path against the one it
replaced (a model instance per record + ``bulk_create``), side by side in one run.

Usage: .venv/bin/python bench/ingest.py [--batches 40] [--batch 500] [--rounds 3]

It migrates a fresh SQLite database in a temporary data dir (``config.settings.dev``, the
settings ``make run`` uses: WAL, IMMEDIATE transactions), makes one deployment, and feeds
``monitoring.ingest.ingest_predictions`` (the service, no HTTP) batches encoded by the model
server's own shipper (``serving.shipping.Shipper``) from 1-row iris ``dataframe_split``
requests, as bench/gateway.py sends them. The two paths alternate batch by batch, so both see
the same load and the same table size. Printed: CPU µs per stored record (``process_time``;
the machine is shared, so not wall time) for the whole service call and for its storing part
(``_prepared`` + ``_write``), with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def setup(data_dir: str) -> None:
    os.environ.pop("DATABASE_URL", None)  # SQLite under the data dir, as `make run`
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
    os.environ["MODELPORT_DATA_DIR"] = data_dir
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def legacy_paths():
    """The SQLite branch of ``_prepared`` / ``_write`` before the tuple path (commit 8152774)."""
    import orjson

    from monitoring import ingest
    from monitoring.models import PredictionRecord

    def prepared(rows, rejections):
        out = []
        for r in rows:
            try:
                orjson.dumps(r[8])
                orjson.dumps(r[9])
            except (TypeError, ValueError) as exc:
                rejections.add(r[14], *ingest._payload_problem(r[14], exc))
                continue
            out.append((r[14], PredictionRecord(**dict(zip(
                ingest.COLUMNS, r[:len(ingest.COLUMNS)], strict=True)))))
        return out

    def write(items):
        PredictionRecord.objects.bulk_create(items, batch_size=500)

    return prepared, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches per path and round")
    parser.add_argument("--batch", type=int, default=500, help="records per batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as data_dir:
        setup(data_dir)
        run(args, load_before)


def run(args: argparse.Namespace, load_before: tuple[float, ...]) -> None:
    import random
    import sqlite3

    from django.db import connection

    from deployments.models import Deployment, Revision
    from monitoring import ingest as monitoring_ingest
    from monitoring.models import PredictionRecord
    from registry.models import ModelVersion, RegisteredModel
    from serving.shipping import Shipper
    from teams.models import Team

    team = Team.objects.create(slug="bench", name="Bench")
    model = RegisteredModel.objects.create(name="bench-iris", team=team)
    version = ModelVersion.objects.create(model=model, version=1, status="ready",
                                          source_format="mlflow", flavor="sklearn")
    deployment = Deployment.objects.create(name="bench-iris", team=team, model=model,
                                           version=version, revision=1, status="healthy")
    Revision.objects.create(deployment=deployment, number=1, model_version=version)
    token = monitoring_ingest.authenticate_ingest(
        f"Bearer {monitoring_ingest.issue_ingest_token(deployment=deployment)}")
    shipper = Shipper(buffer=None, url="http://unused", envelope={
        "deployment": deployment.name, "revision": "1", "replica": "bench-iris-r1-0"})
    rng = random.Random(0)

    def body() -> bytes:
        now = time.time()
        records = []
        for i in range(args.batch):
            row = [round(rng.uniform(4.3, 7.9), 1), round(rng.uniform(2.0, 4.4), 1),
                   round(rng.uniform(1.0, 6.9), 1), round(rng.uniform(0.1, 2.5), 1)]
            request = (b'{"dataframe_split": {"columns": ["' + '", "'.join(COLUMNS).encode()
                       + b'"], "data": [' + str(row).encode() + b"]}}")
            records.append((uuid.uuid4().hex, now - (args.batch - i) * 0.001,
                            rng.lognormvariate(0.5, 0.4), 200, "invocations", request,
                            b'{"predictions": [%d]}' % rng.randrange(3), None))
        return shipper.encode(records)

    current = monitoring_ingest._prepared, monitoring_ingest._write
    legacy = legacy_paths()
    store_cpu = {"old": 0.0, "new": 0.0}

    def timed(fn, path):
        def wrapper(*a):
            started = time.process_time()
            try:
                return fn(*a)
            finally:
                store_cpu[path] += time.process_time() - started
        return wrapper

    paths = {"old": tuple(timed(f, "old") for f in legacy),
             "new": tuple(timed(f, "new") for f in current)}
    total_cpu = {"old": 0.0, "new": 0.0}
    stored = {"old": 0, "new": 0}

    def ingest(path: str, measure: bool = True) -> None:
        monitoring_ingest._prepared, monitoring_ingest._write = paths[path]
        data = body()
        before_store = store_cpu[path]
        started = time.process_time()
        answer = monitoring_ingest.ingest_predictions(token=token, body=data)
        elapsed = time.process_time() - started
        assert answer["accepted"] == args.batch, answer
        if measure:
            total_cpu[path] += elapsed
            stored[path] += answer["accepted"]
        else:
            store_cpu[path] = before_store

    for path in ("old", "new"):  # warm-up: imports, statement caches
        ingest(path, measure=False)
    print(f"SQLite {sqlite3.sqlite_version}, {connection.settings_dict['NAME']}; "
          f"{args.rounds} rounds x {args.batches} batches x {args.batch} records per path, "
          f"alternating; load average {' '.join(f'{x:.2f}' for x in load_before)}")
    print(f"{'round':>5}  {'old total':>10} {'new total':>10}  {'old store':>10} "
          f"{'new store':>10}   (CPU µs per record)")
    for n in range(1, args.rounds + 1):
        marks = {p: (total_cpu[p], store_cpu[p], stored[p]) for p in paths}
        for _ in range(args.batches):
            for path in ("old", "new"):
                ingest(path)
        cells = []
        for column in (0, 1):
            for path in ("old", "new"):
                cpu = (total_cpu[path], store_cpu[path])[column] - marks[path][column]
                cells.append(f"{cpu / (stored[path] - marks[path][2]) * 1e6:10.1f}")
        print(f"{n:>5}  {cells[0]} {cells[1]}  {cells[2]} {cells[3]}")
        PredictionRecord.objects.all().delete()  # each round starts from an empty table
    monitoring_ingest._prepared, monitoring_ingest._write = current
    old, new = (total_cpu[p] / stored[p] * 1e6 for p in ("old", "new"))
    old_store, new_store = (store_cpu[p] / stored[p] * 1e6 for p in ("old", "new"))
    print(f"{'all':>5}  {old:10.1f} {new:10.1f}  {old_store:10.1f} {new_store:10.1f}")
    print(f"ingest_predictions: {old:.1f} -> {new:.1f} µs/record ({old / new:.1f}x); "
          f"storing (_prepared + _write): {old_store:.1f} -> {new_store:.1f} µs/record "
          f"({old_store / new_store:.1f}x)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
