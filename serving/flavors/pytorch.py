"""PyTorch (``mlflow.pytorch``): the module called directly, and reasons for its usual failures.

``mlflow.pyfunc`` serves a torch model by enforcing the signature on a DataFrame (again: the
server has already checked it), converting it to float32, and calling the module under
``torch.no_grad()`` with torch's default thread count — one thread per host CPU in every worker
process, whatever the container's CPU limit. The fast path loads the module once
(``mlflow.pytorch.load_model``, ``eval()``), calls it under ``torch.inference_mode()`` on a
tensor that shares the request array's memory (``torch.from_numpy``), with
``torch.set_num_threads`` set to the container's CPU limit shared by the server's workers, and
on the device ``MODELPORT_DEVICE`` names (``auto``: the first visible CUDA device when torch
sees one, else the CPU). Weights saved on a GPU are mapped onto that device when loading.

It applies to a tensor signature with one input (the array goes to the module as it is, as
pyfunc passes an ndarray) and to an all-numeric column signature (the rows as a float32 matrix,
the answer a DataFrame with pyfunc's column names); anything else → None (pyfunc). It is kept
only when it answers exactly what pyfunc's own wrapper answers on the probe batch.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from serving.config import cpu_limit, device_setting
from serving.loader import LoadedModel, probe_batch
from serving.schema import Signature

log = logging.getLogger("serving.flavors.pytorch")


def threads() -> int:
    """Intra-op threads for one worker: the container's CPUs shared by the server's workers."""
    workers = int(os.environ.get("MODELPORT_WORKERS") or 0) or cpu_limit()
    return max(1, cpu_limit() // max(1, workers))


def choose_device(torch: Any, setting: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` from the setting and what torch can see."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"
    return setting


def load(model_dir: str, mlmodel: dict[str, Any], signature: Signature) -> Any:
    import mlflow.pytorch  # noqa: PLC0415 - lazy: torch models only (~2 s of import)
    import torch  # noqa: PLC0415 - lazy: torch models only

    tensor_input = signature.kind == "tensor" and len(signature.tensors) == 1
    if not (tensor_input or (signature.kind == "columns" and signature.all_numeric)):
        return None
    torch.set_num_threads(threads())
    device = choose_device(torch, device_setting())
    # A pickled module is mapped onto the device as it loads (and put in eval mode by mlflow);
    # an exported program ("pt2", mlflow's default) keeps the device its weights were saved on.
    module = mlflow.pytorch.load_model(model_dir, map_location=device, weights_only=False)
    if not isinstance(module, torch.nn.Module) or hasattr(module, "predict"):
        return None  # a forecasting model (its own predict): pyfunc knows those
    if _exported(model_dir, mlmodel):
        device = _device_of(module, device)
    else:
        module.to(device)
    predict = _predict_fn(torch, module, device, tensor_input)
    model = LoadedModel(model_dir=model_dir, mlmodel=mlmodel, signature=signature,
                        flavor="pytorch", input_mode="ndarray", predict_fn=predict,
                        info={"fast_path": "torch", "device": device,
                              "threads": torch.get_num_threads()})
    if not _same_as_pyfunc(model, probe_batch(model_dir, signature), module, device):
        return None
    return model


def _exported(model_dir: str, mlmodel: dict[str, Any]) -> bool:
    data = (mlmodel["flavors"].get("pytorch") or {}).get("model_data", "data")
    return (Path(model_dir) / data / "model.pt2").is_file()


def _device_of(module: Any, default: str) -> str:
    """Where an exported program's weights are (they cannot be moved): its device."""
    for tensor in module.parameters():
        return str(tensor.device)
    for tensor in module.buffers():
        return str(tensor.device)
    return default


def _predict_fn(torch: Any, module: Any, device: str, tensor_input: bool) -> Any:
    on_cpu = device == "cpu"

    def predict(array: np.ndarray) -> Any:
        if not tensor_input:
            array = np.ascontiguousarray(array, dtype=np.float32)
        elif not array.flags.writeable:
            array = array.copy()  # torch.from_numpy warns on read-only memory
        with torch.inference_mode():
            tensor = torch.from_numpy(array)
            out = module(tensor if on_cpu else tensor.to(device))
            if not isinstance(out, torch.Tensor):
                raise TypeError("Expected PyTorch model to output a single output tensor, "
                                f"but got output of type '{type(out)}'")
            result = (out if on_cpu else out.cpu()).numpy()
        if tensor_input:
            return result
        import pandas as pd  # noqa: PLC0415 - lazy: column-signature torch models only

        return pd.DataFrame(result)

    return predict


def _same_as_pyfunc(model: Any, batch: Any, module: Any, device: str) -> bool:
    """Whether the fast path answers what mlflow's pyfunc wrapper answers on the probe batch."""
    from mlflow.pytorch import _PyTorchWrapper  # noqa: PLC0415 - lazy: torch models only

    try:
        reference = _PyTorchWrapper(module, device).predict(
            batch.as_matrix() if model.signature.kind == "tensor" else batch.as_frame())
        got = model.predict(batch)
    except Exception:
        log.info("torch fast path: the probe batch failed; serving through pyfunc",
                 exc_info=True)
        return False
    want, have = np.asarray(reference), np.asarray(got)
    if want.dtype != have.dtype or not np.array_equal(want, have, equal_nan=True):
        log.info("torch fast path differs from pyfunc on the probe batch: not used")
        return False
    return True


# --- plain-language reasons ---------------------------------------------------------------------

_CUDA_ONLY = re.compile(r"deserialize object on a CUDA device|Torch not compiled with CUDA"
                        r"|weights / buffers on 'cuda' device"
                        r"|Found no NVIDIA driver|no CUDA GPUs are available"
                        r"|CUDA driver initialization failed")
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_MISSING_CLASS = re.compile(r"Can't get attribute '([^']+)' on <module '([^']+)'")


def explain(exc: BaseException, mlmodel: dict[str, Any]) -> str | None:
    """CUDA-only weights or code on a CPU target, the model's class missing, a torch version
    mismatch — in words a model's owner can act on."""
    text = f"{type(exc).__name__}: {exc}"
    saved = str((mlmodel.get("flavors") or {}).get("pytorch", {}).get("pytorch_version") or "")
    here = _torch_version()
    if _CUDA_ONLY.search(text):
        return ("the model needs a CUDA GPU and this target has none: it was saved or runs "
                "with tensors on 'cuda'. Save it from the CPU (model.to('cpu') before "
                "mlflow.pytorch.log_model) or deploy it with gpus > 0")
    missing = _MISSING_CLASS.search(text)
    if missing:
        return (f"the model's class {missing.group(1)} was defined in {missing.group(2)}, "
                "which is not part of the model: log the file that defines it with "
                "code_paths=[...] (or save a TorchScript/exported model)")
    module = _MISSING_MODULE.search(text)
    if module and isinstance(exc, ImportError) and module.group(1).split(".")[0] != "torch":
        return (f"the model's code imports {module.group(1)}, which the model does not carry: "
                "log the file or package that defines its classes with code_paths=[...] or "
                "add the package to its requirements")
    if saved and here and _minor(saved) != _minor(here):
        return (f"the model was saved with torch {saved} and this image has torch {here}: pin "
                f"torch=={saved.split('+')[0]} in the model's requirements (or re-save it with "
                f"torch {here})")
    return None


def _torch_version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415 - failure path only

        return version("torch")
    except Exception:  # noqa: BLE001 - no torch at all: nothing to compare
        return ""


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])
