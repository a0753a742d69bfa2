"""Rollups and replica stats: what the beat tasks derive from raw data.

``rollup`` folds new raw records into per-minute ``MinuteRollup`` rows and per-hour
``FeatureSketch`` rows; everything people read (charts, the metrics and drift APIs, alert
evaluation: ``monitoring.services`` and ``monitoring.alerts``) comes from those. ``prune``
deletes what is past its retention. ``collect_replica_stats`` samples the CPU and memory of
live replicas from their runtime, and ``replica_series`` reads them back per step.
"""

from __future__ import annotations

import bisect
import gc
import logging
import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.lazy_imports import lazy_module
from deployments.models import ConsumerTraffic, Deployment, Replica, Revision
from deployments.runtime_health import deployment_runtime
from registry import reference as reference_stats

from . import extract, gateway_errors, prom, stats
from .models import (
    LATENCY_COLUMNS,
    FeatureSketch,
    MinuteRollup,
    PredictionRecord,
    ReplicaStat,
    RollupCursor,
)
from .stats import TOKENS, rounded

# Imported when first used: every Django process loads this module (issue 26, memory).
np = lazy_module("numpy")
if TYPE_CHECKING:
    from numpy.random import Generator

log = logging.getLogger(__name__)


# --- Rollups ---------------------------------------------------------------------------------
def reference_of(deployment_id: int, revision: int) -> dict[str, Any]:
    """The reference statistics drift is measured against: the revision's model version's,
    else the newest revision's, else the deployment's version's (``{}`` when none has any)."""
    rev = (Revision.objects.filter(deployment_id=deployment_id, number=revision)
           .select_related("model_version").first())
    if rev is None:
        rev = (Revision.objects.filter(deployment_id=deployment_id)
               .select_related("model_version").order_by("-number").first())
    if rev is not None:
        return rev.model_version.reference_stats or {}
    dep = Deployment.objects.select_related("version").filter(pk=deployment_id).first()
    if dep is not None and dep.version is not None:
        return dep.version.reference_stats or {}
    return {}


class _Sketch:
    """One hour of one revision's inputs, per reference feature: numeric bin counts and a
    sample, categorical counts; a text feature as both — its length in tokens under its own
    name (numeric) and its tokens under ``name + TOKENS`` (categorical, the reference's
    vocabulary, the rest as other)."""

    def __init__(self, reference: dict[str, Any]) -> None:
        self.reference = reference.get("features") or {}
        self.columns = list(self.reference)
        self.rows = 0
        self.counts: dict[str, Any] = {}
        self.samples: dict[str, list] = defaultdict(list)
        # (name, kind, inner bin edges, counts, sample, vocabulary counts) per feature.
        self._plan: list[tuple[str, str, Any, Any, Any, Any]] = []
        for name, ref in self.reference.items():
            kind = ref.get("kind")
            if kind in ("numeric", "text"):
                edges = (ref if kind == "numeric" else ref.get("length") or {}) \
                    .get("bin_edges") or []
                counts = self.counts[name] = [0.0] * max(1, len(edges) - 1)
                vocabulary = None
                if kind == "text":
                    vocabulary = self.counts[name + TOKENS] = {
                        word: 0.0 for word in (ref.get("vocabulary") or {}).get("frequencies")
                        or {}}
                self._plan.append((name, kind, edges[1:-1], counts, self.samples[name],
                                   vocabulary))
            else:
                self._plan.append((name, "categorical", None, self.counts.setdefault(name, {}),
                                   None, None))

    def add(self, row: dict[str, Any], weight: float) -> None:
        self.rows += 1
        for name, kind, inner, counts, sample, vocabulary in self._plan:
            value = row.get(name)
            if value is None:
                continue
            if kind == "text":
                if type(value) is not str:
                    continue
                words = reference_stats.tokens(value)
                value = float(len(words))
                for word in words:
                    key = word if word in vocabulary else stats.OTHER
                    vocabulary[key] = vocabulary.get(key, 0.0) + weight
            if kind != "categorical":
                numeric_type = type(value)
                if numeric_type is not float and numeric_type is not int:
                    if numeric_type is bool:
                        continue
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        continue
                if value != value or value in (math.inf, -math.inf):
                    continue
                counts[bisect.bisect_right(inner, value)] += weight
                sample.append(value)
            else:
                key = value if type(value) is str else str(value)
                if key not in counts and len(counts) >= 2 * stats.MAX_DRIFT_SAMPLE:
                    key = stats.OTHER
                counts[key] = counts.get(key, 0.0) + weight


