"""Per-framework loaders: the fast path a framework offers instead of the generic
``mlflow.pyfunc`` call (issue 19), and plain-language reasons for its usual load failures.

Each module here handles one MLflow flavor and defines::

    def load(model_dir: str, mlmodel: dict, signature: Signature) -> LoadedModel | None
    def explain(exc: BaseException, mlmodel: dict) -> str | None      # optional

``load`` returns None when its fast path does not apply (then ``mlflow.pyfunc`` serves the
model, as before); a fast path is used only when it reproduces the pyfunc answer on the probe
batch. Modules are imported only for a model of their flavor, so a scikit-learn image never
imports a framework it lacks. Django-free, like all of ``serving``.
"""

from __future__ import annotations

import importlib
from typing import Any

# MLflow flavor name (a key of MLmodel's ``flavors``) → module of this package.
MODULES: dict[str, str] = {
    "lightgbm": "lightgbm",
    "onnx": "onnx",
    "python_function": "pyfunc",
    "pytorch": "pytorch",
    "sentence_transformers": "sentence_transformers",
    "xgboost": "xgboost",
}

# A flavor whose pyfunc loader is not ``mlflow.<flavor>``: custom PythonModel classes.
LOADERS: dict[str, str] = {"python_function": "mlflow.pyfunc.model"}


def flavor_of(mlmodel: dict[str, Any]) -> str | None:
    """The framework flavor that the model's pyfunc loader serves (None: no such module)."""
    flavors = mlmodel.get("flavors") or {}
    loader = (flavors.get("python_function") or {}).get("loader_module", "")
    for flavor in MODULES:
        own = LOADERS.get(flavor)
        if flavor in flavors and (loader == own if own else loader in (f"mlflow.{flavor}", "")):
            return flavor
    return None


def load_native(model_dir: str, mlmodel: dict[str, Any], signature: Any) -> Any:
    """The flavor module's fast-path model, or None (serve through ``mlflow.pyfunc``)."""
    flavor = flavor_of(mlmodel)
    if flavor is None:
        return None
    module = importlib.import_module(f"{__name__}.{MODULES[flavor]}")
    return module.load(model_dir, mlmodel, signature)


def explain(exc: BaseException, mlmodel: dict[str, Any] | None) -> str | None:
    """A flavor module's plain-language reason for a load or predict failure, if it knows
    one (framework version mismatch, missing custom code, CUDA-only weights on a CPU)."""
    if not mlmodel:
        return None
    flavor = flavor_of(mlmodel)
    if flavor is None:
        return None
    try:
        module = importlib.import_module(f"{__name__}.{MODULES[flavor]}")
    except ImportError:
        return None
    hook = getattr(module, "explain", None)
    return hook(exc, mlmodel) if hook else None
