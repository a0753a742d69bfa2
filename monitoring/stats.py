"""Statistics: latency percentiles from fixed-bucket histograms, drift tests, quality metrics,
and the two helpers every series shares (``minute_of``, ``rounded``).

Drift compares what a deployment received with the reference captured at registration
(``registry.reference``). Every feature gets every test of its kind:

- numeric: ``ks`` — two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``) of the sampled
  inputs against the reference's stored random sample (a sample rebuilt from its deciles for
  baselines profiled before samples were kept); ``psi`` on the reference's decile bins (outer
  bins open-ended); ``js`` — Jensen-Shannon distance (base 2) on the same bins;
- categorical: ``chi2`` — chi-squared test of homogeneity (``scipy.stats.chi2_contingency``) of
  the live counts against the reference counts (two samples: the reference is a sample too, so
  the p-value holds without a shift); ``psi`` and ``js`` on the category frequencies.

Which tests decide is a *rule* per feature kind, the platform's settings
``MODELPORT_DRIFT_RULE_NUMERIC`` (default ``ks and psi``: a shift both significant and material)
and ``MODELPORT_DRIFT_RULE_CATEGORICAL`` (default ``chi2``); thresholds are the model's (PSI,
p-value) and ``MODELPORT_DRIFT_JS_THRESHOLD``. Each result names the tests that decided.
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
    import scipy.spatial.distance as spd
    import scipy.stats as sps
else:
    np = lazy_module("numpy")
    spd = lazy_module("scipy.spatial.distance")
    sps = lazy_module("scipy.stats")

EPSILON = 1e-4
SAMPLE_PER_SKETCH = 500
MAX_DRIFT_SAMPLE = 5000
REFERENCE_SAMPLE = 1000
OTHER = "__other__"
TOKENS = "#tokens"  # a text feature's vocabulary counts, next to its length counts
TESTS = {"numeric": ("ks", "psi", "js"), "categorical": ("chi2", "psi", "js")}
DEFAULT_RULES = {"numeric": "ks and psi", "categorical": "chi2"}
DEFAULT_JS = 0.1


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


def parse_rule(rule: str, kind: str) -> tuple[str, tuple[str, ...]]:
    """``"ks and psi"`` → ``("and", ("ks", "psi"))``: tests of ``kind`` joined by one of
    ``and``/``or`` (a single test decides alone). ``ValueError`` naming what is wrong."""
    words = rule.split()
    names, joins = tuple(words[0::2]), set(words[1::2])
    unknown = [n for n in names if n not in TESTS[kind]]
    if not names or unknown or not joins <= {"and", "or"} or len(joins) > 1 \
            or len(words) % 2 == 0:
        raise ValueError(f"{rule!r} is not a {kind} drift rule: name tests among "
                         f"{', '.join(TESTS[kind])} joined by 'and' or by 'or'.")
    return (joins.pop() if joins else "and"), names


def _decide(kind: str, votes: dict[str, bool], rules: dict[str, str] | None
            ) -> dict[str, Any]:
    """The verdict under the kind's rule, and which tests decided it: for a drifted feature
    the tests that flagged it (all of them under ``and``), else the ones that did not."""
    rule = (rules or {}).get(kind) or DEFAULT_RULES[kind]
    join, names = parse_rule(rule, kind)
    said = [votes[n] for n in names]
    drifted = all(said) if join == "and" else any(said)
    return {"rule": rule, "tests": votes, "drifted": drifted,
            "decided_by": [n for n in names if votes[n] == drifted]}


def _votes(p_test: str, p_value: float | None, value_psi: float, value_js: float,
           thresholds: dict[str, float]) -> dict[str, bool]:
    return {p_test: p_value is not None and p_value < thresholds["p_value"],
            "psi": value_psi > thresholds["psi"],
            "js": value_js > thresholds.get("js", DEFAULT_JS)}



def js_distance(reference: Sequence[float] | np.ndarray,
                current: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, 0-1) of two histograms on the same bins."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return 0.0
    value = float(spd.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    return 0.0 if math.isnan(value) else value


def reference_values(reference: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """The reference sample KS compares with: the stored random sample of the reference data,
    else (baselines profiled before samples were kept) one rebuilt from the deciles."""
    stored = reference.get("sample")
    if stored and len(stored) >= 2:
        return np.asarray(stored, dtype=float), "stored"
    if reference.get("quantiles"):
        n_ref = int(min(max(reference.get("count", REFERENCE_SAMPLE), 2), REFERENCE_SAMPLE))
        return reference_sample(reference["quantiles"], n_ref), "deciles"
    return None, "none"


def numeric_drift(reference: dict[str, Any], counts: Sequence[float], sample: Sequence[float],
                  thresholds: dict[str, float], *, seed: int = 0,
                  rules: dict[str, str] | None = None) -> dict[str, Any]:
    ref_counts = reference.get("bin_counts") or [reference.get("count", 1)]
    value_psi = psi(ref_counts, counts) if sum(counts) else 0.0
    value_js = js_distance(ref_counts, counts) if sum(counts) else 0.0
    try:
        values = np.asarray(sample, dtype=float)
    except (TypeError, ValueError):
        values = np.asarray([v for v in sample if isinstance(v, (int, float))], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) > MAX_DRIFT_SAMPLE:
        values = np.random.default_rng(seed).choice(values, MAX_DRIFT_SAMPLE, replace=False)
    statistic = p_value = None
    ref_values, ref_kind = reference_values(reference)
    if len(values) >= 2 and ref_values is not None:
        result = sps.ks_2samp(values, ref_values)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    votes = _votes("ks", p_value, value_psi, value_js, thresholds)
    return {"kind": "numeric", "test": "ks", "statistic": statistic, "p_value": p_value,
            "psi": round(value_psi, 6), "js": round(value_js, 6), "n": int(sum(counts)),
            "reference_sample": ref_kind, **_decide("numeric", votes, rules)}


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


def chi2_homogeneity(ref: np.ndarray, obs: np.ndarray) -> tuple[float | None, float | None]:
    """Chi-squared test that the reference and live counts come from one distribution
    (categories empty in both are left out); (None, None) with fewer than two categories."""
    keep = (ref + obs) > 0
    if obs.sum() <= 0 or ref.sum() <= 0 or keep.sum() < 2:
        return None, None
    result = sps.chi2_contingency(np.vstack([ref[keep], obs[keep]]), correction=False)
    p_value = float(result.pvalue)
    return float(result.statistic), (None if math.isnan(p_value) else p_value)


def categorical_drift(reference: dict[str, Any], counts: dict[str, float],
                      thresholds: dict[str, float], *,
                      rules: dict[str, str] | None = None) -> dict[str, Any]:
    _, ref, obs = categorical_table(reference, counts)
    total = obs.sum()
    value_psi = psi(ref, obs) if total else 0.0
    value_js = js_distance(ref, obs) if total else 0.0
    statistic, p_value = chi2_homogeneity(ref, obs)
    votes = _votes("chi2", p_value, value_psi, value_js, thresholds)
    return {"kind": "categorical", "test": "chi2", "statistic": statistic, "p_value": p_value,
            "psi": round(value_psi, 6), "js": round(value_js, 6), "n": int(total),
            **_decide("categorical", votes, rules)}


def text_drift(reference: dict[str, Any], lengths: dict[str, Any] | None,
               vocabulary: dict[str, Any] | None, thresholds: dict[str, float], *,
               rules: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A text feature's two drift results: its length in tokens (the numeric tests, on the
    reference's length deciles) and its vocabulary (the categorical tests on the counts of the
    reference's most frequent tokens, every other token pooled)."""
    length_ref = reference.get("length") or {}
    counts = (lengths or {}).get("counts") or [0.0] * max(1, len(length_ref.get("bin_edges")
                                                                 or []) - 1)
    length = numeric_drift(length_ref, counts, (lengths or {}).get("sample") or [], thresholds,
                           rules=rules)
    words = categorical_drift(reference.get("vocabulary") or {},
                              (vocabulary or {}).get("counts") or {}, thresholds, rules=rules)
    return [{**length, "aspect": "length"}, {**words, "aspect": "vocabulary"}]


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
