"""The ONNX fast path and the custom-pyfunc explanation, in process (no Docker: the real path
is tests/flavors/test_onnx.py and test_pyfunc.py).

The fast path must be invisible except in cost: for every model here it returns exactly what
``mlflow.pyfunc`` returns on the same tensor (names, dtypes, shapes, values — ZipMap dicts
too), and a model it cannot vouch for is left to ``mlflow.pyfunc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.onnx
import mlflow.pyfunc
import numpy as np
import onnxruntime as ort
import pytest
from mlflow.models import infer_signature
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving import flavors, protocol
from serving.flavors import onnx as onnx_flavor
from serving.loader import load
from serving.schema import Batch

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)


def _outputs(onx: Any, rows: np.ndarray) -> dict[str, Any]:
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"X": rows}), strict=True))


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx-fast")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)
    reg = make_pipeline(StandardScaler(), Ridge()).fit(X, X[:, 0] + Y)
    models = {"classifier": to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}),
              "zipmap": to_onnx(clf, X[:1]), "regressor": to_onnx(reg, X[:1])}
    paths = {}
    for name, onx in models.items():
        paths[name] = root / name
        # ZipMap's list of dicts has no output schema: inputs only, as infer_signature allows.
        signature = infer_signature(X[:3], None if name == "zipmap" else _outputs(onx, X[:3]))
        mlflow.onnx.save_model(onx, str(paths[name]), signature=signature, input_example=X[:3])
    paths["unsigned"] = root / "unsigned"
    mlflow.onnx.save_model(models["regressor"], str(paths["unsigned"]))
    return paths


@pytest.mark.parametrize("name", ["classifier", "zipmap", "regressor"])
def test_onnx_fast_path_answers_exactly_what_pyfunc_does(onnx_models, name) -> None:
    model = load(str(onnx_models[name]))
    assert (model.flavor, model.input_mode) == ("onnx", "tensor")
    assert model.info["fast_path"] == "onnxruntime-session"
    reference = mlflow.pyfunc.load_model(str(onnx_models[name]))
    for rows in (X[:1], X[::3], np.random.default_rng(1).normal(5, 3, (64, 4))):
        tensor = rows.astype(np.float32)
        want = reference.predict(tensor)
        got = model.predict(Batch(n_rows=len(rows), tensor=tensor))
        assert onnx_flavor.equal(want, got)
        assert protocol.encode_predictions(got) == protocol.encode_predictions(want)
    # float64 numbers (JSON's) reach a float32 graph cast, as mlflow.onnx casts them.
    wide = model.predict(Batch(n_rows=2, tensor=X[:2].astype(np.float64)))
    assert onnx_flavor.equal(wide, reference.predict(X[:2]))


def test_onnx_without_a_signature_is_left_to_pyfunc(onnx_models) -> None:
    model = load(str(onnx_models["unsigned"]))
    assert (model.flavor, model.input_mode) == ("onnx", "pyfunc")


def test_onnx_threads_are_the_cpu_limit_shared_among_workers(monkeypatch) -> None:
    monkeypatch.setattr(onnx_flavor, "cpu_limit", lambda: 4)
    monkeypatch.delenv("MODELPORT_WORKERS", raising=False)
    assert onnx_flavor.threads() == 4
    monkeypatch.setenv("MODELPORT_WORKERS", "2")
    assert onnx_flavor.threads() == 2
    monkeypatch.setenv("MODELPORT_WORKERS", "8")
    assert onnx_flavor.threads() == 1


def test_custom_pyfunc_missing_module_is_explained() -> None:
    mlmodel = {"flavors": {"python_function": {"loader_module": "mlflow.pyfunc.model",
                                               "python_model": "python_model.pkl"}}}
    assert flavors.flavor_of(mlmodel) == "python_function"
    try:
        try:
            raise ModuleNotFoundError("No module named 'scorer'", name="scorer")
        except ModuleNotFoundError as inner:
            raise RuntimeError("could not load the model") from inner
    except RuntimeError as exc:
        message = flavors.explain(exc, mlmodel)
    assert message is not None
    assert "module 'scorer'" in message and "code_paths=['scorer.py']" in message
    nested = flavors.explain(ModuleNotFoundError(name="team_pkg.models"), mlmodel)
    assert nested is not None and "code_paths=['team_pkg']" in nested
    assert flavors.explain(ValueError("bad pickle"), mlmodel) is None
    # Framework flavors keep their own modules: a scikit-learn model is not "pyfunc".
    sklearn = {"flavors": {"sklearn": {}, "python_function": {"loader_module": "mlflow.sklearn"}}}
    assert flavors.flavor_of(sklearn) is None
