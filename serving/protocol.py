"""Wire formats: MLflow's scoring protocol, CSV, and the Open Inference Protocol (v2).

Parsing turns a request body into a :class:`~serving.schema.Table`; encoding turns model
output into response bytes with orjson (numpy arrays are serialized natively).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import orjson

from serving.errors import InputError, MalformedRequest
from serving.schema import Columnar, Records, Rows, Table

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
REQUIRED_FORMAT = (
    "The input must be a JSON object with exactly one of the fields "
    "'dataframe_split', 'dataframe_records', 'instances', 'inputs'"
)
V2_DATATYPES = {
    "b": "BOOL",
    "i1": "INT8",
    "i2": "INT16",
    "i4": "INT32",
    "i8": "INT64",
    "u1": "UINT8",
    "u2": "UINT16",
    "u4": "UINT32",
    "u8": "UINT64",
    "f2": "FP16",
    "f4": "FP32",
    "f8": "FP64",
}


def may_contain_bools(body: bytes) -> bool:
    """Cheap byte scan: numeric fast paths are only safe when no JSON boolean — nor a NaN or
    Infinity literal (see ``load_json``) — can be present."""
    return b"true" in body or b"false" in body or b"NaN" in body or b"Infinity" in body


def load_json(body: bytes) -> Any:
    """Parse with orjson; a body it refuses only for ``NaN``/``Infinity`` literals (what
    Python's ``json.dumps``, and so ``requests``, writes for a missing float) is parsed again
    with the standard library, which reads them, so that the signature check can name the
    column (a NaN in a required column is a missing value)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"NaN" in body or b"Infinity" in body:
            try:
                return json.loads(body)
            except (ValueError, RecursionError):
                pass
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None


def parse_mlflow_json(body: bytes) -> tuple[Table, dict[str, Any] | None, Any]:
    """Parse an MLflow ``/invocations`` JSON body → (table, params, raw input for logging)."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise MalformedRequest(f"{REQUIRED_FORMAT}; received a JSON {type(doc).__name__}")
    keys = [k for k in FORMATS if k in doc]
    if len(keys) != 1:
        raise MalformedRequest(f"{REQUIRED_FORMAT}; received fields {sorted(doc)}")
    key = keys[0]
    value = doc[key]
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise InputError("'params' must be a JSON object", error_code="BAD_REQUEST")
    if key == "dataframe_split":
        if not isinstance(value, dict):
            raise MalformedRequest("'dataframe_split' must be an object with 'columns' and 'data'")
        data = value.get("data")
        if not isinstance(data, list):
            raise MalformedRequest("'dataframe_split' needs a 'data' list of rows")
        columns = value.get("columns")
        if columns is not None and not (
            isinstance(columns, list) and all(isinstance(c, str) for c in columns)
        ):
            raise MalformedRequest("'dataframe_split.columns' must be a list of strings")
        return Rows(rows=data, columns=columns), params, value
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise MalformedRequest("'dataframe_records' must be a list of objects")
        return Records(records=value), params, value
    # instances / inputs
    if isinstance(value, dict):
        return Columnar(data=value), params, value
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return Records(records=value), params, value
        return Rows(rows=value), params, value
    return Rows(rows=[value]), params, value


def parse_csv(body: bytes) -> tuple[Table, Any]:
    """``text/csv``: a header row of column names, then data rows (pandas ``to_csv`` output)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"CSV body is not valid UTF-8: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise MalformedRequest("CSV body is empty; expected a header row") from None
    except csv.Error as exc:
        raise MalformedRequest(f"CSV body could not be parsed: {exc}") from None
    try:
        rows = [r for r in reader if r]
    except csv.Error as exc:
        raise MalformedRequest(f"CSV body could not be parsed: {exc}") from None
    # pandas.to_csv() writes an unnamed index column first; drop it when present.
    if header and header[0] == "" and all(r and len(r) == len(header) for r in rows):
        header = header[1:]
        rows = [r[1:] for r in rows]
    return Rows(rows=rows, columns=header, from_csv=True), {"columns": header, "data": rows}


# --- responses -------------------------------------------------------------------------------

OPTS = orjson.OPT_SERIALIZE_NUMPY


def jsonable(obj: Any) -> Any:
    """Model output → something orjson can write (mirrors MLflow's records orientation)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf" and obj.flags.c_contiguous:
            return obj
        if obj.dtype.kind in "biuf":
            return np.ascontiguousarray(obj)
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (np.generic,)):
        return obj.item()
    mod = type(obj).__module__
    if mod.startswith("pandas"):
        if hasattr(obj, "to_dict") and hasattr(obj, "columns"):
            if not all(type(c) is str for c in obj.columns):  # e.g. a torch model's 0, 1, ...
                obj = obj.rename(columns=str)  # what json.dumps makes of them in MLflow
            return obj.to_dict(orient="records")
        if hasattr(obj, "tolist"):
            return obj.tolist()
    return obj


def encode_predictions(predictions: Any) -> bytes:
    return orjson.dumps({"predictions": jsonable(predictions)}, option=OPTS, default=str)


def error_body(error_code: str, message: str) -> bytes:
    return orjson.dumps({"error_code": error_code, "message": message})
