"""sentence-transformers models (``mlflow.sentence_transformers``): strings in, vectors out.

The fast path calls the model's own ``encode`` on the request's strings, as MLflow's pyfunc
wrapper does, minus what the wrapper adds per request: the DataFrame built for it and MLflow's
schema enforcement (``serving.schema`` has already checked the strings). It runs under
``torch.inference_mode()`` with torch's thread pool sized to this worker's share of the
container's CPU limit (the runtime's ``OMP_NUM_THREADS`` is the whole limit, which each of the
server's workers, one per CPU, would otherwise take: oversubscribed past one CPU). The whole
request is tokenized in batches of ``BATCH_SIZE`` (MLflow's, so the padding and therefore the
floats are the same), and the model is called on a plain object array of strings, so the
server's opportunistic batching stacks concurrent requests into one ``encode``.

Replicas have no network: the Hugging Face libraries are told so (``HF_HUB_OFFLINE``), so a
model saved without its files fails at load time with a reason instead of a connection timeout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from serving import config
from serving.loader import LoadedModel, probe_batch
from serving.schema import Signature

log = logging.getLogger("serving.flavors.sentence_transformers")

BATCH_SIZE = 32  # SentenceTransformer.encode's default, which mlflow's pyfunc wrapper uses
DATA_DIR = "model.sentence_transformer"  # what mlflow.sentence_transformers.save_model writes
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def threads() -> int:
    """Torch threads for one worker: the CPU limit shared among the server's workers."""
    limit = config.cpu_limit()
    try:
        workers = int(os.environ.get("MODELPORT_WORKERS") or limit)
    except ValueError:
        workers = limit
    return max(1, limit // max(1, workers))


def load(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> Any:
    """The model behind ``encode``, or None when the signature is not one string column."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    if signature.kind != "columns" or len(signature.columns) != 1 \
            or signature.columns[0].type != "string":
        return None
    import torch  # noqa: PLC0415 - lazy: ~1 s, sentence-transformers models only
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - lazy: ~2 s

    torch.set_num_threads(threads())
    data = (mlmodel["flavors"].get("python_function") or {}).get("data") or DATA_DIR
    model = SentenceTransformer(str(Path(model_dir) / data), device="cpu",
                                trust_remote_code=True)  # as mlflow loads it

    def predict(matrix: np.ndarray) -> np.ndarray:
        texts = matrix[:, 0].tolist() if matrix.ndim == 2 else list(matrix)
        with torch.inference_mode():
            return model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True,
                                show_progress_bar=False)

    if not _same_as_pyfunc(model, predict, model_dir, signature):
        return None
    return LoadedModel(model_dir=model_dir, mlmodel=mlmodel, signature=signature,
                       flavor="sentence_transformers", input_mode="ndarray",
                       predict_fn=predict,
                       info={"fast_path": "encode", "torch_threads": torch.get_num_threads(),
                             "batch_size": BATCH_SIZE})


def _same_as_pyfunc(model: Any, predict: Any, model_dir: str, signature: Signature) -> bool:
    """Whether the fast path answers exactly what mlflow's pyfunc wrapper (around the same
    loaded model) answers on the probe batch."""
    from mlflow.sentence_transformers import (  # noqa: PLC0415 - lazy: the reference, once
        _SentenceTransformerModelWrapper,
    )

    batch = probe_batch(model_dir, signature)
    try:
        want = np.asarray(_SentenceTransformerModelWrapper(model).predict(batch.as_frame()))
        got = predict(batch.as_matrix())
    except Exception:
        log.info("fast path failed on the probe batch: not used", exc_info=True)
        return False
    if want.dtype != got.dtype or not np.array_equal(want, got):
        log.info("fast path differs from mlflow's pyfunc answer: not used")
        return False
    return True


def explain(exc: BaseException, mlmodel: dict[str, Any]) -> str | None:
    """Plain-language reasons for the usual sentence-transformers load failures."""
    text = f"{type(exc).__name__}: {exc}"
    conf = mlmodel.get("flavors", {}).get("sentence_transformers") or {}
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in (
            "sentence_transformers", "torch", "transformers", "tokenizers"):
        return (f"the model needs the Python package '{exc.name.split('.')[0]}', which is not "
                "in its requirements.txt: add it (sentence-transformers and torch at the "
                "versions it was saved with)")
    if "offline" in text.lower() or "huggingface.co" in text or "hf.co" in text:
        return ("the model tries to download files from the Hugging Face Hub when it loads, "
                "but replicas have no network: save it with mlflow.sentence_transformers from "
                "a local copy (all files in the model directory), or ship the files in a "
                "package listed in requirements.txt")
    if "CUDA" in text or "cuda" in text:
        return ("the model's weights or code ask for a CUDA device and this target has none: "
                "save the model on the CPU (SentenceTransformer(..., device='cpu'))")
    version = conf.get("sentence_transformers_version")
    if version and isinstance(exc, AttributeError | ImportError | TypeError):
        return (f"the model was saved with sentence-transformers {version}; the image has "
                "another version that cannot load it: pin sentence-transformers=="
                f"{version} in requirements.txt")
    return None
