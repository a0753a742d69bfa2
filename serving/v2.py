"""The Open Inference Protocol (v2) beyond plain JSON: the binary tensor extension, the
requested outputs, model metadata and v2-shaped errors.

tritonclient, the protocol's reference client, sends every tensor in the binary extension by
default: a JSON header of ``Inference-Header-Content-Length`` bytes, then each input's raw
little-endian values (``parameters.binary_data_size`` bytes each; BYTES elements with a 4-byte
length prefix), and asks for the outputs the same way (``parameters.binary_data_output``, or
``parameters.binary_data`` per requested output). v2 clients read errors as ``{"error": msg}``
(tritonclient's ``InferenceServerException`` shows that message), not MLflow's
``{"error_code", "message"}``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.errors import InputError, MalformedRequest, ServingError
from serving.protocol import OPTS, V2_DATATYPES, load_json
from serving.schema import Columnar, Rows, Signature, Table, TensorSpec

HEADER_LENGTH = b"inference-header-content-length"
OCTET_STREAM = b"application/octet-stream"
EXTENSIONS = ["binary_tensor_data"]
# A binary input's declared shape: numpy's own ceiling on dimensions, and more elements than
# any request body can hold (an element is at least one byte, BYTES at least four).
MAX_DIMS = 32
MAX_ELEMENTS = 1 << 40
DEFAULT_OUTPUT = "predict"  # the output's name when the model's output has none
# v2 datatype -> numpy dtype of its binary form (little-endian, as the protocol says)
NUMPY_TYPES = {
    "BOOL": np.dtype("?"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_MLFLOW_TYPES = {
    "double": "FP64", "float64": "FP64", "float": "FP32", "float32": "FP32", "long": "INT64",
    "int64": "INT64", "integer": "INT32", "int32": "INT32", "int16": "INT16", "int8": "INT8",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "float16": "FP16", "boolean": "BOOL", "bool": "BOOL",
}


def error_body(message: str) -> bytes:
    """A v2 error: ``{"error": message}``."""
    return orjson.dumps({"error": message})


@dataclass(slots=True)
class Request:
    """A parsed v2 inference request: the table for the signature check and what the answer
    must look like."""

    table: Table
    request_id: str | None
    logged: Any  # the inputs as the prediction log stores them (JSON; never raw bytes)
    maybe_bools: bool = True
    verbatim: bool = True  # the body is the JSON document (no binary tensors)
    binary_all: bool = False  # parameters.binary_data_output
    wanted: dict[str, bool] = field(default_factory=dict)  # requested output -> binary


def header_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """``Inference-Header-Content-Length`` as an int, None when absent."""
    for key, value in headers:
        if key == HEADER_LENGTH:
            try:
                return int(value)
            except ValueError:
                raise MalformedRequest(
                    f"Inference-Header-Content-Length {value.decode(errors='replace')!r} "
                    "is not a number") from None
    return None


def parse(body: bytes, json_length: int | None,
          column_names: frozenset[str] | set[str] | None,
          tensors: list[TensorSpec] | None = None) -> Request:
    """A v2 request body (JSON, or a JSON header and binary tensors) → :class:`Request`.

    ``tensors``: the model's tensor signature, when it has one; each input is then an array of
    its declared shape and datatype, which must convert to the signature's without loss."""
    if json_length is not None and not 0 < json_length <= len(body):
        raise MalformedRequest(f"Inference-Header-Content-Length {json_length} does not fit a "
                               f"body of {len(body)} bytes")
    header = body if json_length is None else body[:json_length]
    doc = load_json(header)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise MalformedRequest("an inference request needs a non-empty 'inputs' list")
    binary = memoryview(body)[json_length:] if json_length is not None else b""
    offset = 0
    named: dict[str, Any] = {}
    logged = []
    decoded = False
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict) or "name" not in tensor:
            raise MalformedRequest(f"inputs[{i}] needs 'name', 'shape', 'datatype' and 'data'")
        name = str(tensor["name"])
        params = tensor.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None and "data" in tensor:  # JSON data: the common case first
            if tensors:
                named[name] = _json_tensor(tensor, name, _spec_for(tensors, name))
            else:
                named[name] = _reshaped(tensor["data"], tensor.get("shape"), name)
            continue
        shape = _shape(tensor, name)
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise MalformedRequest(f"input '{name}': binary_data_size {size!r} runs past "
                                       f"the {len(binary)} bytes of binary data")
            array = _decode(binary[offset:offset + size], str(tensor.get("datatype")), shape,
                            name)
            offset += size
            decoded = True
            if tensors:
                named[name] = _typed(array, str(tensor.get("datatype")), name,
                                     _spec_for(tensors, name))
            else:
                named[name] = array.tolist()
            logged.append({"name": name, "datatype": tensor.get("datatype"),
                           "shape": list(array.shape), "data": array.ravel()})
        else:
            raise MalformedRequest(f"input '{name}' has neither 'data' nor "
                                   "parameters.binary_data_size")
    if offset != len(binary):
        raise MalformedRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    request = Request(_table(named, column_names), request_id,
                      [*logged, *(t for t in doc["inputs"] if "data" in t)] if decoded
                      else doc["inputs"])
    if decoded:
        request.verbatim = False
        request.maybe_bools = any(t.get("datatype") == "BOOL" for t in doc["inputs"]) \
            or b"true" in header or b"false" in header
    params = doc.get("parameters")
    if params:
        request.binary_all = isinstance(params, dict) and params.get("binary_data_output") is True
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list):
        raise MalformedRequest("'outputs' must be a list of {\"name\"} objects")
    for j, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise MalformedRequest(f"outputs[{j}] needs a 'name'")
        out_params = out.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise MalformedRequest(f"outputs[{j}].parameters must be an object")
        flag = out_params.get("binary_data")
        request.wanted[out["name"]] = flag is True or (flag is None and request.binary_all)
    return request


