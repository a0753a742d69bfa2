"""ONNX models (``mlflow.onnx``): one ONNX Runtime session per replica process, fed numpy.

MLflow's pyfunc wrapper creates its session with ONNX Runtime's defaults: as many intra-op
threads as the *host* has cores (a 1-CPU container on a 32-core host spins 32 threads that
fight over one CPU) and, per call, checks the input, casts it and builds a dict. Here the
session gets ``intra_op_num_threads`` = the container's CPU limit shared among the replica's
worker processes, one inter-op thread, sequential execution and all graph optimizations; a
request's validated tensor (already in the signature's dtype) goes straight to ``run``.

The answer is what ``mlflow.pyfunc`` returns for the same tensor input: ``{output name:
array}`` (a classifier's label and probabilities as the graph emits them, ZipMap dicts
included). The fast path is used only for tensor signatures, and only when it returns exactly
pyfunc's answer on the probe batch; anything else is served by ``mlflow.pyfunc`` as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from serving import protocol
from serving.config import cpu_limit
from serving.errors import ServingError
from serving.schema import Batch, Signature, validate

log = logging.getLogger("serving.flavors.onnx")



def threads() -> int:
    """Intra-op threads per worker process: the CPU limit shared among the workers."""
    workers = int(os.environ.get("MODELPORT_WORKERS") or 0) or 1
    return max(1, cpu_limit() // workers)


def session(model_dir: str, conf: dict[str, Any], *, tuned: bool) -> Any:
    """An ``InferenceSession`` on the providers MLmodel names that exist here: ``tuned`` for
    this container (the replica's one session), else with ONNX Runtime's defaults plus the
    model's own ``onnx_session_options``, as ``mlflow.onnx`` makes it (the reference)."""
    import onnxruntime as ort  # noqa: PLC0415 - lazy: ONNX models only

    options = ort.SessionOptions()
    if tuned:
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    else:
        own = conf.get("onnx_session_options") or {}
        options.intra_op_num_threads = int(own.get("intra_op_num_threads") or 0)
        options.inter_op_num_threads = int(own.get("inter_op_num_threads") or 0)
    for key, value in ((conf.get("onnx_session_options") or {}).get("extra_session_config")
                       or {}).items():
        options.add_session_config_entry(key, value)
    wanted = conf.get("providers") or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if isinstance(wanted, str):
        wanted = [wanted]
    available = set(ort.get_available_providers())
    providers = [p for p in wanted if isinstance(p, str) and p in available]
    path = Path(model_dir) / conf.get("data", "model.onnx")
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=providers or ["CPUExecutionProvider"])


class OnnxPredictor:
    """``predict(tensor or {name: tensor})`` → ``{output: array}``, as mlflow.pyfunc gives."""

    def __init__(self, sess: Any) -> None:
        self.session = sess
        # float32 graph inputs: float64 data is cast, as mlflow.onnx does; the rest is fed as is.
        self.inputs = [(i.name, i.type == "tensor(float)") for i in sess.get_inputs()]
        self.outputs = [o.name for o in sess.get_outputs()]

    def __call__(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            feed = {name: _cast(np.asarray(data[name]), f32) for name, f32 in self.inputs}
        else:
            name, f32 = self.inputs[0]
            feed = {name: _cast(data, f32)}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))


def _cast(array: np.ndarray, float32: bool) -> np.ndarray:
    return array.astype(np.float32) if float32 and array.dtype == np.float64 else array


def load(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> Any:
    """The fast path for a tensor-signature ONNX model with one session, or None."""
    from serving.loader import LoadedModel  # noqa: PLC0415 - serving.loader imports this package

    if signature.kind != "tensor":
        return None
    conf = mlmodel["flavors"]["onnx"]
    predictor = OnnxPredictor(session(model_dir, conf, tuned=True))
    model = LoadedModel(model_dir=model_dir, mlmodel=mlmodel, signature=signature,
                        flavor="onnx", input_mode="tensor", predict_fn=predictor,
                        info={"fast_path": "onnxruntime-session",
                              "intra_op_num_threads": threads(),
                              "providers": predictor.session.get_providers()})
    probe = probe_batch(model_dir, signature)
    if probe is None:
        return None
    # The pyfunc answer: a session built as mlflow.onnx builds it, fed as it feeds it.
    reference = OnnxPredictor(session(model_dir, conf, tuned=False))
    try:
        want, got = reference(probe.tensor), model.predict(probe)
    except Exception:
        log.info("ONNX fast path failed on the probe batch: not used", exc_info=True)
        return None
    if not equal(want, got):
        log.info("ONNX fast path differs from mlflow.pyfunc on the probe batch: not used")
        return None
    return model


def probe_batch(model_dir: str, signature: Signature) -> Batch | None:
    """The model's serving input example as a validated batch, else zeros of the signature's
    shape (two rows); None when neither can be built."""
    example = Path(model_dir) / "serving_input_example.json"
    try:
        if example.is_file():
            table, _, _ = protocol.parse_mlflow_json(example.read_bytes())
            return validate(table, signature)
        tensors = {t.name or "": np.zeros([2, *(max(1, d) for d in t.shape[1:])], t.dtype)
                   for t in signature.tensors}
        if len(tensors) == 1:
            return Batch(n_rows=2, tensor=next(iter(tensors.values())))
        return Batch(n_rows=2, tensor=tensors)
    except (ServingError, OSError, ValueError, TypeError):
        log.info("no usable probe batch for the ONNX fast path", exc_info=True)
        return None


def equal(want: Any, got: Any) -> bool:
    """Exactly the same outputs: names, order, dtypes, shapes and values (ZipMap dicts too)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and list(want) == list(got) \
            and all(equal(want[k], got[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) \
            and all(equal(a, b) for a, b in zip(want, got, strict=True))
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and want.dtype == got.dtype \
            and np.array_equal(want, got)
    return bool(want == got)
