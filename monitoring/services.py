"""Reading monitoring data, ground truth and the monitoring settings.

The metric series, drift reports, portal totals and alert evaluation read the rollups
(``monitoring.rollups``), never the raw records; ground truth (``submit_feedback``) is joined
with the raw records by request id, and prediction quality is read from those pairs. Ingest is
in ``monitoring.ingest``, alert rules in ``monitoring.alerts``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Sum, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from core.errors import InvalidInput
from core.lazy_imports import lazy_module
from deployments.models import Deployment, Revision
from registry.models import RegisteredModel
from teams import audit
from teams.access import require_team_role
from teams.roles import Role

from . import extract, gateway_errors, ingest, rollups, stats
from .ingest import MAX_REQUEST_ID, BatchTooLarge
from .models import (
    LATENCY_COLUMNS,
    Alert,
    AlertState,
    DeploymentMonitoring,
    FeatureSketch,
    Feedback,
    MinuteRollup,
    ModelMonitoring,
    PredictionRecord,
    TaskType,
)
from .rollups import reference_of
from .stats import minute_of, rounded

# Imported when first used: every Django process loads this module (issue 26, memory).
np = lazy_module("numpy")
if TYPE_CHECKING:
    from numpy import ndarray

MAX_FEEDBACK_ITEMS = 10000


# --- Reading: metrics series -----------------------------------------------------------------
NICE_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_POINTS = 2000


def time_range(start: datetime | None, end: datetime | None, step: int | None = None,
               *, default_hours: int = 24) -> tuple[datetime, datetime, int]:
    end = end or timezone.now()
    start = start or end - timedelta(hours=default_hours)
    if start >= end:
        raise InvalidInput("start must be before end.", field="start")
    if end - start > timedelta(days=400):
        raise InvalidInput("The range may span at most 400 days.", field="start")
    span = (end - start).total_seconds()
    if step is None:
        step = next((s for s in NICE_STEPS if span / s <= 240), NICE_STEPS[-1])
    if step < 60 or step % 60:
        raise InvalidInput("step must be a whole number of minutes, in seconds (60, 300, …).",
                           field="step")
    if span / step > MAX_POINTS:
        raise InvalidInput(f"start/end/step give more than {MAX_POINTS} points; use a larger "
                           "step.", field="step")
    start = minute_of(start)
    return start, end, step


class _StepSums:
    """Per-step sums of the minute rollups in a range."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = np.zeros(n)
        self.errors = np.zeros(n)
        self.latency_sum = np.zeros(n)
        self.buckets = np.zeros((n, len(LATENCY_COLUMNS)))
        self.classes: dict[str, ndarray] = {}
        self.pred_n = np.zeros(n)
        self.pred_sum = np.zeros(n)
        self.values: list[float] = []
        self.vectors: dict[str, Any] | None = None  # the range's output vectors, summarized
        self.vector_n = np.zeros(n)
        self.vector_norm = np.zeros(n)

    def add_vectors(self, i: int, summary: dict[str, Any]) -> None:
        self.vectors = rollups.merge_vectors(self.vectors, summary)
        self.vector_n[i] += summary.get("n", 0.0)
        self.vector_norm[i] += summary.get("norm_sum", 0.0)

    def add_class(self, i: int, label: str, value: float) -> None:
        series = self.classes.get(label)
        if series is None:
            series = self.classes[label] = np.zeros(self.n)
        series[i] += value