def _shape(tensor: dict[str, Any], name: str) -> list[int]:
    """The declared shape of a binary input. Its element count is computed exactly (Python
    integers): numpy's product wraps around at 2**63, so ``[2**33, 2**31]`` would count 0
    elements and pass for an empty tensor."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise MalformedRequest(f"input '{name}': 'shape' must be a list of non-negative "
                               f"integers, got {shape!r}")
    if len(shape) > MAX_DIMS or math.prod(shape) > MAX_ELEMENTS \
            or any(d > MAX_ELEMENTS for d in shape):
        raise MalformedRequest(f"input '{name}': shape {shape} is larger than any request "
                               f"(at most {MAX_DIMS} dimensions, {MAX_ELEMENTS} elements)")
    return shape


def _reshaped(data: Any, shape: Any, name: str) -> Any:
    """JSON ``data`` of ``shape``: flat values (as the protocol sends them) made nested."""
    if not (isinstance(shape, list) and len(shape) > 1 and isinstance(data, list) and data
            and not isinstance(data[0], list)):
        return data
    if len(shape) == 2 and type(shape[1]) is int and shape[1] > 0:  # rows: slices, no numpy
        width = shape[1]
        if len(data) == shape[0] * width:
            return [data[i:i + width] for i in range(0, len(data), width)]
    try:
        return np.array(data).reshape(shape).tolist()
    except (ValueError, TypeError):
        raise InputError(f"input '{name}': {len(data)} values do not fit shape "
                         f"{shape}") from None


def _spec_for(tensors: list[TensorSpec], name: str) -> TensorSpec | None:
    """The signature's tensor for input ``name``: the only one, or the one of that name."""
    if len(tensors) == 1:
        return tensors[0]
    return next((t for t in tensors if t.name == name), None)


