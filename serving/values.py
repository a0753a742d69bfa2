"""Request values, column by column: the careful path of the signature check.

``convert_column`` turns one column's values into a typed array, raising an
:class:`~serving.errors.InputError` that names the column, the row and what was found for the
first value that does not fit; ``serving.schema`` calls it when a batch cannot take the numpy
fast path. A missing value is an error in a required column, whatever its type.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from serving.errors import InputError

if TYPE_CHECKING:
    from serving.schema import ColumnSpec

FLOAT_TYPES = frozenset({"double", "float"})
INT_TYPES = frozenset({"long", "integer"})
NUMERIC_TYPES = FLOAT_TYPES | INT_TYPES
NUMPY_DTYPE: dict[str, np.dtype[Any]] = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
    "long": np.dtype(np.int64),
    "integer": np.dtype(np.int32),
    "boolean": np.dtype(np.bool_),
}
MISSING = object()


# --- messages --------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def show(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if isinstance(value, str):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_error(column: str, expected: str, value: Any, row: int) -> InputError:
    if value is None:
        return InputError(f"column '{column}': expected {expected}, got null in row {row}")
    return InputError(
        f"column '{column}': expected {expected}, got {json_type(value)} {show(value)} in row {row}"
    )


def missing_value(spec: ColumnSpec, what: str, row: int) -> InputError:
    """A required column without a value in ``row``: ``what`` is null, NaN, no value, …"""
    return InputError(
        f"column '{spec.name}': expected {spec.type}, got {what} in row {row} "
        "(the column is required)"
    )


def _missing_kind(v: Any) -> str:
    return "no value" if v is MISSING else "null" if v is None else "an empty CSV cell"


# --- per-column conversion (the careful path) ------------------------------------------------


def convert_column(spec: ColumnSpec, values: list[Any], from_csv: bool) -> np.ndarray:
    """Convert one column's values to a typed array, raising on the first bad value.

    A missing value (null, an absent key, an empty CSV cell; NaN in a float column) is an
    error in a required column. In an optional one it becomes NaN (float columns, and integer
    columns, which turn float64 like a pandas column would), None (string, boolean) or NaT.
    Infinity is refused in every float column: no model is trained on it."""
    t = spec.type
    if t in FLOAT_TYPES:
        out = np.empty(len(values), dtype=NUMPY_DTYPE[t])
        if t == "double":
            _convert_floats(spec, values, from_csv, out)
            return out
        with np.errstate(over="ignore"):  # a double too large for float32: named below
            _convert_floats(spec, values, from_csv, out)
        _check_float32_range(spec, out, values)
        return out
    if t in INT_TYPES:
        return _convert_ints(spec, values, from_csv)
    if t == "boolean":
        return _convert_booleans(spec, values, from_csv)
    if t in ("string", "binary"):
        return _convert_strings(spec, values)
    if t == "datetime":
        return _convert_datetimes(spec, values)
    return _convert_any(spec, values)  # array / object / map / any: accept as given


def _convert_ints(spec: ColumnSpec, values: list[Any], from_csv: bool) -> np.ndarray:
    name, t, required = spec.name, spec.type, spec.required
    n = len(values)
    out = np.empty(n, dtype=NUMPY_DTYPE[t])
    info = np.iinfo(out.dtype)
    absent: list[int] = []
    for i, v in enumerate(values):
        tv = type(v)
        if tv is int:
            if not info.min <= v <= info.max:
                raise InputError(
                    f"column '{name}': value {v} in row {i} is out of range for {t}"
                )
            out[i] = v
            continue
        if v is None or v is MISSING or (from_csv and v == ""):
            if required:
                raise missing_value(spec, _missing_kind(v), i)
            absent.append(i)
            out[i] = 0
            continue
        if from_csv and tv is str:
            try:
                v = int(v)
            except ValueError:
                raise type_error(name, t, v, i) from None
            tv = int
        if tv is int or isinstance(v, np.integer):
            if not info.min <= v <= info.max:
                raise InputError(
                    f"column '{name}': value {v} in row {i} is out of range for {t}"
                )
            out[i] = v
        elif tv is float and v.is_integer():
            if not info.min <= v <= info.max:
                raise InputError(
                    f"column '{name}': value {v} in row {i} is out of range for {t}"
                )
            out[i] = int(v)
        elif tv is float and v != v:
            raise missing_value(spec, "NaN", i) if required else type_error(name, t, v, i)
        else:
            raise type_error(name, t, v, i)
    if absent:
        floats = out.astype(np.float64)
        floats[absent] = math.nan
        return floats
    return out


def _convert_booleans(spec: ColumnSpec, values: list[Any], from_csv: bool) -> np.ndarray:
    name, t, required = spec.name, spec.type, spec.required
    n = len(values)
    out = np.empty(n, dtype=np.bool_)
    absent = []
    for i, v in enumerate(values):
        if type(v) is bool:
            out[i] = v
        elif v is None or v is MISSING or (from_csv and v == ""):
            if required:
                raise missing_value(spec, _missing_kind(v), i)
            absent.append(i)
        elif from_csv and isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
            out[i] = v.lower() in ("true", "1")
        else:
            raise type_error(name, t, v, i)
    if absent:
        objects = out.astype(object)
        objects[absent] = None
        return objects
    return out


def _convert_strings(spec: ColumnSpec, values: list[Any]) -> np.ndarray:
    name, t, required = spec.name, spec.type, spec.required
    n = len(values)
    out = np.empty(n, dtype=object)
    for i, v in enumerate(values):
        if type(v) is str:
            out[i] = v
        elif v is None or v is MISSING:
            if required:
                raise missing_value(spec, _missing_kind(v), i)
            out[i] = None
        else:
            raise type_error(name, t, v, i)
    return out


def _convert_datetimes(spec: ColumnSpec, values: list[Any]) -> np.ndarray:
    name, t, required = spec.name, spec.type, spec.required
    n = len(values)
    out = np.empty(n, dtype="datetime64[ns]")
    for i, v in enumerate(values):
        if v is None or v is MISSING or v == "":
            if required:
                raise missing_value(spec, _missing_kind(v), i)
            out[i] = np.datetime64("NaT")
            continue
        if not isinstance(v, str):
            raise type_error(name, t, v, i)
        try:
            out[i] = np.datetime64(v.replace("Z", ""), "ns")
        except ValueError:
            raise type_error(name, t, v, i) from None
    return out


def _convert_any(spec: ColumnSpec, values: list[Any]) -> np.ndarray:
    """Best effort: the values as given, MISSING as None."""
    required = spec.required
    n = len(values)
    out = np.empty(n, dtype=object)
    for i, v in enumerate(values):
        if required and (v is None or v is MISSING):
            raise missing_value(spec, _missing_kind(v), i)
        out[i] = None if v is MISSING else v
    return out


def _convert_floats(spec: ColumnSpec, values: list[Any], from_csv: bool,
                    out: np.ndarray) -> None:
    name, t, required = spec.name, spec.type, spec.required
    for i, v in enumerate(values):
        tv = type(v)
        if tv is float:
            if v - v != 0.0:  # NaN or ±inf
                _non_finite(spec, v, i)
            out[i] = v
        elif tv is int:
            out[i] = v
        elif v is None or v is MISSING or (from_csv and v == ""):
            if required:
                raise missing_value(spec, _missing_kind(v), i)
            out[i] = math.nan
        elif from_csv and tv is str:
            try:
                f = float(v)
            except ValueError:
                raise type_error(name, t, v, i) from None
            if f - f != 0.0:
                _non_finite(spec, f, i)
            out[i] = f
        elif isinstance(v, (np.floating, np.integer)):
            if isinstance(v, np.floating) and not np.isfinite(v):
                _non_finite(spec, float(v), i)
            out[i] = v
        else:
            raise type_error(name, t, v, i)


def _non_finite(spec: ColumnSpec, value: float, row: int) -> None:
    """NaN is a missing value (allowed only in an optional column); ±inf is never allowed."""
    if value != value:
        if spec.required:
            raise missing_value(spec, "NaN", row)
        return
    raise InputError(f"column '{spec.name}': expected a finite {spec.type}, got "
                     f"{'-' if value < 0 else ''}inf in row {row}")


def _check_float32_range(spec: ColumnSpec, out: np.ndarray, values: list[Any]) -> None:
    """A finite double too large for float32 became ±inf in ``out``: name it."""
    overflow = np.isinf(out)
    if overflow.any():
        row = int(np.argmax(overflow))
        raise InputError(f"column '{spec.name}': value {show(values[row])} in row {row} is out "
                         "of range for float")
