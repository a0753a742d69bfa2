"""Drift statistics against scipy, on data with a known shift and on data with none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from monitoring import rollups, services, stats
from registry import reference
from tests.fixtures import bearer_client

from .conftest import (
    COLOR_P,
    COLORS,
    ingest_direct,
    live_rows,
    minutes_ago,
    record,
    reference_frame,
    roll,
)

DEFAULTS = {"psi": 0.2, "p_value": 0.01}
REF = reference.compute(reference_frame(), source="reference_data")["features"]


def sketch_of(rows: list[list]) -> tuple[dict, dict]:
    """(counts, samples) per feature the way the rollup builds them."""
    sketch = rollups._Sketch({"features": REF})
    for x1, x2, color in rows:
        sketch.add({"x1": x1, "x2": x2, "color": color}, 1.0)
    return sketch.counts, sketch.samples


def test_psi_by_hand():
    ref, cur = [50, 30, 20], [20, 30, 50]
    expected = sum((c / 100 - r / 100) * np.log((c / 100) / (r / 100))
                   for r, c in zip(ref, cur, strict=True))
    assert stats.psi(ref, cur) == pytest.approx(expected)
    assert stats.psi(ref, ref) == 0


def test_numeric_bins_follow_the_reference_edges():
    edges = REF["x1"]["bin_edges"]
    values = np.random.default_rng(3).normal(0, 1, 3000)
    counts, _ = sketch_of([[v, 1.0, "red"] for v in values])
    clipped = np.clip(values, edges[0], edges[-1])
    assert counts["x1"] == np.histogram(clipped, bins=edges)[0].tolist()


def test_ks_and_psi_flag_a_known_numeric_shift():
    counts, samples = sketch_of(live_rows(seed=1, n=3000, shift=0.6))
    result = stats.numeric_drift(REF["x1"], counts["x1"], samples["x1"], DEFAULTS)
    expected = sps.ks_2samp(np.asarray(samples["x1"]),
                            stats.reference_sample(REF["x1"]["quantiles"], 1000))
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["p_value"] < 1e-6 and result["psi"] > 0.2 and result["drifted"]


def test_chi_squared_and_psi_flag_a_known_categorical_shift():
    counts, _ = sketch_of(live_rows(seed=2, n=3000, colors=[0.15, 0.25, 0.6]))
    result = stats.categorical_drift(REF["color"], counts["color"], DEFAULTS)
    freqs = REF["color"]["frequencies"]
    observed = np.array([counts["color"].get(c, 0) for c in freqs])
    props = np.array(list(freqs.values()), dtype=float)
    expected = sps.chisquare(observed, props / props.sum() * observed.sum())
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["drifted"] and result["psi"] > 0.2


def test_unseen_categories_count_as_other():
    counts = {"red": 100.0, "purple": 900.0}
    result = stats.categorical_drift(REF["color"], counts, DEFAULTS)
    assert result["drifted"]


@pytest.mark.parametrize("seed", range(10))
def test_no_false_alarm_without_a_shift(seed):
    counts, samples = sketch_of(live_rows(seed=100 + seed, n=2000))
    for name in ("x1", "x2"):
        rng = np.random.default_rng(seed)
        sample = [samples[name][i] for i in sorted(
            rng.choice(len(samples[name]), stats.SAMPLE_PER_SKETCH, replace=False))]
        result = stats.numeric_drift(REF[name], counts[name], sample, DEFAULTS)
        assert not result["drifted"], (name, result)
        assert result["psi"] < 0.05
    result = stats.categorical_drift(REF["color"], counts["color"], DEFAULTS)
    # The alarm is the verdict (material and significant). The chi-squared p-value alone can
    # dip below 0.01 without a shift: it treats the 5,000-row reference as exact.
    assert not result["drifted"], result
    assert result["psi"] < 0.05


def test_thresholds_are_per_model(ml_model, maintainer):
    services.set_model_monitoring(actor=maintainer, model=ml_model, psi_threshold=0.5,
                                  p_value_threshold=0.001)
    assert services.thresholds_of(ml_model) == {"psi": 0.5, "p_value": 0.001}


def test_drift_api_end_to_end(deployment, viewer):
    rows = live_rows(seed=5, n=1500, shift=0.8)
    t0 = minutes_ago(20)
    ingest_direct(deployment, [record(i, t0, row=row) for i, row in enumerate(rows)])
    roll()
    response = bearer_client(viewer).get("/api/v1/deployments/churn-prod/drift/")
    assert response.status_code == 200, response.content
    body = response.json()
    features = {f["feature"]: f for f in body["features"]}
    assert set(features) == {"x1", "x2", "color"}
    assert features["x1"]["drifted"] and features["x1"]["test"] == "ks"
    assert features["x2"]["drifted"]
    assert not features["color"]["drifted"] and features["color"]["test"] == "chi2"
    assert body["drifted"] == ["x1", "x2"]
    assert features["x1"]["n"] == 1500 and body["model_version"] == 1
    assert COLORS and COLOR_P