def _json_tensor(tensor: dict[str, Any], name: str, spec: TensorSpec | None) -> np.ndarray:
    """A JSON input of a tensor-signature model as an array of its declared shape."""
    datatype = str(tensor.get("datatype"))
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InputError(f"input '{name}': datatype {datatype!r} is not one of "
                         + ", ".join(NUMPY_TYPES))
    shape = _shape(tensor, name)
    try:
        array = np.asarray(tensor["data"])
    except ValueError:
        raise InputError(f"input '{name}': rows have inconsistent lengths (ragged "
                         "array)") from None
    kind = array.dtype.kind
    if array.size and not (kind == dtype.kind or (kind == "i" and dtype.kind in "uf")
                           or (kind == "b" and datatype == "BOOL")):
        found = {"f": "numbers with a fraction", "i": "integers", "b": "booleans"}.get(
            kind, "text")
        raise InputError(f"input '{name}': datatype {datatype} but the data holds {found}")
    if array.size != math.prod(shape):
        raise InputError(f"input '{name}': {array.size} values do not fit shape {shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        array = array.astype(dtype, copy=False).reshape(shape)
    return _typed(array, datatype, name, spec)


def _typed(array: np.ndarray, datatype: str, name: str, spec: TensorSpec | None) -> np.ndarray:
    """``array`` in the signature's dtype; 400 when its datatype does not convert without loss
    (an FP64 or INT64 input for an FP32 model, say: tritonclient would send what was asked)."""
    if spec is None or spec.dtype.kind not in "biuf" or array.dtype == spec.dtype:
        return array
    if not np.can_cast(array.dtype, spec.dtype, "safe"):
        want = _MLFLOW_TYPES.get(spec.dtype.name, spec.dtype.name)
        raise InputError(f"input '{name}': datatype {datatype} does not convert to the "
                         f"model's {want} without loss; send {want} (the signature's "
                         f"{spec.dtype.name} tensor of shape {list(spec.shape)})")
    return array.astype(spec.dtype)


def _decode(raw: memoryview | bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """One input's binary data as an array of ``shape``."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise MalformedRequest(f"input '{name}': a BYTES element's 4-byte length "
                                       "is cut short")
            (n,) = struct.unpack_from("<I", raw, at)
            if at + 4 + n > len(raw):
                raise MalformedRequest(f"input '{name}': a BYTES element runs past its data")
            item = bytes(raw[at + 4:at + 4 + n])
            try:
                items.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(f"input '{name}': BYTES element {len(items)} is not "
                                 "UTF-8 text") from None
            at += 4 + n
        array = np.array(items, dtype=object)
    else:
        dtype = NUMPY_TYPES.get(datatype)
        if dtype is None:
            raise InputError(f"input '{name}': datatype {datatype!r} is not one of "
                             + ", ".join(["BYTES", *NUMPY_TYPES]))
        if len(raw) != count * dtype.itemsize:
            raise MalformedRequest(f"input '{name}': {len(raw)} bytes of {datatype} do not "
                                   f"fit shape {shape} ({count * dtype.itemsize} bytes)")
        array = np.frombuffer(raw, dtype=dtype)
    if array.size != count:
        raise InputError(f"input '{name}': {array.size} values do not fit shape {shape}")
    try:
        return array.reshape(shape)
    except ValueError as exc:  # numpy's own limits (an empty tensor of enormous dimensions)
        raise MalformedRequest(f"input '{name}': shape {shape}: {exc}") from None


def _table(named: dict[str, Any], column_names: frozenset[str] | set[str] | None) -> Table:
    """Each named input is a column (shape ``[n]`` or ``[n, 1]``); for a column signature, a
    single ``[n, k]`` input whose name is not a column holds the rows, in signature order."""
    if len(named) == 1 and column_names is not None:
        name, data = next(iter(named.items()))
        if name not in column_names and isinstance(data, list) and data \
                and isinstance(data[0], list):
            return Rows(rows=data)
    return Columnar(data=named)


# --- answers ---------------------------------------------------------------------------------


def outputs_of(predictions: Any) -> list[tuple[str, np.ndarray]]:
    """The model's predictions as named arrays: a dict's keys, a frame's columns, or one
    output named ``predict``."""
    if isinstance(predictions, dict):
        items = list(predictions.items())
    elif type(predictions).__module__.startswith("pandas") and hasattr(predictions, "columns"):
        items = [(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    else:
        items = [(DEFAULT_OUTPUT, predictions)]
    return [(str(k), v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in items]


def _datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind == "b":
        return "BOOL"
    if arr.dtype.kind in "iuf":
        return V2_DATATYPES.get(f"{arr.dtype.kind}{arr.dtype.itemsize}", "FP64")
    return "BYTES"


def _binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in arr.ravel().tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts += (struct.pack("<I", len(data)), data)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=NUMPY_TYPES[datatype]).tobytes()


def encode(predictions: Any, request: Request, model_name: str, model_version: str,
           request_id: str) -> tuple[bytes, int | None]:
    """The answer's body and, when it carries binary outputs, the length of its JSON header
    (for ``Inference-Header-Content-Length``). 400 for a requested output the model does not
    produce."""
    if type(predictions) is np.ndarray and predictions.dtype.kind in "biuf" \
            and not request.wanted and not request.binary_all:  # the common case, in one go
        return orjson.dumps({"model_name": model_name, "model_version": model_version,
                             "id": request_id, "outputs": [{
                                 "name": DEFAULT_OUTPUT, "shape": list(predictions.shape),
                                 "datatype": _datatype(predictions),
                                 "data": np.ascontiguousarray(predictions).ravel()}]},
                            option=OPTS), None
    produced = outputs_of(predictions)
    if request.wanted:
        have = {name for name, _ in produced}
        missing = [n for n in request.wanted if n not in have]
        if missing:
            raise InputError("unknown output " + ", ".join(f"'{n}'" for n in missing)
                             + "; the model produces " + ", ".join(f"'{n}'" for n in have))
        produced = [(n, a) for n, a in produced if n in request.wanted]
    outputs = []
    blobs = []
    for name, arr in produced:
        datatype = _datatype(arr)
        doc: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if request.wanted.get(name, request.binary_all):
            blob = _binary(arr, datatype)
            blobs.append(blob)
            doc["parameters"] = {"binary_data_size": len(blob)}
        elif datatype == "BYTES":
            doc["data"] = [str(x) for x in arr.ravel().tolist()]
        else:
            doc["data"] = np.ascontiguousarray(arr).ravel()
        outputs.append(doc)
    header = orjson.dumps({"model_name": model_name, "model_version": model_version,
                           "id": request_id, "outputs": outputs}, option=OPTS, default=str)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def metadata(name: str, version: str, flavor: str, signature: Signature,
             mlmodel: dict[str, Any]) -> dict[str, Any]:
    """Model metadata: ``inputs`` from the input signature, ``outputs`` from the output
    signature (one FP64 output ``predict`` of shape ``[-1]`` when the model has none)."""
    return {"name": name, "versions": [version] if version else [],
            "platform": f"mlflow_{flavor}", "inputs": tensors_of(signature),
            "outputs": _outputs(mlmodel)}


def tensors_of(signature: Signature) -> list[dict[str, Any]]:
    if signature.kind == "columns":
        return [{"name": c.name, "datatype": _MLFLOW_TYPES.get(c.type, "BYTES"), "shape": [-1]}
                for c in signature.columns]
    return [{"name": t.name or f"input-{i}", "datatype": _MLFLOW_TYPES.get(t.dtype.name, "BYTES"),
             "shape": list(t.shape)} for i, t in enumerate(signature.tensors)]


def _outputs(mlmodel: dict[str, Any]) -> list[dict[str, Any]]:
    raw = (mlmodel.get("signature") or {}).get("outputs")
    try:
        specs = orjson.loads(raw) if isinstance(raw, str) else raw
        outputs = tensors_of(Signature.from_specs(specs)) if specs else []
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        outputs = []
    if len(outputs) == 1 and (outputs[0]["name"] in ("0", "input-0")):
        outputs[0]["name"] = DEFAULT_OUTPUT  # an unnamed output: the name answers carry
    return outputs or [{"name": DEFAULT_OUTPUT, "datatype": "FP64", "shape": [-1]}]


def not_served(model: str, version: str, name: str, served: str) -> ServingError:
    """404 for a model or version this replica does not serve."""
    if model != name:
        return ServingError(f"model '{model}' is not served here; this server serves "
                            f"'{name}'", "NOT_FOUND", 404)
    return ServingError(f"model '{model}' has no version '{version}' here; this server "
                        f"serves version '{served}'", "NOT_FOUND", 404)
