"""Statistics: latency percentiles from fixed-bucket histograms, drift tests, quality metrics,
and the two helpers every series shares (``minute_of``, ``rounded``).

Drift compares what a deployment received with the reference captured at registration
(``registry.reference``):

- numeric features: PSI on the reference's decile bin edges (outer bins open-ended) and a
  two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) of the sampled inputs against a
  sample reconstructed from the reference quantiles (inverse CDF, linear between deciles);
- categorical features: PSI on the category frequencies and a chi-squared goodness-of-fit test
  (``scipy.stats.chisquare``) of the observed counts against the reference proportions.

A feature is *drifted* when the shift is both material (PSI above the model's threshold,
default 0.2) and significant (p-value below the model's threshold, default 0.01). With large
samples a test alone flags shifts too small to matter; PSI alone flags noise on tiny samples.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.lazy_imports import lazy_module

from .extract import is_class_label
from .models import LATENCY_BUCKETS_MS

# Imported when first used: every Django process loads this module (issue 26, memory).
if TYPE_CHECKING:  # the real modules, for annotations
    import numpy as np
    import scipy.stats as sps
else:
    np = lazy_module("numpy")
    sps = lazy_module("scipy.stats")

EPSILON = 1e-4
SAMPLE_PER_SKETCH = 500
MAX_DRIFT_SAMPLE = 5000
REFERENCE_SAMPLE = 1000
OTHER = "__other__"


# --- series ----------------------------------------------------------------------------------
def minute_of(ts: datetime) -> datetime:
    """The start of ``ts``'s minute: rollups, series steps and alert windows are whole minutes."""
    return ts.replace(second=0, microsecond=0)


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``value`` as the JSON answers and charts show it (None stays None)."""
    return None if value is None else round(float(value), digits)


# --- latency ---------------------------------------------------------------------------------
def latency_bucket(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS_MS, ms)


def empty_buckets() -> list[float]:
    return [0] * (len(LATENCY_BUCKETS_MS) + 1)


def percentile(buckets: Sequence[float], q: float) -> float | None:
    """The q-quantile (0-1) of a fixed-bucket histogram, linear within the bucket."""
    total = float(sum(buckets))
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(buckets):
        if n <= 0:
            continue
        if seen + n >= rank:
            lower = LATENCY_BUCKETS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BUCKETS_MS):
                return float(LATENCY_BUCKETS_MS[-1])
            upper = LATENCY_BUCKETS_MS[i]
            return lower + (upper - lower) * max(0.0, min(1.0, (rank - seen) / n))
        seen += n
    return float(LATENCY_BUCKETS_MS[-1])


# --- sketches: what the rollup keeps per feature ----------------------------------------------
def numeric_bin(edges: Sequence[float], value: float) -> int:
    """Index of the reference bin holding ``value``; outer bins are open-ended."""
    if len(edges) <= 2:
        return 0
    return bisect.bisect_right(edges, value, 1, len(edges) - 1) - 1


def merge_sample(old: list, old_seen: float, new: list, new_seen: float,
                 rng: np.random.Generator, size: int = SAMPLE_PER_SKETCH) -> list:
    """Merge two uniform samples of streams of ``old_seen``/``new_seen`` items into one."""
    combined = list(old) + list(new)
    if len(combined) <= size:
        return combined
    weights = np.array([old_seen / max(len(old), 1)] * len(old)
                       + [new_seen / max(len(new), 1)] * len(new), dtype=float)
    picked = rng.choice(len(combined), size=size, replace=False, p=weights / weights.sum())
    return [combined[i] for i in sorted(picked)]


def reference_sample(quantiles: Sequence[float], n: int = REFERENCE_SAMPLE) -> np.ndarray:
    """A sample with the reference's distribution, from its deciles (inverse CDF)."""
    probs = np.linspace(0.0, 1.0, len(quantiles))
    return np.interp((np.arange(n) + 0.5) / n, probs, np.asarray(quantiles, dtype=float))


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two histograms on the same bins."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return 0.0
    ref = np.clip(ref / ref.sum(), EPSILON, None)
    cur = np.clip(cur / cur.sum(), EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _verdict(value_psi: float, p_value: float | None, thresholds: dict[str, float]) -> bool:
    return value_psi > thresholds["psi"] and p_value is not None \
        and p_value < thresholds["p_value"]


def numeric_drift(reference: dict[str, Any], counts: Sequence[float], sample: Sequence[float],
                  thresholds: dict[str, float], *, seed: int = 0) -> dict[str, Any]:
    ref_counts = reference.get("bin_counts") or [reference.get("count", 1)]
    value_psi = psi(ref_counts, counts) if sum(counts) else 0.0
    try:
        values = np.asarray(sample, dtype=float)
    except (TypeError, ValueError):
        values = np.asarray([v for v in sample if isinstance(v, (int, float))], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) > MAX_DRIFT_SAMPLE:
        values = np.random.default_rng(seed).choice(values, MAX_DRIFT_SAMPLE, replace=False)
    statistic = p_value = None
    if len(values) >= 2 and reference.get("quantiles"):
        n_ref = int(min(max(reference.get("count", REFERENCE_SAMPLE), 2), REFERENCE_SAMPLE))
        result = sps.ks_2samp(values, reference_sample(reference["quantiles"], n_ref))
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return {"kind": "numeric", "test": "ks", "statistic": statistic, "p_value": p_value,
            "psi": round(value_psi, 6), "n": int(sum(counts)),
            "drifted": _verdict(value_psi, p_value, thresholds)}


def categorical_table(reference: dict[str, Any], counts: dict[str, float]
                      ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Aligned (categories, reference counts, observed counts); unseen categories → other."""
    freqs = {str(k): float(v) for k, v in (reference.get("frequencies") or {}).items()}
    categories = list(freqs)
    observed = {c: 0.0 for c in categories}
    other = 0.0
    for key, n in counts.items():
        if key in observed:
            observed[key] += n
        else:
            other += n
    ref_other = float(reference.get("other") or 0)
    if other or ref_other:
        categories.append(OTHER)
        freqs[OTHER] = ref_other
        observed[OTHER] = other
    return (categories, np.array([freqs[c] for c in categories]),
            np.array([observed[c] for c in categories]))


def categorical_drift(reference: dict[str, Any], counts: dict[str, float],
                      thresholds: dict[str, float]) -> dict[str, Any]:
    _, ref, obs = categorical_table(reference, counts)
    total = obs.sum()
    value_psi = psi(ref, obs) if total else 0.0
    statistic = p_value = None
    if total > 0 and len(ref) > 1:
        props = np.clip(ref / ref.sum(), EPSILON, None)
        expected = props / props.sum() * total
        result = sps.chisquare(obs, expected)
        statistic, p_value = float(result.statistic), float(result.pvalue)
        if math.isnan(p_value):
            p_value = None
    return {"kind": "categorical", "test": "chi2", "statistic": statistic, "p_value": p_value,
            "psi": round(value_psi, 6), "n": int(total),
            "drifted": _verdict(value_psi, p_value, thresholds)}


# --- ground truth ----------------------------------------------------------------------------
def _as_class(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def is_classification(pairs: list[tuple[Any, Any]]) -> bool:
    return all(is_class_label(p) and is_class_label(y) for p, y in pairs)


def quality(pairs: list[tuple[Any, Any]], task: str) -> dict[str, float | None]:
    """Accuracy and macro F1 (classification) or MAE and RMSE (regression) of (pred, label)."""
    if not pairs:
        return {}
    if task == "auto":
        task = "classification" if is_classification(pairs) else "regression"
    if task == "classification":
        predicted = [_as_class(p) for p, _ in pairs]
        actual = [_as_class(y) for _, y in pairs]
        labels = sorted(set(actual) | set(predicted))
        f1s = []
        for label in labels:
            tp = sum(1 for p, y in zip(predicted, actual, strict=True) if p == label == y)
            fp = sum(1 for p, y in zip(predicted, actual, strict=True) if p == label != y)
            fn = sum(1 for p, y in zip(predicted, actual, strict=True) if y == label != p)
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        accuracy = sum(p == y for p, y in zip(predicted, actual, strict=True)) / len(pairs)
        return {"accuracy": accuracy, "f1": sum(f1s) / len(f1s)}
    numeric = [(float(p), float(y)) for p, y in pairs
               if isinstance(p, (int, float)) and isinstance(y, (int, float))]
    if not numeric:
        return {}
    errors = np.array([p - y for p, y in numeric])
    return {"mae": float(np.abs(errors).mean()), "rmse": float(np.sqrt((errors ** 2).mean()))}
