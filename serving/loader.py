"""Load one MLflow model directory and expose ``predict(batch)``.

scikit-learn flavor models are loaded directly (skops / pickle / cloudpickle, as MLflow does)
and called on a numpy array in signature column order when that gives the same answer as a
DataFrame; otherwise a DataFrame is built. A framework with a module in ``serving.flavors``
gets its fast path there; other flavors go through ``mlflow.pyfunc``, imported only then.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serving import fastimport, protocol
from serving import flavors as flavor_modules
from serving.errors import ServingError
from serving.schema import Batch, Rows, Signature, validate

log = logging.getLogger("serving.loader")

FEATURE_NAME_WARNING = "X does not have valid feature names"


class ModelLoadError(RuntimeError):
    pass


def read_mlmodel(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "MLmodel"
    if not path.is_file():
        raise ModelLoadError(f"{path} not found: not an MLflow model directory")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as f:
        doc = yaml.load(f, Loader=loader)  # noqa: S506 - safe loader
    if not isinstance(doc, dict) or "flavors" not in doc:
        raise ModelLoadError(f"{path} has no 'flavors' section")
    return doc


@dataclass
class LoadedModel:
    """A loaded model plus what the request path needs to call it."""

    model_dir: str
    mlmodel: dict[str, Any]
    signature: Signature
    flavor: str
    input_mode: str  # "ndarray" | "frame" | "pyfunc"
    predict_fn: Any
    load_seconds: float = 0.0
    probe_seconds: float = 0.0
    accepts_params: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    native_predict_fn: Any = None  # the estimator's own method, when predict_fn is a fast path

    def predict(self, batch: Batch, params: dict[str, Any] | None = None) -> Any:
        if self.input_mode == "ndarray":
            return self.predict_fn(batch.as_matrix())
        if self.input_mode == "frame":
            return self.predict_fn(batch.as_frame())
        data: Any
        data = batch.tensor if batch.tensor is not None \
            else schema_typed_frame(batch.as_frame(), self.signature)
        if params and self.accepts_params:
            return self.predict_fn(data, params=params)
        return self.predict_fn(data)


# Signature types narrower than what JSON numbers parse to.
_NARROW = {"float": np.float32, "integer": np.int32}


def schema_typed_frame(frame: Any, signature: Signature) -> Any:
    """The frame with ``float``/``integer`` signature columns in float32/int32, as MLflow's
    scoring server reads a JSON body against the schema: pyfunc's own schema enforcement
    refuses float64 for a float32 column ("Can not safely convert float64 to float32").
    Integers outside int32 stay as they are (the enforcement then names the column)."""
    if signature.kind != "columns":
        return frame
    for column in signature.columns:
        dtype = _NARROW.get(column.type)
        if dtype is None or column.name not in frame.columns:
            continue
        values = frame[column.name]
        if values.dtype == dtype or values.dtype.kind not in "fi":
            continue
        if values.dtype.kind == "i" and dtype is np.int32 and len(values) and (
                values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
            continue
        frame[column.name] = values.astype(dtype)
    return frame


def load(model_dir: str) -> LoadedModel:
    """Load the model, choose the fastest correct input mode, then freeze the GC."""
    started = time.perf_counter()
    # Importing the model's libraries allocates a great many objects that all stay alive: the
    # cyclic GC would only re-scan them (measured: 5-8 % of the import CPU in the container).
    # Off while loading (process-wide; /health keeps answering); at the end everything is moved
    # to the permanent generation without a full collection first: in the container that
    # collection took 0.1 s to find ~1,100 unreachable objects (a few hundred kB kept).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with fastimport.import_replay():
            mlmodel = read_mlmodel(model_dir)
            signature = Signature.from_mlmodel(mlmodel)
            flavors = mlmodel["flavors"]
            _add_code_paths(model_dir, flavors)
            if "sklearn" in flavors and _sklearn_is_pyfunc_default(flavors):
                model = _load_sklearn(model_dir, mlmodel, signature)
            else:
                model = flavor_modules.load_native(model_dir, mlmodel, signature) \
                    or _load_pyfunc(model_dir, mlmodel, signature)
        model.load_seconds = time.perf_counter() - started
        gc.freeze()
    finally:
        if gc_was_enabled:
            gc.enable()
    return model


def _add_code_paths(model_dir: str, flavors: dict[str, Any]) -> None:
    for conf in flavors.values():
        code = conf.get("code") if isinstance(conf, dict) else None
        if code:
            path = str(Path(model_dir) / code)
            if path not in sys.path:
                sys.path.insert(0, path)


def _sklearn_is_pyfunc_default(flavors: dict[str, Any]) -> bool:
    pyfunc = flavors.get("python_function") or {}
    return pyfunc.get("loader_module", "mlflow.sklearn") == "mlflow.sklearn"


def _pickle_allowed() -> bool:
    value = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower()
    return value in ("true", "1")


def load_sklearn_estimator(model_dir: str, conf: dict[str, Any]) -> Any:
    """Deserialize the estimator named by ``flavors.sklearn`` exactly as mlflow.sklearn does."""
    if not _pickle_allowed():
        raise ModelLoadError("MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false: refusing to load")
    path = Path(model_dir) / conf.get("pickled_model", "model.pkl")
    fmt = conf.get("serialization_format", "pickle")
    fastimport.prepare_sklearn(fmt)
    if fmt == "skops":
        import skops.io  # noqa: PLC0415 - lazy: ~2 s, skops models only, after prepare_sklearn

        return skops.io.load(path, trusted=conf.get("skops_trusted_types") or None)
    with path.open("rb") as f:
        if fmt == "pickle":
            return pickle.load(f)  # noqa: S301 - model artifacts are trusted code by design
        if fmt == "cloudpickle":
            import cloudpickle  # noqa: PLC0415 - lazy: cloudpickle models only

            return cloudpickle.load(f)
    raise ModelLoadError(f"unknown sklearn serialization_format {fmt!r}")


def _load_sklearn(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> LoadedModel:
    flavors = mlmodel["flavors"]
    estimator = load_sklearn_estimator(model_dir, flavors["sklearn"])
    fn_name = (flavors.get("python_function") or {}).get("predict_fn") or "predict"
    fn = getattr(estimator, fn_name)
    mode = _choose_input_mode(model_dir, estimator, fn, signature)
    info = {"estimator": type(estimator).__name__, "predict_fn": fn_name}
    native = fn
    if mode == "ndarray":
        fast = _sequential_forest(estimator, fn_name)
        if fast is not None and _same_predictions(model_dir, signature, fn, fast):
            fn = fast
            info["fast_path"] = "sequential-forest"
    model = LoadedModel(
        model_dir=model_dir,
        mlmodel=mlmodel,
        signature=signature,
        flavor="sklearn",
        input_mode=mode,
        predict_fn=fn,
        info=info,
        native_predict_fn=native,
    )
    model.probe_seconds = _time_probe(model, model_dir)
    return model


def _choose_input_mode(model_dir: str, estimator: Any, fn: Any, signature: Signature) -> str:
    """ndarray when it predicts exactly what a DataFrame would; DataFrame otherwise."""
    if signature.kind == "tensor":
        return "ndarray"
    if signature.kind != "columns" or not signature.all_numeric:
        return "frame"
    probe = probe_batch(model_dir, signature)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from_frame = fn(probe.as_frame())
            from_array = fn(probe.as_matrix())
        same = np.array_equal(np.asarray(from_frame), np.asarray(from_array))
    except Exception:
        log.info("estimator does not accept a plain array; using DataFrames", exc_info=True)
        return "frame"
    if not same:
        return "frame"
    if hasattr(estimator, "feature_names_in_"):
        # Fitted on a DataFrame; the array is in the same column order, so the check is moot.
        warnings.filterwarnings("ignore", message=FEATURE_NAME_WARNING, category=UserWarning)
    return "ndarray"


def _sequential_forest(estimator: Any, fn_name: str) -> Any | None:
    """A single-output forest's ``predict``/``predict_proba`` as a plain loop over its trees.

    scikit-learn predicts with a forest through ``Parallel(...)(delayed(...) for each tree)``
    even with ``n_jobs=1``; its ``delayed`` wrapper re-enters ``config_context`` and re-applies
    every warning filter around each tree, and each tree re-checks that it is fitted: for 100
    trees and one row that is ~15x the cost of walking the trees. This keeps the forest's own
    input validation (once) and sums each tree's ``tree_.predict`` in estimator order with the
    arithmetic of ``n_jobs=1``. It is used only when it reproduces the estimator's own output
    exactly on the probe batches (``_same_predictions``); any other estimator, a subclass that
    overrides these methods, or another scikit-learn layout → None (the estimator's method).
    """
    try:
        from sklearn.ensemble._forest import ForestClassifier, ForestRegressor  # noqa: PLC0415 - optional: pyfunc models may lack sklearn
    except ImportError:
        return None
    if getattr(estimator, "n_outputs_", None) != 1:
        return None
    validate_x = getattr(estimator, "_validate_X_predict", None)
    try:
        trees = [e.tree_ for e in estimator.estimators_]
    except AttributeError:
        return None
    if not trees or validate_x is None:
        return None
    cls = type(estimator)
    if isinstance(estimator, ForestClassifier) \
            and cls.predict_proba is ForestClassifier.predict_proba:
        classes = estimator.classes_
        n_classes = int(estimator.n_classes_)

        def predict_proba(x: Any) -> Any:
            x = validate_x(x)
            out = np.zeros((x.shape[0], n_classes), dtype=np.float64)
            for tree in trees:
                out += tree.predict(x)[:, :n_classes]
            out /= len(trees)
            return out

        def predict(x: Any) -> Any:
            return classes.take(np.argmax(predict_proba(x), axis=1), axis=0)

        if fn_name == "predict_proba":
            return predict_proba
        if fn_name == "predict" and cls.predict is ForestClassifier.predict:
            return predict
        return None
    if isinstance(estimator, ForestRegressor) and fn_name == "predict" \
            and cls.predict is ForestRegressor.predict:

        def predict_regression(x: Any) -> Any:
            x = validate_x(x)
            y_hat = np.zeros(x.shape[0], dtype=np.float64)
            for tree in trees:
                y_hat += tree.predict(x)[:, 0]
            y_hat /= len(trees)
            return y_hat

        return predict_regression
    return None


def _same_predictions(model_dir: str, signature: Signature, reference: Any, fast: Any) -> bool:
    """Whether `fast` returns exactly what `reference` does on the probe batches."""
    if signature.kind != "columns":
        return False
    probe = probe_batch(model_dir, signature).as_matrix()
    # Plus varied rows, so that the trees' paths differ from the example's.
    varied = np.random.default_rng(0).normal(0.0, 1.0, (16, probe.shape[1])) * (
        np.abs(probe).max(axis=0) + 1.0)
    rows = [probe, probe[:1], varied.astype(probe.dtype, copy=False)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x in rows:
                want, got = np.asarray(reference(x)), np.asarray(fast(x))
                if want.dtype != got.dtype or not np.array_equal(want, got):
                    log.info("fast path differs from the estimator's own predict: not used")
                    return False
    except Exception:
        log.info("fast path failed on the probe batch: not used", exc_info=True)
        return False
    return True


def probe_batch(model_dir: str, signature: Signature) -> Batch:
    """A small valid batch: the model's serving input example, or zeros per column."""
    example = Path(model_dir) / "serving_input_example.json"
    if example.is_file():
        try:
            table, _, _ = protocol.parse_mlflow_json(example.read_bytes())
            return validate(table, signature)
        except (ServingError, OSError):
            log.info("serving input example unusable for probing", exc_info=True)
    row = [0.0 if c.type not in ("long", "integer") else 0 for c in signature.columns]
    return validate(Rows(rows=[row, row], columns=signature.names), signature, maybe_bools=False)


def _time_probe(model: LoadedModel, model_dir: str) -> float:
    if model.signature.kind == "none":
        return 0.0
    try:
        if model.signature.kind != "columns":
            return 0.0
        batch = probe_batch(model_dir, model.signature)
        timings = []
        for _ in range(5):
            t = time.perf_counter()
            model.predict(batch)
            timings.append(time.perf_counter() - t)
        return sorted(timings)[len(timings) // 2]
    except Exception:
        log.info("probe prediction failed", exc_info=True)
        return 0.0


def _load_pyfunc(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> LoadedModel:
    import mlflow.pyfunc  # noqa: PLC0415 - lazy: ~2 s of import, pyfunc flavors only

    pyfunc_model = mlflow.pyfunc.load_model(model_dir)
    accepts_params = "params" in inspect.signature(pyfunc_model.predict).parameters
    flavor = next((f for f in mlmodel["flavors"] if f != "python_function"), "python_function")
    return LoadedModel(
        model_dir=model_dir,
        mlmodel=mlmodel,
        signature=signature,
        flavor=flavor,
        input_mode="pyfunc",
        predict_fn=pyfunc_model.predict,
        accepts_params=accepts_params,
        info={"loader": "mlflow.pyfunc"},
    )
