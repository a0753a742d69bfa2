"""Text inputs and vector outputs (issue 19: a sentence-embedding model's traffic): a string
column is profiled as text (length in tokens, vocabulary), drift of either is found with the
numeric and categorical tests against scipy, and embeddings are summarized (norms, mean cosine
to their centroid) instead of being read as class probabilities. Real PostgreSQL."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from django.test import Client
from scipy import stats as sps

from deployments.models import Deployment, Revision
from monitoring import extract, rollups, services, stats
from registry import reference
from registry.models import ModelVersion, RegisteredModel
from tests.fixtures import bearer_client

from .conftest import ingest_direct, minutes_ago, roll

DEFAULTS = {"psi": 0.2, "p_value": 0.01, "js": 0.1}
SUPPORT = ["the model serves requests quickly", "please reset my password today",
           "my invoice shows a wrong amount", "how do I export the report",
           "the app crashes when I log in", "thanks for the fast answer"]
SPORTS = ["the striker scored twice in the final minutes", "a late goal won the derby",
          "the referee showed a red card to the keeper"]


def texts(seed: int, n: int, pool: list[str], *, repeat: int = 1) -> list[str]:
    """Sentences drawn from `pool`, each `repeat` times itself (longer texts)."""
    rng = np.random.default_rng(seed)
    return [" ".join([pool[i]] * repeat) for i in rng.integers(0, len(pool), n)]


def reference_stats() -> dict:
    return reference.compute(pd.DataFrame({0: texts(0, 2000, SUPPORT)}), source="reference_data")


def sketch(rows: list[str]) -> rollups._Sketch:
    built = rollups._Sketch(reference_stats())
    for text in rows:
        built.add({"0": text}, 1.0)
    return built


def test_a_string_column_is_profiled_as_text():
    features = reference_stats()["features"]
    text = features["0"]
    assert text["kind"] == "text" and text["count"] == 2000
    assert text["length"]["kind"] == "numeric" and 4 <= text["length"]["mean"] <= 7
    vocabulary = text["vocabulary"]
    assert vocabulary["frequencies"]["the"] == max(vocabulary["frequencies"].values())
    assert vocabulary["other"] == 0 and len(vocabulary["frequencies"]) < reference.TOP_TOKENS
    # Short labels stay categorical; the input example of a text model (a list of strings)
    # is one column with a row per string.
    short = reference.compute(pd.DataFrame({"c": ["red", "blue"] * 50}), source="x")
    assert short["features"]["c"]["kind"] == "categorical"
    frame = reference.frame_from_request({"inputs": ["hello world", "a second sentence"]})
    assert frame.shape == (2, 1)
    assert reference.compute(frame, source="input_example")["features"]["0"]["kind"] == "text"


def test_no_drift_on_the_same_kind_of_text():
    live = sketch(texts(1, 1500, SUPPORT))
    length, words = stats.text_drift(reference_stats()["features"]["0"],
                                     {"counts": live.counts["0"], "sample": live.samples["0"]},
                                     {"counts": live.counts["0" + stats.TOKENS]}, DEFAULTS)
    assert (length["aspect"], words["aspect"]) == ("length", "vocabulary")
    assert not length["drifted"] and not words["drifted"], (length, words)
    assert length["n"] == 1500 and words["n"] == sum(len(reference.tokens(t))
                                                     for t in texts(1, 1500, SUPPORT))


def test_longer_texts_and_a_new_vocabulary_drift():
    ref = reference_stats()["features"]["0"]
    longer = sketch(texts(2, 1500, SUPPORT, repeat=3))  # same words, three times as long
    length, words = stats.text_drift(ref, {"counts": longer.counts["0"],
                                           "sample": longer.samples["0"]},
                                     {"counts": longer.counts["0" + stats.TOKENS]}, DEFAULTS)
    expected = sps.ks_2samp(np.asarray(longer.samples["0"]), np.asarray(ref["length"]["sample"]))
    assert length["statistic"] == pytest.approx(expected.statistic)
    assert length["drifted"] and length["psi"] > 0.2
    assert not words["drifted"]  # the same words in the same proportions
    sports = sketch(texts(3, 1500, SPORTS))
    _, words = stats.text_drift(ref, {"counts": sports.counts["0"]},
                                {"counts": sports.counts["0" + stats.TOKENS]}, DEFAULTS)
    counts = sports.counts["0" + stats.TOKENS]
    assert counts[stats.OTHER] > 0.6 * sum(counts.values())  # unknown words pooled as other
    assert words["drifted"] and words["js"] > 0.5 and words["p_value"] < 1e-6


def test_embeddings_are_vectors_not_classes():
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 1, (3, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    mlflow_answer = {"predictions": vectors.tolist()}
    v2_answer = {"outputs": [{"name": "predict", "datatype": "FP32", "shape": [3, 384],
                              "data": vectors.ravel().tolist()}]}
    for answer in (mlflow_answer, v2_answer):
        assert extract.predictions_of(answer) == []
        assert np.allclose(extract.vectors_of(answer), vectors)
    assert extract.predictions_of({"predictions": [[0.2, 0.8]]}) == [1]  # probabilities: argmax
    assert extract.vectors_of({"predictions": [[0.1] * 10]}) == []  # sums to 1: probabilities


def make_text_deployment(team, engineer) -> Deployment:
    model = RegisteredModel.objects.create(name="minilm", team=team, created_by=engineer)
    version = ModelVersion.objects.create(model=model, version=1, status="ready",
                                          source_format="mlflow",
                                          flavor="sentence_transformers",
                                          reference_stats=reference_stats())
    deployment = Deployment.objects.create(name="minilm-prod", team=team, model=model,
                                           version=version, revision=1, status="healthy")
    Revision.objects.create(deployment=deployment, number=1, model_version=version)
    return deployment


@pytest.fixture
def text_deployment(team, engineer):
    return make_text_deployment(team, engineer)


def text_record(ts, inputs, outputs) -> dict:
    return {"request_id": f"req-{uuid.uuid4().hex[:12]}",
            "timestamp": ts.isoformat(timespec="milliseconds"), "latency_ms": 12.0,
            "status": 200, "endpoint": "invocations", "inputs": inputs, "outputs": outputs,
            "error": None}


def text_traffic(deployment) -> None:
    """400 sports texts (the reference is support tickets) 20 minutes ago, half in each
    protocol as the replica logs them, answered with random unit vectors; rolled up."""
    rng = np.random.default_rng(4)
    t0 = minutes_ago(20)
    records = []
    for i, chunk in enumerate(np.array_split(np.array(texts(5, 400, SPORTS)), 40)):
        vectors = rng.normal(0, 1, (len(chunk), 384))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        if i % 2:
            inputs: object = {"inputs": chunk.tolist()}
            outputs: object = {"predictions": vectors.tolist()}
        else:
            inputs = [{"name": "text", "datatype": "BYTES", "shape": [len(chunk)],
                       "data": chunk.tolist()}]
            outputs = {"outputs": [{"name": "predict", "datatype": "FP32",
                                    "shape": [len(chunk), 384],
                                    "data": vectors.ravel().tolist()}]}
        records.append(text_record(t0, inputs, outputs))
    ingest_direct(deployment, records)
    roll()


def test_the_page_and_api_show_text_drift_and_vector_summaries(text_deployment, viewer):
    """Requests in both protocols, as the replica logs them: sports texts against a support
    reference drift in vocabulary; embeddings show as a norm series and a centroid cosine."""
    text_traffic(text_deployment)
    body = bearer_client(viewer).get("/api/v1/deployments/minilm-prod/drift/").json()
    features = {f["feature"]: f for f in body["features"]}
    assert set(features) == {"0 (length)", "0 (vocabulary)"}
    assert features["0 (vocabulary)"]["drifted"] and features["0 (vocabulary)"]["n"] > 1500
    assert features["0 (length)"]["n"] == 400
    assert body["drifted"] == ["0 (length)", "0 (vocabulary)"]  # sports texts are longer too

    series = services.metrics_series(deployments=[text_deployment], start=minutes_ago(60),
                                     end=minutes_ago(-1), step=60)
    predictions = series["predictions"]
    assert predictions["kind"] == "vectors" and predictions["dim"] == 384
    assert predictions["rows"] == 400 and predictions["norm_mean"] == pytest.approx(1.0)
    assert predictions["norm_std"] == pytest.approx(0.0, abs=1e-3)
    assert predictions["centroid_cosine"] < 0.2  # random directions: spread out

    client = Client()
    client.force_login(viewer)
    response = client.get("/monitoring/deployments/minilm-prod/?range=1h")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>0 (vocabulary)</code>" in html and "<code>0 (length)</code>" in html
    assert "400 output vectors of 384 numbers" in html and "mean cosine to their centroid" in html
