"""ONNX models on the real path (issue 19): scikit-learn pipelines converted with skl2onnx,
saved with stock ``mlflow.onnx``, uploaded through the API, validated in the Docker sandbox
and served through the gateway in both protocols; answers equal ONNX Runtime's own on the
same rows (and scikit-learn's labels). Both models keep mlflow.onnx's default requirements,
so the module builds one image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.onnx
import numpy as np
import onnxruntime as ort
import pytest
from mlflow.models import infer_signature
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.flavors.conftest import flavor_test

pytestmark = flavor_test

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
ROWS = X[[0, 50, 100, 149, 77]]  # one row of each class, plus two borderline ones


def _local_outputs(onx: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX Runtime's own answer, in this process, on the same rows."""
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: rows}),
                    strict=True))


def _save(onx: Any, example: np.ndarray, path: Path) -> Path:
    """As a user does: signature from the example and ONNX Runtime's outputs on it; mlflow.onnx's
    default requirements."""
    signature = infer_signature(example, _local_outputs(onx, example))
    mlflow.onnx.save_model(onx, str(path), signature=signature, input_example=example)
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Any, Any, Path]:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)
    # zipmap off: probabilities as a [n, 3] tensor (what a tensor protocol can carry).
    onx = to_onnx(pipeline, X[:1], options={id(pipeline): {"zipmap": False}})
    return pipeline, onx, _save(onx, X[:3], tmp_path_factory.mktemp("onnx") / "classifier")


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> tuple[Any, Any, Path]:
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=0.5)).fit(X[:, 1:], X[:, 0])
    onx = to_onnx(pipeline, X[:1, 1:])
    return pipeline, onx, _save(onx, X[:3, 1:], tmp_path_factory.mktemp("onnx") / "regressor")


def _v2_outputs(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in answer["outputs"]}


def test_onnx_classifier_through_the_gateway_in_both_protocols(serve, classifier) -> None:
    pipeline, onx, model_dir = classifier
    want = _local_outputs(onx, ROWS)
    assert want["label"].tolist() == pipeline.predict(ROWS).tolist()
    served = serve(model_dir, model="onnx-iris")
    # The sandbox loaded it through the ONNX fast path (pyfunc would say "pyfunc").
    assert served.version.validation.get("input_mode") == "tensor", served.version.validation

    # MLflow protocol: the float tensor [-1, 4] as `instances` and as `inputs`.
    for key in ("instances", "inputs"):
        got = served.invocations({key: ROWS.tolist()})["predictions"]
        assert got["label"] == want["label"].tolist()
        np.testing.assert_array_equal(np.asarray(got["probabilities"], np.float32),
                                      want["probabilities"])
    # Bad input: a clear 400 naming the shape.
    bad = served.invocations({"inputs": [[1.0, 2.0, 3.0]]}, status=400)
    assert "expected shape [-1, 4]" in bad["message"], bad

    # Open Inference Protocol v2: one FP32 input; label INT64 and probabilities FP32 back.
    answer = served.infer([{"name": "input", "shape": list(ROWS.shape), "datatype": "FP32",
                            "data": ROWS.ravel().tolist()}])
    outputs = _v2_outputs(answer)
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == want["label"].tolist()
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [len(ROWS), 3]
    np.testing.assert_array_equal(
        np.asarray(outputs["probabilities"]["data"], np.float32).reshape(len(ROWS), 3),
        want["probabilities"])
    meta = served.metadata()
    assert meta["platform"] == "mlflow_onnx", meta
    assert meta["inputs"][0]["datatype"] == "FP32" and meta["inputs"][0]["shape"] == [-1, 4]


def test_onnx_regressor_through_the_gateway_in_both_protocols(serve, regressor) -> None:
    pipeline, onx, model_dir = regressor
    rows = ROWS[:, 1:]
    want = _local_outputs(onx, rows)
    (name,) = want
    np.testing.assert_allclose(want[name].ravel(), pipeline.predict(rows), rtol=1e-5)
    served = serve(model_dir, model="onnx-ridge")

    got = served.invocations({"instances": rows.tolist()})["predictions"]
    np.testing.assert_array_equal(np.asarray(got[name], np.float32), want[name])
    answer = served.infer([{"name": "x", "shape": list(rows.shape), "datatype": "FP32",
                            "data": rows.tolist()}])
    output = _v2_outputs(answer)[name]
    assert output["datatype"] == "FP32" and output["shape"] == list(want[name].shape)
    np.testing.assert_array_equal(
        np.asarray(output["data"], np.float32).reshape(want[name].shape), want[name])
