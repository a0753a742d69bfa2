"""XGBoost models (``mlflow.xgboost``): the booster's ``inplace_predict`` on the request's matrix.

MLflow's pyfunc wrapper hands a native ``Booster`` a DataFrame wrapped in a new ``DMatrix``
per request (a copy plus the DMatrix's own bookkeeping), and a scikit-learn wrapper
(``XGBClassifier``, ``XGBRegressor`` ...) a DataFrame whose feature names it re-checks; both
run on as many threads as the *host* has cores. Here the model is loaded as ``mlflow.xgboost``
loads it (its ``model_class``, ``load_model``) without importing mlflow, its ``nthread`` is the
container's CPU limit shared among the replica's workers, and a request's validated float
matrix goes to ``Booster.inplace_predict`` (native boosters) or to the wrapper's own
``predict`` on that matrix (classes for classifiers, as pyfunc gives). Used only for numeric
inputs in the booster's feature order, and only when it returns exactly the pyfunc answer
(values, dtype and shape) on the probe batch; otherwise ``mlflow.pyfunc`` serves the model.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from serving.flavors import _trees
from serving.loader import LoadedModel
from serving.schema import Signature


def _model_class(name: str) -> Any:
    module, _, cls = name.rpartition(".")
    if module.split(".")[0] != "xgboost":
        raise ValueError(f"not an XGBoost class: {name}")
    return getattr(importlib.import_module(module), cls)


def load(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> LoadedModel | None:
    import xgboost as xgb  # noqa: PLC0415 - lazy: XGBoost models only

    conf = mlmodel["flavors"]["xgboost"]
    class_name = conf.get("model_class", "xgboost.core.Booster")
    model = _model_class(class_name)()
    model.load_model(str(Path(model_dir) / conf["data"]))
    nthread = _trees.threads()
    if isinstance(model, xgb.Booster):
        booster = model
        booster.set_param({"nthread": nthread})

        def reference(data: Any) -> Any:
            return booster.predict(xgb.DMatrix(data), validate_features=True)

        def fast(x: np.ndarray) -> Any:
            return booster.inplace_predict(x, validate_features=False)
    elif isinstance(model, xgb.XGBModel):
        model.set_params(n_jobs=nthread)
        booster = model.get_booster()
        reference = model.predict

        def fast(x: np.ndarray) -> Any:
            return model.predict(x, validate_features=False)
    else:
        return None
    if not _trees.matrix_ok(signature, booster.feature_names):
        return None
    if not _trees.same_answer(model_dir, signature, reference, fast):
        return None
    return _trees.loaded(model_dir, mlmodel, signature, "xgboost", fast, reference,
                         {"model_class": class_name, "fast_path": "xgboost-inplace",
                          "nthread": nthread})


def _installed() -> str | None:
    for dist in ("xgboost", "xgboost-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def explain(exc: BaseException, mlmodel: dict[str, Any]) -> str | None:
    """Missing xgboost, or a model saved by another XGBoost version than the image's."""
    saved = (mlmodel.get("flavors", {}).get("xgboost") or {}).get("xgb_version")
    if not isinstance(exc, ImportError) and not _trees.raised_in(exc, "xgboost"):
        return None
    return _trees.explain_tree(exc, module="xgboost", label="XGBoost", saved=saved,
                               installed=_installed(), pin="xgboost-cpu")
