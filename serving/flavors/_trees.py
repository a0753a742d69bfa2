"""What the gradient-boosted tree flavors (``xgboost``, ``lightgbm``) share: when a plain
numpy matrix may stand in for the DataFrame ``mlflow.pyfunc`` builds, how many threads a
booster gets, the check that a fast path answers exactly what pyfunc would, and the
plain-language reasons for their usual load failures."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serving.config import cpu_limit
from serving.loader import LoadedModel, probe_batch
from serving.schema import Signature

log = logging.getLogger("serving.flavors")


def threads() -> int:
    """Booster threads per worker process: the container's CPU limit shared among the
    replica's workers (the libraries' default is every core of the *host*)."""
    workers = int(os.environ.get("MODELPORT_WORKERS") or 0) or 1
    return max(1, cpu_limit() // workers)


def matrix_ok(signature: Signature, feature_names: Sequence[str] | None) -> bool:
    """Whether ``batch.as_matrix()`` is the model's input: all-numeric columns (in the
    booster's own feature order when it knows names) or one 2-D numeric tensor."""
    if signature.kind == "columns":
        if not signature.all_numeric:
            return False
        return feature_names is None or list(feature_names) == signature.names
    if signature.kind == "tensor" and len(signature.tensors) == 1:
        spec = signature.tensors[0]
        return len(spec.shape) == 2 and spec.dtype.kind in "biuf"
    return False


def pyfunc_input(signature: Signature, x: np.ndarray) -> Any:
    """What ``mlflow.pyfunc`` hands the model for matrix `x`: a DataFrame for a column
    signature (``serving.loader.LoadedModel.predict``'s pyfunc mode), the array for a tensor."""
    if signature.kind != "columns":
        return x
    import pandas as pd  # noqa: PLC0415 - lazy: the probe only, pandas comes with mlflow

    return pd.DataFrame(x, columns=signature.names)


def same_answer(model_dir: str, signature: Signature, reference: Callable[[Any], Any],
                fast: Callable[[np.ndarray], Any]) -> bool:
    """Whether `fast` on the matrix returns exactly (values, dtype, shape) what `reference`
    (the pyfunc wrapper's own call) returns on its input, on the probe batch, its first row
    and 16 varied rows (so the trees take other paths than the example's)."""
    try:
        probe = np.asarray(probe_batch(model_dir, signature).as_matrix())
        spread = np.abs(probe).max(axis=0) + 1.0
        varied = np.random.default_rng(0).normal(0.0, 1.0, (16, probe.shape[1])) * spread
        if probe.dtype.kind in "biu":
            varied = np.rint(varied)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x in (probe, probe[:1], varied.astype(probe.dtype)):
                want = np.asarray(reference(pyfunc_input(signature, x)))
                got = np.asarray(fast(x))
                if want.dtype != got.dtype or want.shape != got.shape \
                        or not np.array_equal(want, got):
                    log.info("fast path differs from the pyfunc answer: not used")
                    return False
    except Exception:
        log.info("fast path failed on the probe batch: not used", exc_info=True)
        return False
    return True


def loaded(model_dir: str, mlmodel: dict[str, Any], signature: Signature, flavor: str,
           fast: Callable[[np.ndarray], Any], native: Callable[[Any], Any],
           info: dict[str, Any]) -> LoadedModel:
    return LoadedModel(model_dir=model_dir, mlmodel=mlmodel, signature=signature,
                       flavor=flavor, input_mode="ndarray", predict_fn=fast,
                       info=info, native_predict_fn=native)


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def explain_tree(exc: BaseException, *, module: str, label: str, saved: str | None,
                 installed: str | None, pin: str) -> str | None:
    """The reason a tree model failed to load, in plain words: its library is missing from the
    image, or the image has another version than the one that saved the model."""
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == module:
        want = f"{pin}=={saved}" if saved else pin
        article = "an" if label[0] in "AEIOUX" else "a"
        return (f"this is {article} {label} model but {module} is not installed in its "
                "environment: "
                f"add {want} to the model's requirements.txt")
    if not saved or not installed or saved == installed:
        return None
    newer = _version_key(saved) > _version_key(installed)
    how = ("a model file format newer than the library can read" if newer
           else "an older library than the one that saved it")
    return (f"the model was saved with {label} {saved} but its environment has {label} "
            f"{installed} ({how}): pin {pin}=={saved} in the model's requirements.txt")


def raised_in(exc: BaseException, package: str) -> bool:
    """Whether `exc` comes from `package`'s code (its class or a frame of its traceback)."""
    if type(exc).__module__.split(".")[0] == package:
        return True
    tb = exc.__traceback__
    marker = f"{os.sep}{package}{os.sep}"
    while tb is not None:
        if marker in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False