def _merge_features(old: dict[str, Any], sketch: _Sketch, rng: Generator
                    ) -> dict[str, Any]:
    merged = dict(old)
    for name, counts in sketch.counts.items():
        prev = merged.get(name) or {}
        if isinstance(counts, list):
            before = prev.get("counts") or [0.0] * len(counts)
            if len(before) != len(counts):
                before = [0.0] * len(counts)
            new_sample = sketch.samples.get(name, [])
            if len(new_sample) > stats.SAMPLE_PER_SKETCH:
                idx = rng.choice(len(new_sample), stats.SAMPLE_PER_SKETCH, replace=False)
                new_sample = [new_sample[i] for i in sorted(idx)]
            seen_before = float(prev.get("seen", 0))
            seen_new = float(len(sketch.samples.get(name, [])))
            merged[name] = {
                "counts": [a + b for a, b in zip(before, counts, strict=True)],
                "seen": seen_before + seen_new,
                "sample": stats.merge_sample(prev.get("sample") or [], seen_before,
                                             new_sample, seen_new, rng),
            }
        else:
            before = dict(prev.get("counts") or {})
            for key, n in counts.items():
                before[key] = before.get(key, 0.0) + n
            merged[name] = {"counts": before}
    return merged


def add_vectors(preds: dict[str, Any], vectors: list[list[float]], weight: float) -> None:
    """Fold output vectors (embeddings) into a minute's summary: count, sum and sum of squares
    of their norms, and the sum of their unit vectors (its length over the count is the mean
    cosine to their centroid, 1 when all point the same way)."""
    array = np.asarray(vectors, dtype=float)
    if array.ndim != 2 or not np.isfinite(array).all():
        return
    norms = np.linalg.norm(array, axis=1)
    units = array[norms > 0] / norms[norms > 0, None]
    summary = preds.get("vectors")
    if summary is None:
        summary = preds["vectors"] = {"n": 0.0, "dim": array.shape[1], "norm_sum": 0.0,
                                      "norm_sq": 0.0, "unit_sum": [0.0] * array.shape[1]}
    if summary["dim"] != array.shape[1]:
        return
    summary["n"] += weight * len(array)
    summary["norm_sum"] += weight * float(norms.sum())
    summary["norm_sq"] += weight * float((norms ** 2).sum())
    summary["unit_sum"] = (np.asarray(summary["unit_sum"]) + weight * units.sum(axis=0)).tolist()


def merge_vectors(old: dict[str, Any] | None, new: dict[str, Any] | None
                  ) -> dict[str, Any] | None:
    """Two vector summaries of the same dimension as one (the newer alone otherwise)."""
    if not old or not new or old.get("dim") != new.get("dim"):
        return new or old
    return {"n": old["n"] + new["n"], "dim": old["dim"],
            "norm_sum": old["norm_sum"] + new["norm_sum"],
            "norm_sq": old["norm_sq"] + new["norm_sq"],
            "unit_sum": [a + b for a, b in zip(old["unit_sum"], new["unit_sum"], strict=True)]}


def _merge_predictions(old: dict[str, Any], new: dict[str, Any], rng: Generator
                       ) -> dict[str, Any]:
    out = {"classes": dict(old.get("classes") or {}), "n": old.get("n", 0) + new.get("n", 0),
           "sum": old.get("sum", 0.0) + new.get("sum", 0.0)}
    for key, n in (new.get("classes") or {}).items():
        out["classes"][key] = out["classes"].get(key, 0.0) + n
    values = (old.get("values") or []) + (new.get("values") or [])
    if len(values) > 50:
        values = [values[i] for i in sorted(rng.choice(len(values), 50, replace=False))]
    out["values"] = values
    if not out["classes"]:
        del out["classes"]
    vectors = merge_vectors(old.get("vectors"), new.get("vectors"))
    if vectors:
        out["vectors"] = vectors
    return out


