"""Turn the logged ``inputs``/``outputs`` of a prediction record into rows and predictions.

Replicas log the request's input as received (``serving/protocol.py``): a ``dataframe_split``
object, ``dataframe_records``/``instances`` lists, a columnar dict, or Open Inference Protocol
tensors; outputs are the JSON predictions. Anything unrecognised yields nothing, never an error.
"""

from __future__ import annotations

from typing import Any


def rows_of(inputs: Any, columns: list[str]) -> list[dict[str, Any]]:
    """The input rows of one request as dicts keyed by feature name."""
    if isinstance(inputs, dict):
        if "dataframe_split" in inputs or "dataframe_records" in inputs \
                or "instances" in inputs or "inputs" in inputs:
            for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
                if key in inputs:
                    return rows_of(inputs[key], columns)
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
            if len(inputs) == 1 and isinstance(first["data"], list) and first["data"] \
                    and isinstance(first["data"][0], list):
                return [dict(zip(columns, row, strict=False)) for row in first["data"]]
            return rows_of({str(t.get("name")): t.get("data") for t in inputs
                            if isinstance(t, dict) and isinstance(t.get("data"), list)}, columns)
        if isinstance(first, dict):
            return [r for r in inputs if isinstance(r, dict)]
        if isinstance(first, list):
            return [dict(zip(columns, row, strict=False)) for row in inputs
                    if isinstance(row, list)]
        if columns and len(inputs) == len(columns):
            return [dict(zip(columns, inputs, strict=False))]
    return []


def predictions_of(outputs: Any) -> list[Any]:
    """The per-row predictions of one request (a scalar per row where possible)."""
    if isinstance(outputs, dict):
        if "predictions" in outputs:
            return predictions_of(outputs["predictions"])
        if "outputs" in outputs and isinstance(outputs["outputs"], list):  # OIP response
            tensors = outputs["outputs"]
            return predictions_of(tensors[0].get("data")) if tensors and \
                isinstance(tensors[0], dict) else []
        if len(outputs) == 1:
            return predictions_of(next(iter(outputs.values())))
        return []
    if isinstance(outputs, list):
        out = []
        for item in outputs:
            if isinstance(item, list):
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
