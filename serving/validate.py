"""Validate an uploaded model inside the sandbox: ``python -m serving.validate JOB_DIR``.

The platform runs this in a locked-down container (no network, read-only root, non-root, no
capabilities) or, where Docker is absent, a resource-limited subprocess — never in its web or
worker processes, because loading a model runs its pickled code.

Layout::

    JOB_DIR/input/job.json   {"format": "mlflow"|"sklearn", "input_example": {...} | null}
    JOB_DIR/input/model/     an MLflow model directory            (format "mlflow")
    JOB_DIR/input/model.pkl  a joblib / pickle scikit-learn file  (format "sklearn")
    JOB_DIR/output/          writable: result.json, and model/ when a pickle was converted

The result is always written (``{"ok": false, "stage", "error"}`` on failure); the exit code is 0
unless the job itself is unreadable.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson


def _frame_from_example(example: dict[str, Any]):
    import pandas as pd  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json

    if "dataframe_split" in example:
        split = example["dataframe_split"]
        return pd.DataFrame(split.get("data", []), columns=split.get("columns"))
    if "dataframe_records" in example:
        return pd.DataFrame(example["dataframe_records"])
    raise ValueError("the input example for a scikit-learn pickle must be a dataframe_split or "
                     "dataframe_records body (named columns)")


def _load_estimator(path: Path) -> tuple[Any, str]:
    """Unpickle (joblib or pickle) and report the scikit-learn version it was made with."""
    import joblib  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json
    import sklearn  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json
    from sklearn.exceptions import InconsistentVersionWarning  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json

    original: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = joblib.load(path)  # joblib reads plain pickles too
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            original = warning.message.original_sklearn_version
    if not hasattr(estimator, "predict"):
        raise TypeError(f"the file holds a {type(estimator).__name__}, not a scikit-learn "
                        "estimator with predict()")
    return estimator, original or sklearn.__version__


def _pinned_requirements(sklearn_version: str) -> list[str]:
    """This sandbox's scikit-learn stack, pinned, with scikit-learn at the pickle's version.

    The image has mlflow-skinny; the model records ``mlflow`` of the same version.
    """
    pins = [f"scikit-learn=={sklearn_version}"]
    for name, recorded in (("mlflow-skinny", "mlflow"), ("numpy", "numpy"), ("pandas", "pandas"),
                           ("scipy", "scipy"), ("skops", "skops")):
        try:
            pins.append(f"{recorded}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            if name == "mlflow-skinny":  # running outside the image: the full mlflow package
                pins.append(f"mlflow=={metadata.version('mlflow')}")
    return pins


def _convert_sklearn(job_dir: Path, example: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    import mlflow.sklearn  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json
    from mlflow.models import infer_signature  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json

    estimator, made_with = _load_estimator(job_dir / "input" / "model.pkl")
    frame = _frame_from_example(example)
    predictions = estimator.predict(frame)
    signature = infer_signature(frame, predictions)
    out = job_dir / "output" / "model"
    mlflow.sklearn.save_model(
        estimator, str(out), signature=signature, input_example=frame,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        pip_requirements=_pinned_requirements(made_with),
    )
    return out, {"sklearn_version": made_with, "estimator": type(estimator).__name__}


def say(message: str) -> None:
    """One progress line on stdout: the platform streams the sandbox's output, line by line,
    to the version's log as it comes."""
    print(f"[validate] {message}", flush=True)


def run(job_dir: Path) -> dict[str, Any]:
    job = json.loads((job_dir / "input" / "job.json").read_text())
    example = job.get("input_example")
    stage = "load"
    extra: dict[str, Any] = {}
    try:
        if job["format"] == "sklearn":
            stage = "convert"
            say("converting the scikit-learn pickle into an MLflow model")
            model_dir, extra = _convert_sklearn(job_dir, example or {})
            say(f"converted a {extra.get('estimator')} made with scikit-learn "
                f"{extra.get('sklearn_version')}")
        else:
            model_dir = job_dir / "input" / "model"
        stage = "load"
        from serving import loader, protocol  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json
        from serving.schema import validate  # noqa: PLC0415 - in run()'s try: a failed import lands in result.json

        say("loading the model")
        started = time.perf_counter()
        model = loader.load(str(model_dir))
        load_seconds = time.perf_counter() - started
        say(f"loaded the {model.flavor} model in {load_seconds:.2f} s")
        sample: Any = None
        if example:
            stage = "predict"
            say("predicting the input example")
            body = orjson.dumps(example)
            table, params, _raw = protocol.parse_mlflow_json(body)
            batch = validate(table, model.signature, protocol.may_contain_bools(body))
            sample = protocol.jsonable(model.predict(batch, params))
            if hasattr(sample, "tolist"):
                sample = sample.tolist()
            if isinstance(sample, list):
                sample = sample[:5]
            say("the input example predicted fine")
        return {"ok": True, "flavor": model.flavor, "input_mode": model.input_mode,
                "load_seconds": round(load_seconds, 4), "prediction_sample": sample,
                "converted": job["format"] == "sklearn", **extra}
    except BaseException as exc:  # noqa: BLE001 - report everything, including SystemExit
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        hint = _explain(exc, job_dir, job)
        if hint:
            message = f"{hint} ({message})"
        trace = traceback.format_exc(limit=5)[-2000:]
        say(f"failed at the {stage} stage: {type(exc).__name__}: {message}")
        print(trace, flush=True)
        return {"ok": False, "stage": stage, "error": f"{type(exc).__name__}: {message}",
                "traceback": trace}


def _explain(exc: BaseException, job_dir: Path, job: dict[str, Any]) -> str | None:
    """The flavor's own plain-language reason for a failure, when it knows one."""
    if job.get("format") == "sklearn":
        return None
    try:
        from serving import flavors  # noqa: PLC0415 - in the failure path only
        from serving.loader import read_mlmodel  # noqa: PLC0415 - in the failure path only

        return flavors.explain(exc, read_mlmodel(job_dir / "input" / "model"))
    except Exception:  # noqa: BLE001 - an explanation must never hide the failure itself
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m serving.validate JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(args[0])
    result = run(job_dir)
    (job_dir / "output" / "result.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