def rollup(*, limit: int = 50000, now: datetime | None = None) -> int:
    """Fold the next raw records into the rollups (see ``_rollup``), with the cyclic garbage
    collector paused as in ``ingest_predictions``."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _rollup(limit=limit, now=now)
    finally:
        if collecting:
            gc.enable()


@transaction.atomic
def _rollup(*, limit: int, now: datetime | None) -> int:
    """Fold the next raw records (up to ``limit``) into the minute rollups and hour sketches.

    Incremental: a cursor row holds the last record id folded in. Records received in the last
    ``MODELPORT_MONITORING_ROLLUP_DELAY_S`` seconds wait for the next pass, so an ingest
    transaction still in flight (whose ids may be lower) is not skipped.
    """
    now = now or timezone.now()
    cursor, _ = RollupCursor.objects.get_or_create(name="rollup")
    cursor = RollupCursor.objects.select_for_update().get(pk=cursor.pk)
    horizon = now - timedelta(seconds=settings.MODELPORT_MONITORING_ROLLUP_DELAY_S)
    records = _raw_records(cursor.last_id, horizon, limit)
    if not records:
        return 0
    # Raw records have no foreign key (``PredictionRecord``): a deleted deployment's stay
    # until pruned. Rolling them up would reference a deployment that no longer exists, the
    # commit would fail, and the cursor would never pass them: no rollups for anyone.
    live = set(Deployment.objects.filter(pk__in={r[1] for r in records})
               .values_list("pk", flat=True))
    rng = np.random.default_rng(cursor.last_id)
    references: dict[tuple[int, int], dict[str, Any]] = {}
    minutes: dict[tuple[int, int, int], dict[str, Any]] = {}
    sketches: dict[tuple[int, int, int], _Sketch] = {}
    for _id, dep, rev, epoch, latency, status, inputs, outputs, weight in records:
        if dep not in live:
            continue
        key = (dep, rev, int(epoch // 60) * 60)
        agg = minutes.get(key)
        if agg is None:
            agg = minutes[key] = {"count": 0.0, "errors": 0.0, "latency_sum": 0.0,
                                  "buckets": stats.empty_buckets(),
                                  "predictions": {"classes": {}, "n": 0, "sum": 0.0,
                                                  "values": []}}
        agg["count"] += weight
        if status >= 400:
            agg["errors"] += weight
        agg["latency_sum"] += latency * weight
        agg["buckets"][stats.latency_bucket(latency)] += weight
        preds = agg["predictions"]
        for p in extract.predictions_of(outputs):
            if extract.is_class_label(p):
                label = str(int(p)) if isinstance(p, float) else str(p)
                preds["classes"][label] = preds["classes"].get(label, 0.0) + weight
            elif isinstance(p, (int, float)) and math.isfinite(p):
                preds["n"] += weight
                preds["sum"] += p * weight
                if len(preds["values"]) < 200:
                    preds["values"].append(p)
        vectors = extract.vectors_of(outputs)
        if vectors:
            add_vectors(preds, vectors, weight)
        if (dep, rev) not in references:
            references[(dep, rev)] = reference_of(dep, rev)
        reference = references[(dep, rev)]
        if reference.get("features") and inputs is not None:
            hour = int(epoch // 3600) * 3600
            sketch = sketches.get((dep, rev, hour))
            if sketch is None:
                sketch = sketches[(dep, rev, hour)] = _Sketch(reference)
            for row in extract.rows_of(inputs, sketch.columns):
                sketch.add(row, weight)
    _store_minutes(minutes, rng)
    _store_sketches(sketches, rng)
    cursor.last_id = records[-1][0]
    cursor.last_timestamp = datetime.fromtimestamp(max(r[3] for r in records), UTC)
    cursor.save(update_fields=["last_id", "last_timestamp", "updated_at"])
    prom.ROLLED_UP.inc(len(records))
    return len(records)


def _raw_records(after_id: int, horizon: datetime, limit: int) -> list[tuple]:
    """(id, deployment, revision, epoch seconds, latency, status, inputs, outputs, weight) of
    the next records; on PostgreSQL the JSON comes as text, parsed with orjson."""
    if connection.vendor == "postgresql":
        table = PredictionRecord._meta.db_table
        with connection.cursor() as cursor:
            columns = ("id, deployment_id, revision, extract(epoch FROM timestamp)::float8, "
                       "latency_ms, status, inputs::text, outputs::text, weight")
            where = "id > %s AND received_at <= %s ORDER BY id LIMIT %s"
            sql = f"SELECT {columns} FROM {table} WHERE {where}"  # noqa: S608 - constants
            cursor.execute(sql, [after_id, horizon, limit])
            loads = orjson.loads
            return [(i, d, r, e, lat, st, loads(inp) if inp else None,
                     loads(out) if out else None, w)
                    for i, d, r, e, lat, st, inp, out, w in cursor.fetchall()]
    return [(i, d, r, ts.timestamp(), lat, st, inp, out, w) for i, d, r, ts, lat, st, inp, out, w
            in PredictionRecord.objects.filter(id__gt=after_id, received_at__lte=horizon)
            .order_by("id").values_list("id", "deployment_id", "revision", "timestamp",
                                        "latency_ms", "status", "inputs", "outputs",
                                        "weight")[:limit]]


def _store_minutes(minutes: dict, rng: Generator) -> None:
    if not minutes:  # every record of the pass belonged to a deleted deployment
        return
    minutes = {(d, r, datetime.fromtimestamp(m, UTC)): agg for (d, r, m), agg in minutes.items()}
    deps = {k[0] for k in minutes}
    stamps = {k[2] for k in minutes}
    existing = {(r.deployment_id, r.revision, r.minute): r for r in MinuteRollup.objects.filter(
        deployment_id__in=deps, minute__gte=min(stamps), minute__lte=max(stamps))}
    create, update = [], []
    for key, agg in minutes.items():
        preds = agg["predictions"]
        if len(preds["values"]) > 50:
            preds["values"] = [preds["values"][i] for i in
                               sorted(rng.choice(len(preds["values"]), 50, replace=False))]
        if not preds["classes"]:
            del preds["classes"]
        row = existing.get(key)
        if row is None:
            create.append(MinuteRollup(
                deployment_id=key[0], revision=key[1], minute=key[2], count=agg["count"],
                errors=agg["errors"], latency_sum=agg["latency_sum"],
                # A property's setter: Model.__init__ takes it, django-stubs does not know.
                latency_buckets=agg["buckets"], predictions=preds))  # type: ignore[misc]
            continue
        row.count += agg["count"]
        row.errors += agg["errors"]
        row.latency_sum += agg["latency_sum"]
        old = row.latency_buckets or stats.empty_buckets()
        row.latency_buckets = [a + b for a, b in zip(old, agg["buckets"], strict=False)]
        row.predictions = _merge_predictions(row.predictions or {}, preds, rng)
        update.append(row)
    MinuteRollup.objects.bulk_create(create, batch_size=1000)
    MinuteRollup.objects.bulk_update(update, ["count", "errors", "latency_sum",
                                              *LATENCY_COLUMNS, "predictions"], batch_size=500)


def _store_sketches(sketches: dict, rng: Generator) -> None:
    if not sketches:
        return
    sketches = {(d, r, datetime.fromtimestamp(h, UTC)): sk for (d, r, h), sk in sketches.items()}
    create, update = [], []
    for (dep, rev, hour), sketch in sketches.items():
        row = FeatureSketch.objects.filter(deployment_id=dep, revision=rev, hour=hour).first()
        if row is None:
            create.append(FeatureSketch(deployment_id=dep, revision=rev, hour=hour,
                                        rows=sketch.rows,
                                        features=_merge_features({}, sketch, rng)))
        else:
            row.rows += sketch.rows
            row.features = _merge_features(row.features or {}, sketch, rng)
            update.append(row)
    FeatureSketch.objects.bulk_create(create)
    FeatureSketch.objects.bulk_update(update, ["rows", "features"])


def prune(*, now: datetime | None = None, chunk: int = 20000) -> dict[str, int]:
    """Delete raw records past their retention (and rollups past theirs), in chunks."""
    now = now or timezone.now()
    raw_cutoff = now - timedelta(days=settings.MODELPORT_MONITORING_RAW_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(PredictionRecord.objects.filter(timestamp__lt=raw_cutoff)
                   .values_list("id", flat=True)[:chunk])
        if not ids:
            break
        deleted += PredictionRecord.objects.filter(id__in=ids).delete()[0]
    traffic_samples = gateway_errors.prune(before=raw_cutoff)
    # The gateway's per-consumer-key seconds: as long as the raw samples they sit beside.
    consumer_traffic = ConsumerTraffic.objects.filter(at__lt=raw_cutoff).delete()[0]
    rollup_cutoff = now - timedelta(days=settings.MODELPORT_MONITORING_ROLLUP_RETENTION_DAYS)
    minutes = MinuteRollup.objects.filter(minute__lt=rollup_cutoff).delete()[0]
    sketches = FeatureSketch.objects.filter(hour__lt=rollup_cutoff).delete()[0]
    replica_stats = ReplicaStat.objects.filter(at__lt=raw_cutoff).delete()[0]
    return {"records": deleted, "rollups": minutes, "sketches": sketches,
            "replica_stats": replica_stats, "traffic_samples": traffic_samples,
            "consumer_traffic": consumer_traffic}


# --- Replica CPU and memory ------------------------------------------------------------------
ALIVE_REPLICA_STATUSES = ("ready", "running", "starting", "draining")
MIB = 1024.0 * 1024.0


def _sample(runtime: Any, replica: Replica) -> tuple[Replica, dict[str, float] | None]:
    try:
        return replica, runtime.stats(replica.runtime_id)
    except Exception as exc:  # noqa: BLE001 - a replica that vanished meanwhile is skipped
        log.info("no stats for replica %s: %s", replica.runtime_id, exc)
        return replica, None


def collect_replica_stats(*, runtime: Any = None, now: datetime | None = None) -> int:
    """Sample CPU and memory of every live replica (the reconciler's ``Replica`` rows) from
    the runtime, in parallel — Docker's one-off stats call waits about a second per container
    — and store one ``ReplicaStat`` row each. Returns the number stored."""
    replicas = list(Replica.objects.filter(status__in=ALIVE_REPLICA_STATUSES)
                    .select_related("deployment"))
    if not replicas:
        return 0
    runtimes: dict[int | None, Any] = {}
    if runtime is None:  # each replica through its deployment's execution target's runtime
        for replica in replicas:
            key = replica.deployment.target_id
            if key not in runtimes:
                try:
                    runtimes[key] = deployment_runtime(replica.deployment)
                except Exception:  # a target that cannot be reached is skipped
                    log.info("no runtime for target %s", key, exc_info=True)
                    runtimes[key] = None
        replicas = [r for r in replicas if runtimes[r.deployment.target_id] is not None]
    with ThreadPoolExecutor(max_workers=max(1, min(
            settings.MODELPORT_MONITORING_REPLICA_STATS_THREADS, len(replicas)))) as pool:
        samples = list(pool.map(
            lambda r: _sample(runtime or runtimes[r.deployment.target_id], r), replicas))
    now = now or timezone.now()
    rows = []
    for replica, sample in samples:
        if not sample or not sample.get("memory_bytes"):
            continue  # gone, or stopped between the reconciler's look and ours
        limit: float | None = float(sample.get("memory_limit_bytes") or 0.0) / MIB
        configured = float(replica.deployment.memory_mb or 0)
        if not limit or (configured and limit > 4 * configured):
            # No cgroup limit reported (local processes), or the host's RAM (no limit set).
            limit = configured or None
        rows.append(ReplicaStat(
            deployment_id=replica.deployment_id, runtime_id=replica.runtime_id,
            revision=replica.revision, index=replica.index, at=now,
            cpu_percent=round(float(sample.get("cpu_percent") or 0.0), 3),
            memory_mb=round(float(sample.get("memory_bytes") or 0.0) / MIB, 3),
            memory_limit_mb=limit))
    # Sampling takes a second or more (Docker's stats call): a deployment deleted meanwhile
    # would fail the whole insert on its foreign key, every other replica's sample with it.
    live = set(Deployment.objects.filter(pk__in={r.deployment_id for r in rows})
               .values_list("pk", flat=True))
    rows = [r for r in rows if r.deployment_id in live]
    ReplicaStat.objects.bulk_create(rows)
    return len(rows)


def replica_series(*, deployment: Deployment, start: datetime, end: datetime, step: int,
                   revision: int | None = None) -> dict[str, Any]:
    """Per replica and step: mean CPU % and peak memory (MB), aligned with ``metrics_series``'
    timestamps. ``replicas`` lists each replica seen in the range (newest revision first)."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    rows = ReplicaStat.objects.filter(deployment=deployment, at__gte=start, at__lt=end)
    if revision is not None:
        rows = rows.filter(revision=revision)
    cpu_sum: dict[str, list[float]] = {}
    cpu_n: dict[str, list[int]] = {}
    memory: dict[str, list[float | None]] = {}
    info: dict[str, dict[str, Any]] = {}
    if connection.vendor == "postgresql":
        # The database groups by step: a month at 15 s is ~170,000 rows per replica.
        table = ReplicaStat._meta.db_table
        where = "deployment_id = %s AND at >= %s AND at < %s"
        params: list[Any] = [deployment.pk, start, end]
        if revision is not None:
            where += " AND revision = %s"
            params.append(revision)
        sql = (f"SELECT runtime_id, revision, index, "  # noqa: S608 - constant names
               f"floor((extract(epoch FROM at) - %s) / %s)::int, sum(cpu_percent), count(*), "
               f"max(memory_mb), max(memory_limit_mb), max(at) FROM {table} WHERE {where} "
               f"GROUP BY 1, 2, 3, 4")
        with connection.cursor() as cursor:
            cursor.execute(sql, [start.timestamp(), step, *params])
            grouped = cursor.fetchall()
    else:
        buckets: dict[tuple, list] = {}
        start_ts = start.timestamp()
        for rid, rev, idx, at, cpu, mem, lim in rows.values_list(
                "runtime_id", "revision", "index", "at", "cpu_percent", "memory_mb",
                "memory_limit_mb"):
            key = (rid, rev, idx, int((at.timestamp() - start_ts) // step))
            b = buckets.setdefault(key, [0.0, 0, 0.0, None, at])
            b[0] += cpu
            b[1] += 1
            b[2] = max(b[2], mem)
            b[3] = lim if b[3] is None or (lim is not None and lim > b[3]) else b[3]
            b[4] = max(b[4], at)
        grouped = [(*k, *v) for k, v in buckets.items()]
    for rid, rev, idx, i, cpu, count, mem, limit, last in grouped:
        if not 0 <= i < n:
            continue
        if rid not in info:
            info[rid] = {"replica": rid, "revision": rev, "index": idx, "memory_limit_mb": None,
                         "last_seen": last}
            cpu_sum[rid], cpu_n[rid] = [0.0] * n, [0] * n
            memory[rid] = [None] * n
        cpu_sum[rid][i] += cpu
        cpu_n[rid][i] += count
        memory[rid][i] = mem if memory[rid][i] is None else max(memory[rid][i], mem)
        if limit is not None:
            info[rid]["memory_limit_mb"] = rounded(limit)
        info[rid]["last_seen"] = max(info[rid]["last_seen"], last)
    order = sorted(info, key=lambda rid: (-info[rid]["revision"], info[rid]["index"], rid))
    return {
        "replicas": [{**info[rid], "last_seen": info[rid]["last_seen"].isoformat()}
                     for rid in order],
        "replica_cpu": {rid: [rounded(s / c, 2) if c else None
                              for s, c in zip(cpu_sum[rid], cpu_n[rid], strict=True)]
                        for rid in order},
        "replica_memory": {rid: [rounded(m, 1) for m in memory[rid]] for rid in order},
    }