def _step_sums(deployment_ids: list[int], start: datetime, end: datetime, step: int,
               revision: int | None, n: int) -> _StepSums:
    """Sum the minute rollups per step. On PostgreSQL the database does it (GROUP BY over the
    bucket columns, ``jsonb_each_text`` for the classes); elsewhere Python does."""
    sums = _StepSums(n)
    table = MinuteRollup._meta.db_table
    if connection.vendor == "postgresql":
        where = "deployment_id = ANY(%s) AND minute >= %s AND minute < %s"
        params: list[Any] = [list(deployment_ids), start, end]
        if revision is not None:
            where += " AND revision = %s"
            params.append(revision)
        index = "floor((extract(epoch FROM minute) - %s) / %s)::int"
        head = [start.timestamp(), step]
        # Only constant table/column names are formatted in; every value is a parameter.
        columns = ", ".join(f"sum({c})" for c in LATENCY_COLUMNS)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {index}, sum(count), sum(errors), sum(latency_sum), "  # noqa: S608 - constant names
                           f"{columns} FROM {table} WHERE {where} GROUP BY 1", head + params)
            for i, c, e, ls, *buckets in cursor.fetchall():
                if 0 <= i < n:
                    sums.count[i], sums.errors[i], sums.latency_sum[i] = c, e, ls
                    sums.buckets[i] = buckets
            # Predictions: summed here rather than with jsonb_each_text, which costs ~3x more.
            cursor.execute(f"SELECT {index}, predictions::text FROM {table} "  # noqa: S608
                           f"WHERE {where}", head + params)
            loads = orjson.loads
            for i, text in cursor.fetchall():
                if not 0 <= i < n or text == "{}":
                    continue
                preds = loads(text)
                for label, value in (preds.get("classes") or {}).items():
                    sums.add_class(i, label, value)
                if preds.get("n"):
                    sums.pred_n[i] += preds["n"]
                    sums.pred_sum[i] += preds["sum"]
                    if len(sums.values) < 20000:
                        sums.values.extend(preds.get("values") or [])
                if preds.get("vectors"):
                    sums.add_vectors(i, preds["vectors"])
        return sums
    rows = MinuteRollup.objects.filter(deployment_id__in=deployment_ids, minute__gte=start,
                                       minute__lt=end)
    if revision is not None:
        rows = rows.filter(revision=revision)
    start_ts = start.timestamp()
    for minute, c, e, ls, preds, *buckets in rows.values_list(
            "minute", "count", "errors", "latency_sum", "predictions", *LATENCY_COLUMNS):
        i = int((minute.timestamp() - start_ts) // step)
        if not 0 <= i < n:
            continue
        sums.count[i] += c
        sums.errors[i] += e
        sums.latency_sum[i] += ls
        sums.buckets[i] += buckets
        for label, value in (preds.get("classes") or {}).items():
            sums.add_class(i, label, value)
        if preds.get("n"):
            sums.pred_n[i] += preds["n"]
            sums.pred_sum[i] += preds["sum"]
            if len(sums.values) < 20000:
                sums.values.extend(preds.get("values") or [])
        if preds.get("vectors"):
            sums.add_vectors(i, preds["vectors"])
    return sums


def metrics_series(*, deployments: list[Deployment], start: datetime, end: datetime, step: int,
                   revision: int | None = None) -> dict[str, Any]:
    """Time series from the minute rollups: traffic, errors, latency percentiles, predictions."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    sums = _step_sums([d.pk for d in deployments], start, end, step, revision, n)
    count, errors, lat_sum, buckets = sums.count, sums.errors, sums.latency_sum, sums.buckets
    classes, pred_n, pred_sum, values = sums.classes, sums.pred_n, sums.pred_sum, sums.values
    minutes_per_step = step / 60

    def pct(q: float) -> list[float | None]:
        return [rounded(stats.percentile(b, q)) for b in buckets.tolist()]

    total_buckets = buckets.sum(axis=0).tolist()
    total = float(count.sum())
    total_errors = float(errors.sum())
    predictions: dict[str, Any]
    if classes:
        predictions = {"kind": "classes",
                       "classes": {k: [rounded(v) for v in classes[k].tolist()]
                                   for k in sorted(classes)[:30]}}
    elif values:
        hist, edges = np.histogram(values, bins=20)
        predictions = {"kind": "numeric",
                       "mean": [rounded(s / c) if c else None
                                for s, c in zip(pred_sum.tolist(), pred_n.tolist(),
                                                strict=True)],
                       "histogram": {"edges": [float(x) for x in edges],
                                     "counts": [int(x) for x in hist]}}
    elif sums.vectors:
        predictions = vector_summary(sums)
    else:
        predictions = {"kind": "none"}
    count_l, errors_l, lat_l = count.tolist(), errors.tolist(), lat_sum.tolist()
    gateway = gateway_errors.series(deployment_ids=[d.pk for d in deployments], start=start,
                                    end=end, step=step, revision=revision)
    return {
        "start": start.isoformat(), "end": end.isoformat(), "step": step,
        "timestamps": [(start + timedelta(seconds=step * i)).isoformat() for i in range(n)],
        "requests": [rounded(c) for c in count_l],
        "requests_per_min": [rounded(c / minutes_per_step) for c in count_l],
        "errors": [rounded(e) for e in errors_l],
        "error_rate": [rounded(100.0 * e / c) if c else None
                       for e, c in zip(errors_l, count_l, strict=True)],
        "latency_mean": [rounded(s / c) if c else None
                         for s, c in zip(lat_l, count_l, strict=True)],
        "latency_p50": pct(0.5), "latency_p95": pct(0.95), "latency_p99": pct(0.99),
        "predictions": predictions,
        "totals": {"requests": rounded(total), "errors": rounded(total_errors),
                   "error_rate": rounded(100.0 * total_errors / total) if total else None,
                   "latency_p50": rounded(stats.percentile(total_buckets, 0.5)),
                   "latency_p95": rounded(stats.percentile(total_buckets, 0.95)),
                   "latency_p99": rounded(stats.percentile(total_buckets, 0.99)),
                   **gateway.pop("totals")},
        **gateway,
    }


def vector_summary(sums: _StepSums) -> dict[str, Any]:
    """Output vectors (embeddings) in a range: their dimension, the mean and spread of their
    norms, the mean cosine to their centroid (1: all alike; near 0: spread out), and the mean
    norm per step. An argmax or a histogram of their values would mean nothing."""
    v = sums.vectors or {}
    n = float(v.get("n") or 0.0)
    mean = v["norm_sum"] / n if n else None
    spread = math.sqrt(max(0.0, v["norm_sq"] / n - mean ** 2)) if n and mean is not None \
        else None
    centroid = float(np.linalg.norm(np.asarray(v.get("unit_sum") or [0.0]))) / n if n else None
    return {"kind": "vectors", "dim": v.get("dim"), "rows": rounded(n),
            "norm_mean": rounded(mean), "norm_std": rounded(spread),
            "centroid_cosine": rounded(centroid),
            "norm_series": [rounded(s / c) if c else None
                            for s, c in zip(sums.vector_norm.tolist(), sums.vector_n.tolist(),
                                            strict=True)]}


# --- Reading: drift --------------------------------------------------------------------------
def thresholds_of(model: RegisteredModel) -> dict[str, float]:
    """The model's PSI and p-value thresholds, and the platform's Jensen-Shannon one."""
    row = ModelMonitoring.objects.filter(model=model).first()
    return {"psi": row.psi_threshold if row else 0.2,
            "p_value": row.p_value_threshold if row else 0.01,
            "js": settings.MODELPORT_DRIFT_JS_THRESHOLD}


def drift_rules() -> dict[str, str]:
    """Which tests decide, per feature kind (the platform's settings; ``stats.parse_rule``)."""
    return {"numeric": settings.MODELPORT_DRIFT_RULE_NUMERIC or stats.DEFAULT_RULES["numeric"],
            "categorical": settings.MODELPORT_DRIFT_RULE_CATEGORICAL
            or stats.DEFAULT_RULES["categorical"]}


def revision_row(deployment: Deployment, number: int) -> Revision | None:
    """Revision ``number`` of ``deployment`` with its model version, if it still exists."""
    return (Revision.objects.filter(deployment=deployment, number=number)
            .select_related("model_version").first())


def drift_report(*, deployment: Deployment, start: datetime, end: datetime,
                 revision: int | None = None) -> dict[str, Any]:
    """Per feature: PSI and a test statistic/p-value of the inputs in [start, end) against the
    reference of the revision's model version."""
    sketches = FeatureSketch.objects.filter(deployment=deployment,
                                            hour__gte=start.replace(minute=0, second=0,
                                                                    microsecond=0),
                                            hour__lt=end)
    if revision is None:
        revision = (sketches.order_by("-revision").values_list("revision", flat=True).first()
                    or deployment.revision)
    sketches = sketches.filter(revision=revision)
    rev = revision_row(deployment, revision)
    version = rev.model_version if rev else deployment.version
    reference = (version.reference_stats if version else None) or reference_of(deployment.pk,
                                                                               revision)
    thresholds = thresholds_of(deployment.model)
    rules = drift_rules()
    merged: dict[str, dict[str, Any]] = {}
    rows = 0
    # JSON as text, parsed with orjson: a week of sketches holds ~10^5 sampled values.
    texts = sketches.annotate(text=Cast("features", TextField())).values_list("rows", "text")
    for sketch_rows, text in texts:
        rows += sketch_rows
        features = orjson.loads(text) if text else {}
        for name, f in features.items():
            into = merged.setdefault(name, {})
            counts = f.get("counts")
            if isinstance(counts, list):
                prev = into.get("counts") or [0.0] * len(counts)
                if len(prev) == len(counts):
                    into["counts"] = [a + b for a, b in zip(prev, counts, strict=True)]
                into.setdefault("sample", []).extend(f.get("sample") or [])
            elif isinstance(counts, dict):
                prev = into.setdefault("counts", {})
                for key, n in counts.items():
                    prev[key] = prev.get(key, 0.0) + n
    features = []
    for name, ref in (reference.get("features") or {}).items():
        seen = merged.get(name)
        if ref.get("kind") == "text":
            for result in stats.text_drift(ref, seen, merged.get(name + stats.TOKENS),
                                           thresholds, rules=rules):
                features.append({"feature": f"{name} ({result['aspect']})", "text": name,
                                 **result})
            continue
        if ref.get("kind") == "numeric":
            counts = (seen or {}).get("counts") or [0.0] * max(1, len(ref.get("bin_edges", []))
                                                              - 1)
            result = stats.numeric_drift(ref, counts, (seen or {}).get("sample") or [],
                                         thresholds, rules=rules)
        else:
            result = stats.categorical_drift(ref, (seen or {}).get("counts") or {}, thresholds,
                                             rules=rules)
        features.append({"feature": name, **result})
    return {
        "deployment": deployment.name, "revision": revision,
        "model_version": version.version if version else None,
        "start": start.isoformat(), "end": end.isoformat(), "rows": rows,
        "reference": {"source": reference.get("source"), "rows": reference.get("rows")},
        "thresholds": thresholds, "rules": rules, "features": features,
        "drifted": [f["feature"] for f in features if f["drifted"]],
    }


# --- Ground truth ----------------------------------------------------------------------------
def _pair_value(outputs: Any, label: Any) -> Any:
    predictions = extract.predictions_of(outputs)
    if isinstance(label, list) and len(label) == len(predictions):
        return predictions
    return predictions[0] if predictions else None


@transaction.atomic
def submit_feedback(*, actor, deployment: Deployment, items: Any) -> dict[str, Any]:
    """Ground-truth labels joined with the logged predictions by request id."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "sending ground truth")
    if not isinstance(items, list):
        raise InvalidInput('The body must be a list of {"request_id", "label"} objects.')
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise BatchTooLarge(f"{len(items)} labels in one request; the limit is "
                            f"{MAX_FEEDBACK_ITEMS}.")
    labels: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str) \
                or "label" not in item:
            raise InvalidInput(f'Item {i} must be an object with "request_id" (string) and '
                               '"label".')
        labels[item["request_id"][:MAX_REQUEST_ID]] = item["label"]
    found = {}
    ids = list(labels)
    for start in range(0, len(ids), 1000):
        for rid, rev, ts, outputs in (PredictionRecord.objects
                                      .filter(deployment=deployment,
                                              request_id__in=ids[start:start + 1000])
                                      .values_list("request_id", "revision", "timestamp",
                                                   "outputs")):
            found[rid] = (rev, ts, outputs)
    existing = {f.request_id: f for f in Feedback.objects.filter(
        deployment=deployment, request_id__in=list(found))}
    create, update = [], []
    for rid, (rev, ts, outputs) in found.items():
        label = labels[rid]
        prediction = _pair_value(outputs, label)
        row = existing.get(rid)
        if row is None:
            create.append(Feedback(deployment=deployment, revision=rev, request_id=rid,
                                   timestamp=ts, prediction=prediction, label=label))
        else:
            row.label, row.prediction = label, prediction
            update.append(row)
    Feedback.objects.bulk_create(create, batch_size=1000)
    Feedback.objects.bulk_update(update, ["label", "prediction"], batch_size=1000)
    unmatched = [rid for rid in labels if rid not in found]
    audit.record(actor=actor, action="feedback.submitted", obj=deployment,
                 team=deployment.team,
                 after={"matched": len(found), "unmatched": len(unmatched)})
    return {"matched": len(found), "updated": len(update), "unmatched": unmatched}


def _pairs(rows) -> list[tuple[Any, Any]]:
    pairs: list[tuple[Any, Any]] = []
    for prediction, label in rows:
        if isinstance(label, list) and isinstance(prediction, list):
            pairs.extend(zip(prediction, label, strict=False))
        elif prediction is not None and label is not None:
            pairs.append((prediction, label))
    return pairs


def task_of(deployment: Deployment) -> str:
    row = ModelMonitoring.objects.filter(model_id=deployment.model_id).first()
    return row.task if row else TaskType.AUTO


def quality_series(*, deployment: Deployment, start: datetime, end: datetime, step: int,
                   revision: int | None = None) -> dict[str, Any]:
    """Accuracy/F1 or MAE/RMSE per step, over the labelled predictions made in each step."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    rows = Feedback.objects.filter(deployment=deployment, timestamp__gte=start, timestamp__lt=end)
    if revision is not None:
        rows = rows.filter(revision=revision)
    per_step: list[list] = [[] for _ in range(n)]
    everything = []
    start_ts = start.timestamp()
    for ts, prediction, label in rows.values_list("timestamp", "prediction", "label"):
        i = int((ts.timestamp() - start_ts) // step)
        if 0 <= i < n:
            per_step[i].append((prediction, label))
            everything.append((prediction, label))
    task = task_of(deployment)
    all_pairs = _pairs(everything)
    if task == TaskType.AUTO and all_pairs:
        task = "classification" if stats.is_classification(all_pairs) else "regression"
    names = ("accuracy", "f1") if task == "classification" else ("mae", "rmse")
    series: dict[str, list] = {name: [] for name in names}
    labelled = []
    for chunk in per_step:
        pairs = _pairs(chunk)
        labelled.append(len(pairs))
        values = stats.quality(pairs, task) if pairs else {}
        for name in names:
            series[name].append(rounded(values.get(name)))
    overall = stats.quality(all_pairs, task) if all_pairs else {}
    return {"task": task if all_pairs else task_of(deployment), "labelled": labelled,
            **series, "totals": {k: rounded(v) for k, v in overall.items()} |
            {"labelled": len(all_pairs)}}


# --- Settings --------------------------------------------------------------------------------
@transaction.atomic
def set_model_monitoring(*, actor, model: RegisteredModel, psi_threshold: float | None = None,
                         p_value_threshold: float | None = None,
                         task: str | None = None) -> ModelMonitoring:
    require_team_role(actor, model.team, Role.MAINTAINER, "changing drift thresholds")
    row, _ = ModelMonitoring.objects.select_for_update().get_or_create(model=model)
    before = audit.snapshot(row, ["psi_threshold", "p_value_threshold", "task"])
    if psi_threshold is not None:
        if not 0 < psi_threshold < 10:
            raise InvalidInput("psi_threshold must be between 0 and 10.", field="psi_threshold")
        row.psi_threshold = psi_threshold
    if p_value_threshold is not None:
        if not 0 < p_value_threshold < 1:
            raise InvalidInput("p_value_threshold must be between 0 and 1.",
                               field="p_value_threshold")
        row.p_value_threshold = p_value_threshold
    if task is not None:
        if task not in TaskType.values:
            raise InvalidInput(f"task must be one of {', '.join(TaskType.values)}.", field="task")
        row.task = task
    row.save()
    audit.record(actor=actor, action="model_monitoring.updated", obj=model, team=model.team,
                 before=before,
                 after=audit.snapshot(row, ["psi_threshold", "p_value_threshold", "task"]))
    return row


@transaction.atomic
def set_sampling_rate(*, actor, deployment: Deployment, sampling_rate: float
                      ) -> DeploymentMonitoring:
    require_team_role(actor, deployment.team, Role.ENGINEER, "changing the sampling rate")
    if not isinstance(sampling_rate, (int, float)) or not 0 <= sampling_rate <= 1:
        raise InvalidInput("sampling_rate must be between 0 and 1.", field="sampling_rate")
    row, _ = DeploymentMonitoring.objects.select_for_update().get_or_create(deployment=deployment)
    before = audit.snapshot(row, ["sampling_rate"])
    row.sampling_rate = float(sampling_rate)
    row.save()
    ingest.forget_sampling_rate(deployment)
    audit.record(actor=actor, action="deployment_monitoring.updated", obj=deployment,
                 team=deployment.team, before=before, after=audit.snapshot(row,
                                                                            ["sampling_rate"]))
    return row


# --- Reading: many deployments at a glance (portal lists) -----------------------------------
def totals_by_deployment(*, deployment_ids: list[int], start: datetime, end: datetime
                         ) -> dict[int, dict[str, Any]]:
    """Requests, errors, error rate, latency p50/p95/p99 and firing alerts per deployment over
    ``[start, end)``: two grouped queries for any number of deployments (the ``totals`` of
    ``metrics_series``, without its per-step series)."""
    empty = {"requests": 0.0, "errors": 0.0, "error_rate": None, "latency_p50": None,
             "latency_p95": None, "latency_p99": None, "firing": 0}
    result: dict[int, dict[str, Any]] = {pk: dict(empty) for pk in deployment_ids}
    rows = (MinuteRollup.objects.filter(deployment_id__in=deployment_ids, minute__gte=start,
                                        minute__lt=end)
            .order_by().values("deployment_id")
            .annotate(n=Sum("count"), e=Sum("errors"), **{c: Sum(c) for c in LATENCY_COLUMNS}))
    # The latency columns' names are not literals: a row is a plain mapping here.
    for row in cast(Iterable[Mapping[str, Any]], rows):
        total, errors = float(row["n"] or 0), float(row["e"] or 0)
        buckets = [float(row[c] or 0) for c in LATENCY_COLUMNS]
        result[row["deployment_id"]].update({
            "requests": rounded(total), "errors": rounded(errors),
            "error_rate": rounded(100.0 * errors / total) if total else None,
            "latency_p50": rounded(stats.percentile(buckets, 0.5)),
            "latency_p95": rounded(stats.percentile(buckets, 0.95)),
            "latency_p99": rounded(stats.percentile(buckets, 0.99))})
    for pk, gateway in gateway_errors.totals_by_deployment(
            deployment_ids=deployment_ids, start=start, end=end).items():
        result[pk].update(gateway)
    for row in (Alert.objects.filter(state=AlertState.FIRING,
                                     rule__deployment_id__in=deployment_ids)
                .order_by().values("rule__deployment_id").annotate(n=Count("id"))):
        result[row["rule__deployment_id"]]["firing"] = row["n"]
    return result
