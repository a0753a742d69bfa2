"""Batch drift: a succeeded batch job's input against its version's reference.

A job scores a whole table the model never saw as requests, so the model's drift page would
miss it. When a job succeeds (``jobs.signals.job_finished``, received in
``MonitoringConfig.ready`` and enqueued as ``monitoring.tasks.record_batch_drift``), its staged
input (a Parquet file in artifact storage) is read column by column, up to the rows a reference
profile reads (``registry.reference.MAX_ROWS``), into the sketch a deployment's rollups keep per
feature: counts on the reference's bins or categories (every row read) and a seeded sample of up
to ``stats.MAX_DRIFT_SAMPLE`` values. The same tests, thresholds (``thresholds_of``) and rules
as the live drift then judge it; the result is one ``BatchDrift`` row per job, shown on the
model's monitoring page as "Batch jobs" and served by ``GET /models/{name}/drift/batch/``.

Reading Parquet runs no model code: this happens in the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction

from core.lazy_imports import lazy_module
from jobs.models import BatchJob, JobStatus
from registry import reference as ref_profile
from registry import storage
from registry.models import RegisteredModel
from teams import audit

from . import stats
from .models import BatchDrift
from .services import drift_rules, thresholds_of

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
else:
    np = lazy_module("numpy")
    pd = lazy_module("pandas")
    pq = lazy_module("pyarrow.parquet")

BATCH_ROWS = 65536  # rows read at a time
RECENT = 20  # jobs the model's page shows


class _Feature:
    """One feature's sketch as the input is read: what ``stats`` compares with the reference."""

    def __init__(self, reference: dict[str, Any], seed: int) -> None:
        self.kind = reference.get("kind")
        self.rng = np.random.default_rng(seed)
        source = reference.get("length", {}) if self.kind == "text" else reference
        edges = source.get("bin_edges") or []
        self.inner = np.asarray(edges[1:-1], dtype=float)
        self.counts = np.zeros(max(1, len(edges) - 1))
        self.sample: list[float] = []
        self.seen = 0
        self.categories: dict[str, float] = {}

    def add(self, series: pd.Series) -> None:
        series = series.dropna()
        if self.kind == "numeric":
            values = pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype=float)
            self._numeric(values)
        elif self.kind == "text":
            texts = [ref_profile.tokens(str(v)) for v in series]
            self._numeric(np.array([len(t) for t in texts], dtype=float))
            for words in texts:
                for word in words:
                    self.categories[word] = self.categories.get(word, 0.0) + 1
        else:
            for key, n in series.astype(str).value_counts().items():
                self.categories[str(key)] = self.categories.get(str(key), 0.0) + float(n)

    def _numeric(self, values: np.ndarray) -> None:
        """Counts on the reference bins (outer bins open-ended, as ``stats.numeric_bin``) and
        a uniform sample of everything seen so far (``stats.merge_sample``)."""
        if not len(values):
            return
        bins = np.searchsorted(self.inner, values, side="right")
        self.counts += np.bincount(bins, minlength=len(self.counts))[:len(self.counts)]
        picked = values if len(values) <= stats.MAX_DRIFT_SAMPLE else self.rng.choice(
            values, stats.MAX_DRIFT_SAMPLE, replace=False)
        self.sample = stats.merge_sample(self.sample, self.seen, picked.tolist(), len(values),
                                         self.rng, size=stats.MAX_DRIFT_SAMPLE)
        self.seen += len(values)


def profile_input(name: str, features: dict[str, dict[str, Any]]) -> tuple[dict[str, _Feature],
                                                                             int]:
    """The staged input's sketch of each reference feature it has, and the rows read."""
    with storage.artifact_storage().open(name, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        present = [c for c in parquet.schema_arrow.names if c in features]
        sketches = {c: _Feature(features[c], seed=i) for i, c in enumerate(present)}
        rows = 0
        if not present:
            return sketches, parquet.metadata.num_rows
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=present):
            batch = batch.slice(0, ref_profile.MAX_ROWS - rows)
            frame = batch.to_pandas()
            for column, sketch in sketches.items():
                sketch.add(frame[column])
            rows += batch.num_rows
            if rows >= ref_profile.MAX_ROWS:
                break
    return sketches, rows


