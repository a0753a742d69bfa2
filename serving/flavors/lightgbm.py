"""LightGBM models (``mlflow.lightgbm``): the booster's ``predict`` on the request's matrix with
the container's thread count.

MLflow's pyfunc wrapper calls the model's ``predict`` on a DataFrame built per request, which
LightGBM converts back to a matrix (pandas checks, categorical mapping) and predicts on with
OpenMP's default thread count, every core of the *host*. Here the model is loaded as
``mlflow.lightgbm`` loads it (a native ``Booster`` from its text file; a scikit-learn wrapper
through the same skops/pickle loader as scikit-learn models) without importing mlflow, and a
request's validated float matrix goes to ``predict(x, num_threads=N)`` (N: the CPU limit shared
among the replica's workers): probabilities for a native binary booster, classes for an
``LGBMClassifier``, as pyfunc gives. Used only for numeric inputs in the booster's feature
order, and only when it returns exactly the pyfunc answer (values, dtype and shape) on the
probe batch; otherwise ``mlflow.pyfunc`` serves the model.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from serving.flavors import _trees
from serving.loader import FEATURE_NAME_WARNING, LoadedModel, load_sklearn_estimator
from serving.schema import Signature

BOOSTER = "lightgbm.basic.Booster"


def load(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> LoadedModel | None:
    import lightgbm as lgb  # noqa: PLC0415 - lazy: LightGBM models only

    conf = mlmodel["flavors"]["lightgbm"]
    class_name = conf.get("model_class", BOOSTER)
    path = Path(model_dir) / conf["data"]
    num_threads = _trees.threads()
    model: Any
    if class_name == BOOSTER:
        model = lgb.Booster(model_file=str(path))
        booster = model
    else:
        model = load_sklearn_estimator(model_dir, {
            "pickled_model": conf["data"],
            "serialization_format": conf.get("serialization_format", "cloudpickle"),
            "skops_trusted_types": conf.get("skops_trusted_types")})
        if not isinstance(model, lgb.LGBMModel):
            return None
        booster = model.booster_
        if hasattr(model, "feature_names_in_"):
            # Fitted on a DataFrame; the matrix is in the same column order (checked below).
            warnings.filterwarnings("ignore", message=FEATURE_NAME_WARNING, category=UserWarning)
    names = booster.feature_name()
    if names == [f"Column_{i}" for i in range(len(names))]:
        names = None  # trained on an array: no names to keep in order
    if not _trees.matrix_ok(signature, names):
        return None
    reference = model.predict
    fast: Any
    if class_name == BOOSTER:

        def fast(x: np.ndarray) -> Any:
            return booster.predict(x, num_threads=num_threads)
    else:
        model.set_params(n_jobs=num_threads)  # the wrapper passes it on as num_threads
        fast = model.predict

    if not _trees.same_answer(model_dir, signature, reference, fast):
        return None
    return _trees.loaded(model_dir, mlmodel, signature, "lightgbm", fast, reference,
                         {"model_class": class_name, "fast_path": "lightgbm-matrix",
                          "num_threads": num_threads})


def _installed() -> str | None:
    try:
        return metadata.version("lightgbm")
    except metadata.PackageNotFoundError:
        return None


def explain(exc: BaseException, mlmodel: dict[str, Any]) -> str | None:
    """Missing lightgbm, or a model saved by another LightGBM version than the image's."""
    saved = (mlmodel.get("flavors", {}).get("lightgbm") or {}).get("lgb_version")
    if not isinstance(exc, ImportError) and not _trees.raised_in(exc, "lightgbm"):
        return None
    if isinstance(exc, OSError) and "libgomp" in str(exc):
        return ("LightGBM needs the OpenMP runtime (Debian's libgomp1) in the serving base image, "
                "which lacks it: a platform engineer rebuilds it with "
                "`platform/images/build-base.sh --force` (it includes libgomp1)")
    return _trees.explain_tree(exc, module="lightgbm", label="LightGBM", saved=saved,
                               installed=_installed(), pin="lightgbm")
