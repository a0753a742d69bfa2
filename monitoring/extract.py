"""Turn the logged ``inputs``/``outputs`` of a prediction record into rows and predictions.

Replicas log the request's input as received (``serving/protocol.py``): a ``dataframe_split``
object, ``dataframe_records``/``instances`` lists, a columnar dict, or Open Inference Protocol
tensors; outputs are the JSON predictions. Anything unrecognised yields nothing, never an error.

Open Inference Protocol (v2) tensors — the JSON request as sent, or, for tritonclient's binary
tensor extension, the decoded tensors the replica logs instead of the bytes
(``serving/v2.py``: name, datatype, shape and the flat values) — become rows by their shape:
one ``[n, k]`` tensor is n rows of k features named by the signature's columns (in order); several
``[n]`` or ``[n, 1]`` tensors are the columns of n rows, named by the tensors' names.
"""

from __future__ import annotations

from typing import Any

MIN_VECTOR = 8  # numbers per output row from which a non-probability row is a vector


def rows_of(inputs: Any, columns: list[str]) -> list[dict[str, Any]]:
    """The input rows of one request as dicts keyed by feature name. A model of one column
    takes it by position whatever a request calls it (a v2 input named ``text``, a
    ``dataframe_split`` column), as its replica does: such rows are keyed by that column."""
    rows = _rows_of(inputs, columns)
    if len(columns) == 1 and rows and columns[0] not in rows[0]:
        return [{columns[0]: next(iter(r.values()))} for r in rows if len(r) == 1]
    return rows


def _rows_of(inputs: Any, columns: list[str]) -> list[dict[str, Any]]:
    if isinstance(inputs, dict):
        if "dataframe_split" in inputs or "dataframe_records" in inputs \
                or "instances" in inputs or "inputs" in inputs:
            for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
                if key in inputs:
                    return _rows_of(inputs[key], columns)
        if isinstance(inputs.get("data"), list):  # dataframe_split
            cols = inputs.get("columns") or columns
            return [dict(zip(cols, row, strict=False)) for row in inputs["data"]
                    if isinstance(row, list)]
        # columnar: {"a": [1, 2], "b": [3, 4]}
        values = [v for v in inputs.values() if isinstance(v, list)]
        if values and len(values) == len(inputs):
            n = min(len(v) for v in values)
            keys = list(inputs)
            return [{k: inputs[k][i] for k in keys} for i in range(n)]
        return [inputs]
    if isinstance(inputs, list) and inputs:
        first = inputs[0]
        if isinstance(first, dict) and "name" in first and "data" in first:  # OIP tensors
            return _tensor_rows(inputs, columns)
        if isinstance(first, dict):
            return [r for r in inputs if isinstance(r, dict)]
        if isinstance(first, list):
            return [dict(zip(columns, row, strict=False)) for row in inputs
                    if isinstance(row, list)]
        if len(columns) == 1:  # one column (texts): a plain list holds one value per row
            return [{columns[0]: v} for v in inputs]
        if columns and len(inputs) == len(columns):
            return [dict(zip(columns, inputs, strict=False))]
    return []


def _tensor_rows(tensors: list[Any], columns: list[str]) -> list[dict[str, Any]]:
    """Rows of Open Inference Protocol input tensors, by their shapes (see the module doc)."""
    named: dict[str, list[Any]] = {}
    for tensor in tensors:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("data"), list):
            continue
        data = tensor["data"]
        shape = tensor.get("shape")
        width = shape[1] if isinstance(shape, list) and len(shape) == 2 \
            and isinstance(shape[1], int) and shape[1] > 0 else 0
        if data and not isinstance(data[0], list) and width > 1:  # flat values of [n, k]
            data = [data[i:i + width] for i in range(0, len(data) - width + 1, width)]
        if len(tensors) == 1 and data and isinstance(data[0], list) \
                and not all(len(row) == 1 for row in data if isinstance(row, list)):
            return [dict(zip(columns, row, strict=False)) for row in data
                    if isinstance(row, list)]
        named[str(tensor.get("name"))] = [v[0] if isinstance(v, list) and len(v) == 1 else v
                                          for v in data]
    if not named:
        return []
    n = min(len(v) for v in named.values())
    return [{k: values[i] for k, values in named.items()} for i in range(n)]


def is_vector(item: Any) -> bool:
    """An output row that is a vector (an embedding) rather than class probabilities: at least
    ``MIN_VECTOR`` numbers, some negative or not summing to 1. Its argmax means nothing."""
    if not isinstance(item, list) or len(item) < MIN_VECTOR:
        return False
    if not all(type(v) in (int, float) for v in item):
        return False
    return min(item) < 0 or abs(sum(item) - 1.0) > 1e-3


def _tensor_data(tensor: dict[str, Any]) -> Any:
    """An output tensor's flat ``data`` as rows when its shape is ``[n, k]`` (k > 1)."""
    data, shape = tensor.get("data"), tensor.get("shape")
    if isinstance(data, list) and isinstance(shape, list) and len(shape) == 2 \
            and isinstance(shape[1], int) and shape[1] > 1 and data \
            and not isinstance(data[0], list) and len(data) == shape[0] * shape[1]:
        return [data[i:i + shape[1]] for i in range(0, len(data), shape[1])]
    return data


def vectors_of(outputs: Any) -> list[list[float]]:
    """The output vectors (embeddings) of one request, in either protocol; [] for others."""
    if isinstance(outputs, dict):
        if "predictions" in outputs:
            return vectors_of(outputs["predictions"])
        tensors = outputs.get("outputs")
        if isinstance(tensors, list) and tensors and isinstance(tensors[0], dict):
            return vectors_of(_tensor_data(tensors[0]))
        return []
    if isinstance(outputs, list) and outputs and is_vector(outputs[0]):
        return [v for v in outputs if is_vector(v)]
    return []


def predictions_of(outputs: Any) -> list[Any]:
    """The per-row predictions of one request (a scalar per row where possible; nothing for
    vectors, which ``vectors_of`` summarizes instead)."""
    if isinstance(outputs, dict):
        if "predictions" in outputs:
            return predictions_of(outputs["predictions"])
        if "outputs" in outputs and isinstance(outputs["outputs"], list):  # OIP response
            tensors = outputs["outputs"]
            return predictions_of(_tensor_data(tensors[0])) if tensors and \
                isinstance(tensors[0], dict) else []
        if len(outputs) == 1:
            return predictions_of(next(iter(outputs.values())))
        return []
    if isinstance(outputs, list):
        out = []
        for item in outputs:
            if isinstance(item, list):
                if is_vector(item):
                    continue
                if len(item) == 1:
                    out.append(item[0])
                elif item and all(isinstance(v, (int, float)) for v in item):
                    out.append(max(range(len(item)), key=item.__getitem__))  # argmax class
            elif isinstance(item, dict):
                if len(item) == 1:
                    out.append(next(iter(item.values())))
            else:
                out.append(item)
        return out
    if outputs is None:
        return []
    return [outputs]


def is_class_label(value: Any) -> bool:
    if isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer() and abs(value) < 1000