def compare(reference: dict[str, Any], sketches: dict[str, _Feature], *,
            thresholds: dict[str, float], rules: dict[str, str]) -> list[dict[str, Any]]:
    """Per reference feature, the live drift's result (``services.drift_report``'s shape); a
    feature the input lacks is compared as empty (n = 0, not drifted)."""
    results: list[dict[str, Any]] = []
    for name, ref in (reference.get("features") or {}).items():
        seen = sketches.get(name)
        if ref.get("kind") == "text":
            lengths = {"counts": seen.counts.tolist(), "sample": seen.sample} if seen else None
            vocabulary = {"counts": seen.categories} if seen else None
            for result in stats.text_drift(ref, lengths, vocabulary, thresholds, rules=rules):
                results.append({"feature": f"{name} ({result['aspect']})", "text": name,
                                **result})
            continue
        if ref.get("kind") == "numeric":
            counts = seen.counts.tolist() if seen else \
                [0.0] * max(1, len(ref.get("bin_edges", [])) - 1)
            result = stats.numeric_drift(ref, counts, seen.sample if seen else [], thresholds,
                                         rules=rules)
        else:
            result = stats.categorical_drift(ref, seen.categories if seen else {}, thresholds,
                                             rules=rules)
        results.append({"feature": name, **result})
    return results


def record_job_input(*, job_id: int) -> BatchDrift | None:
    """Profile a succeeded job's staged input against its version's reference and keep the
    result (again for the same job: replaced). None when the job is gone or did not succeed."""
    job = (BatchJob.objects.select_related("model", "version", "team")
           .filter(pk=job_id).first())
    if job is None or job.status != JobStatus.SUCCEEDED:
        return None
    reference = job.version.reference_stats or {}
    thresholds, rules = thresholds_of(job.model), drift_rules()
    features: list[dict[str, Any]] = []
    rows, message = 0, ""
    if not reference.get("features"):
        message = f"Version {job.version.version} has no reference data to compare with."
    elif not job.input_name:
        message = "The job has no staged input."
    else:
        sketches, rows = profile_input(job.input_name, reference["features"])
        features = compare(reference, sketches, thresholds=thresholds, rules=rules)
        if not sketches:
            message = "The job's input has none of the reference's features."
    values = {
        "model": job.model, "version": job.version, "rows": job.rows_total or rows,
        "profiled_rows": rows,
        "reference": {"source": reference.get("source"), "rows": reference.get("rows")},
        "thresholds": thresholds, "rules": rules, "features": features,
        "drifted": [f["feature"] for f in features if f["drifted"]], "message": message,
    }
    with transaction.atomic():
        row, created = BatchDrift.objects.update_or_create(job=job, defaults=values)
        audit.record(actor=None, action="batch_drift.recorded", obj=row, team=job.team,
                     after={"job": job.pk, "model": job.model.name,
                            "version": job.version.version, "rows": row.rows,
                            "drifted": row.drifted, "replaced": not created})
    return row


def as_dict(row: BatchDrift) -> dict[str, Any]:
    """A job's batch drift as the API and the page show it."""
    job = row.job
    return {
        "kind": "batch", "job": job.pk, "status": job.status,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "created_by": job.created_by.get_username() if job.created_by else None,
        "trigger": job.trigger, "model_version": row.version.version,
        "alias": job.alias or None, "rows": row.rows, "profiled_rows": row.profiled_rows,
        "reference": row.reference, "thresholds": row.thresholds, "rules": row.rules,
        "features": row.features, "drifted": row.drifted, "message": row.message,
        "recorded_at": row.created_at.isoformat(),
    }


def batch_drift(*, user, model: RegisteredModel, limit: int = RECENT) -> list[BatchDrift]:
    """The model's latest batch drift results the user may see, newest job first."""
    return list(BatchDrift.objects.visible_to(user).filter(model=model)
                .select_related("job", "job__created_by", "version")[:limit])
