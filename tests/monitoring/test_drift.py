"""Drift statistics against scipy, on data with a known shift and on data with none; the
verdict rule per feature kind; the KS test's stored reference sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from django.test import Client, override_settings
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

DEFAULTS = {"psi": 0.2, "p_value": 0.01, "js": 0.1}
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
    expected = sps.ks_2samp(np.asarray(samples["x1"]), np.asarray(REF["x1"]["sample"]))
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["p_value"] < 1e-6 and result["psi"] > 0.2 and result["drifted"]
    assert result["reference_sample"] == "stored" and result["rule"] == "ks and psi"
    assert result["decided_by"] == ["ks", "psi"]


def test_the_reference_keeps_a_real_random_sample():
    frame = reference_frame()
    ref = reference.compute(frame, source="reference_data")["features"]["x1"]
    assert len(ref["sample"]) == reference.SAMPLE_PER_FEATURE
    assert set(ref["sample"]) <= set(frame["x1"].tolist())  # drawn from the data, not rebuilt
    assert len(set(ref["sample"])) == len(ref["sample"])  # without replacement
    wide = pd.DataFrame(np.random.default_rng(1).normal(size=(400, 300)))  # within the budget:
    sizes = {len(f["sample"]) for f in reference.compute(wide, source="x")["features"].values()}
    assert sizes == {reference.SAMPLE_BUDGET // 300}  # 166 values each
    assert reference.sample_size(1000) == 0  # 50 each is too few: drift falls back to deciles


def test_ks_on_the_stored_sample_agrees_with_ks_on_the_raw_data():
    live = np.random.default_rng(7).normal(0.1, 1, 500)
    small = reference_frame(seed=3, n=800)  # at most SAMPLE_PER_FEATURE rows: all of them kept
    ref = reference.compute(small, source="reference_data")["features"]["x1"]
    counts = [1.0] * (len(ref["bin_edges"]) - 1)
    result = stats.numeric_drift(ref, counts, live.tolist(), DEFAULTS)
    raw = sps.ks_2samp(live, small["x1"].to_numpy())
    assert result["statistic"] == pytest.approx(raw.statistic)
    assert result["p_value"] == pytest.approx(raw.pvalue)
    # 5,000 reference rows, 1,000 kept: the statistic within the sampling error of the raw one
    # (DKW: 1.36/sqrt(1000) = 0.043 at 95 %), the same verdict at the default threshold.
    big = reference_frame(seed=4, n=5000)
    ref = reference.compute(big, source="reference_data")["features"]["x1"]
    for shift in (0.0, 0.3):
        live = np.random.default_rng(8).normal(shift, 1, 2000)
        result = stats.numeric_drift(ref, counts, live.tolist(), DEFAULTS)
        raw = sps.ks_2samp(live, big["x1"].to_numpy())
        assert abs(result["statistic"] - raw.statistic) < 0.043
        assert (result["p_value"] < 0.01) == (raw.pvalue < 0.01)


def test_a_baseline_without_a_sample_falls_back_to_the_deciles():
    legacy = {k: v for k, v in REF["x1"].items() if k != "sample"}
    counts, samples = sketch_of(live_rows(seed=1, n=3000, shift=0.6))
    result = stats.numeric_drift(legacy, counts["x1"], samples["x1"], DEFAULTS)
    expected = sps.ks_2samp(np.asarray(samples["x1"]),
                            stats.reference_sample(legacy["quantiles"], 1000))
    assert result["reference_sample"] == "deciles"
    assert result["p_value"] == pytest.approx(expected.pvalue) and result["drifted"]


def test_chi_squared_and_psi_flag_a_known_categorical_shift():
    counts, _ = sketch_of(live_rows(seed=2, n=3000, colors=[0.15, 0.25, 0.6]))
    result = stats.categorical_drift(REF["color"], counts["color"], DEFAULTS)
    freqs = REF["color"]["frequencies"]
    observed = [counts["color"].get(c, 0) for c in freqs]
    expected = sps.chi2_contingency([list(freqs.values()), observed], correction=False)
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["drifted"] and result["psi"] > 0.2 and result["decided_by"] == ["chi2"]


def test_a_shift_chi_squared_flags_is_drifted_whatever_the_psi():
    """The issue's case: chi-squared flags the shift (p ~ 1e-14), PSI stays under 0.2 — the
    old rule (PSI and p) called it "not drifted"; chi2 decides categorical drift alone now."""
    counts = {"red": 22_500.0, "green": 15_000.0, "blue": 12_500.0}  # 45/30/25 against 50/30/20
    result = stats.categorical_drift(REF["color"], counts, DEFAULTS)
    assert result["p_value"] < 1e-10 and result["psi"] < 0.2
    assert result["drifted"] and result["decided_by"] == ["chi2"]
    assert result["tests"] == {"chi2": True, "psi": False, "js": False}
    both = stats.categorical_drift(REF["color"], counts, DEFAULTS,
                                   rules={"categorical": "chi2 and psi"})
    assert not both["drifted"] and both["decided_by"] == ["psi"]
    either = stats.categorical_drift(REF["color"], counts, DEFAULTS,
                                     rules={"categorical": "psi or js"})
    assert not either["drifted"] and either["decided_by"] == ["psi", "js"]


@pytest.mark.parametrize("rule", ["", "ks", "chi2 and", "chi2 and psi or js", "chi2 xor psi"])
def test_a_rule_that_is_not_one_is_refused(rule):
    with pytest.raises(ValueError, match="categorical drift rule"):
        stats.parse_rule(rule, "categorical")


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
    # chi2 decides alone: a two-sample test, its p-value holds without a shift.
    assert not result["drifted"], result
    assert result["psi"] < 0.05


def test_thresholds_are_per_model(ml_model, maintainer):
    services.set_model_monitoring(actor=maintainer, model=ml_model, psi_threshold=0.5,
                                  p_value_threshold=0.001)
    assert services.thresholds_of(ml_model) == {"psi": 0.5, "p_value": 0.001, "js": 0.1}


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


def test_the_platform_rule_changes_the_verdict(deployment, viewer):
    """45/30/25 colours against the reference's 50/30/20 over 6,000 rows: chi2 flags it, PSI
    does not; the platform's rule decides which verdict the API gives."""
    rng = np.random.default_rng(11)
    colors = rng.choice(COLORS, 6000, p=[0.45, 0.3, 0.25])
    rows = [[0.0, 1.0, str(c)] for c in colors]
    t0 = minutes_ago(20)
    ingest_direct(deployment, [record(i, t0, row=row) for i, row in enumerate(rows)])
    roll()
    url = "/api/v1/deployments/churn-prod/drift/"
    color = {f["feature"]: f for f in bearer_client(viewer).get(url).json()["features"]}["color"]
    assert color["drifted"] and color["rule"] == "chi2" and color["psi"] < 0.2
    with override_settings(MODELPORT_DRIFT_RULE_CATEGORICAL="chi2 and psi"):
        body = bearer_client(viewer).get(url).json()
    color = {f["feature"]: f for f in body["features"]}["color"]
    assert not color["drifted"] and color["decided_by"] == ["psi"]
    assert body["rules"] == {"numeric": "ks and psi", "categorical": "chi2 and psi"}
    client = Client()
    client.force_login(viewer)
    page = client.get("/monitoring/deployments/churn-prod/").content.decode()
    assert "decided by" in page and "categorical: <code>chi2</code>" in page
    assert "<td>chi2</td>" in page  # the colour's verdict, decided by chi2
