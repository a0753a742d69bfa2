"""Model signatures (from the MLmodel file) and validation of request data against them.

The validator turns parsed request data (see :mod:`serving.protocol`) into a :class:`Batch`:
a 2-D numpy array in signature column order when every column is numeric (the fast path,
no pandas), or typed per-column arrays otherwise. Every problem raises
:class:`~serving.errors.InputError` with a message naming the column, the row (0-based, like
a DataFrame index) and the offending value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.errors import InputError

FLOAT_TYPES = frozenset({"double", "float"})
INT_TYPES = frozenset({"long", "integer"})
NUMERIC_TYPES = FLOAT_TYPES | INT_TYPES
NUMPY_DTYPE = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
    "long": np.dtype(np.int64),
    "integer": np.dtype(np.int32),
    "boolean": np.dtype(np.bool_),
}
MISSING = object()


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class TensorSpec:
    name: str | None
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass
class Signature:
    """Input signature. ``kind`` is ``"columns"``, ``"tensor"`` or ``"none"``."""

    kind: str
    columns: list[ColumnSpec] = field(default_factory=list)
    tensors: list[TensorSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = [c.name for c in self.columns]
        self.index = {c.name: i for i, c in enumerate(self.columns)}
        types = {c.type for c in self.columns}
        self.all_float = bool(types) and types <= FLOAT_TYPES
        self.all_int = bool(types) and types <= INT_TYPES
        self.all_numeric = bool(types) and types <= NUMERIC_TYPES

    @classmethod
    def from_mlmodel(cls, mlmodel: dict[str, Any]) -> Signature:
        raw = (mlmodel.get("signature") or {}).get("inputs")
        if not raw:
            return cls(kind="none")
        specs = orjson.loads(raw) if isinstance(raw, str) else raw
        return cls.from_specs(specs)

    @classmethod
    def from_specs(cls, specs: list[dict[str, Any]]) -> Signature:
        if specs and all(s.get("type") == "tensor" for s in specs):
            tensors = [
                TensorSpec(
                    name=s.get("name"),
                    dtype=np.dtype(s["tensor-spec"]["dtype"]),
                    shape=tuple(int(d) for d in s["tensor-spec"].get("shape", (-1,))),
                )
                for s in specs
            ]
            return cls(kind="tensor", tensors=tensors)
        columns = [
            ColumnSpec(
                name=str(s["name"]) if s.get("name") is not None else str(i),
                type=str(s.get("type", "any")),
                required=bool(s.get("required", True)),
            )
            for i, s in enumerate(specs)
        ]
        return cls(kind="columns", columns=columns)

    def describe(self) -> list[dict[str, Any]]:
        if self.kind == "tensor":
            return [
                {"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)}
                for t in self.tensors
            ]
        return [{"name": c.name, "type": c.type, "required": c.required} for c in self.columns]


# --- parsed request data -------------------------------------------------------------------


@dataclass
class Rows:
    """Row-major data: dataframe_split, list-of-lists ``instances``/``inputs``, CSV."""

    rows: list[Any]
    columns: list[str] | None = None
    from_csv: bool = False


@dataclass
class Records:
    """A list of ``{column: value}`` dicts: dataframe_records or list-of-dicts instances."""

    records: list[Any]


@dataclass
class Columnar:
    """``{column: [values]}``: dict ``inputs`` or Open Inference Protocol named inputs."""

    data: dict[str, Any]


Table = Rows | Records | Columnar


@dataclass
class Batch:
    """Validated input, ready for the model."""

    n_rows: int
    names: list[str] | None = None
    matrix: np.ndarray | None = None
    columns: dict[str, np.ndarray] | None = None
    tensor: np.ndarray | dict[str, np.ndarray] | None = None

    def as_matrix(self) -> np.ndarray:
        if self.matrix is not None:
            return self.matrix
        if self.tensor is not None and isinstance(self.tensor, np.ndarray):
            return self.tensor
        assert self.columns is not None and self.names is not None
        self.matrix = np.column_stack([self.columns[n] for n in self.names])
        return self.matrix

    def as_frame(self) -> Any:
        import pandas as pd

        if self.columns is not None:
            return pd.DataFrame(self.columns, columns=self.names)
        if self.matrix is not None:
            return pd.DataFrame(self.matrix, columns=self.names)
        if isinstance(self.tensor, dict):
            return pd.DataFrame({k: list(v) for k, v in self.tensor.items()})
        return pd.DataFrame(self.tensor)


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


EMPTY_BATCH = "empty batch: the request contains no rows"


# --- per-column conversion (the careful path) ------------------------------------------------


def convert_column(spec: ColumnSpec, values: list[Any], from_csv: bool) -> np.ndarray:
    """Convert one column's values to a typed array, raising on the first bad value.

    A missing value (null, an absent key, an empty CSV cell; NaN in a float column) is an
    error in a required column. In an optional one it becomes NaN (float columns, and integer
    columns, which turn float64 like a pandas column would), None (string, boolean) or NaT.
    Infinity is refused in every float column: no model is trained on it."""
    t = spec.type
    name = spec.name
    required = spec.required
    n = len(values)
    if t in FLOAT_TYPES:
        out = np.empty(n, dtype=NUMPY_DTYPE[t])
        if t == "double":
            _convert_floats(spec, values, from_csv, out)
            return out
        with np.errstate(over="ignore"):  # a double too large for float32: named below
            _convert_floats(spec, values, from_csv, out)
        _check_float32_range(spec, out, values)
        return out
    if t in INT_TYPES:
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
    if t == "boolean":
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
    if t in ("string", "binary"):
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
    if t == "datetime":
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
    # array / object / map / any: accept as given (best effort)
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


# --- validation ------------------------------------------------------------------------------


def validate(table: Table, sig: Signature, maybe_bools: bool = True) -> Batch:
    """Check ``table`` against ``sig`` and return a :class:`Batch` for the model.

    ``maybe_bools`` is False when the raw body cannot contain JSON ``true``/``false`` (a byte
    scan done by the caller), which lets numeric data take the numpy fast path safely.
    """
    if sig.kind == "columns":
        return _validate_columns(table, sig, maybe_bools)
    if sig.kind == "tensor":
        return _validate_tensor(table, sig, maybe_bools)
    return _best_effort(table)


def _validate_columns(table: Table, sig: Signature, maybe_bools: bool) -> Batch:
    if isinstance(table, Rows):
        return _columns_from_rows(table, sig, maybe_bools)
    if isinstance(table, Records):
        return _columns_from_records(table, sig, maybe_bools)
    return _columns_from_columnar(table, sig)


def _check_required(sig: Signature, present: set[str] | list[str]) -> None:
    present_set = present if isinstance(present, set) else set(present)
    missing = [c.name for c in sig.columns if c.required and c.name not in present_set]
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        plural = "s" if len(missing) > 1 else ""
        raise InputError(
            f"missing required column{plural} {names}; the model expects columns "
            + ", ".join(f"'{n}'" for n in sig.names)
        )


def _columns_from_rows(table: Rows, sig: Signature, maybe_bools: bool) -> Batch:
    rows = table.rows
    if not isinstance(rows, list):
        raise InputError("expected a list of rows")
    if not rows:
        raise InputError(EMPTY_BATCH)
    cols = table.columns
    ncol = len(sig.columns)
    if cols is None:
        width = len(rows[0]) if isinstance(rows[0], list) else 1
        if width != ncol:
            raise InputError(
                f"rows without column names must have {ncol} values in signature order "
                f"({', '.join(repr(n) for n in sig.names)}), got {width} in row 0"
            )
        cols = sig.names
    else:
        if len(set(cols)) != len(cols):
            raise InputError("duplicate column names in 'columns'")
        _check_required(sig, cols)
    positions = {c: j for j, c in enumerate(cols)}
    # Fast path: all-numeric signature, numbers only, rectangular.
    if sig.all_numeric and (not maybe_bools or table.from_csv):
        matrix = _numeric_matrix(rows, len(cols), sig, table.from_csv)
        if matrix is not None:
            if list(cols) != sig.names:
                if all(n in positions for n in sig.names):
                    matrix = matrix[:, [positions[n] for n in sig.names]]
                else:
                    matrix = None
            if matrix is not None:
                return Batch(n_rows=len(rows), names=sig.names, matrix=matrix)
    # Careful path: exact per-value checks and messages.
    width = len(cols)
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(f"row {i}: expected a list of {width} values, got {json_type(row)}")
        if len(row) != width:
            raise InputError(f"row {i}: expected {width} values (one per column), got {len(row)}")
    columns: dict[str, np.ndarray] = {}
    for spec in sig.columns:
        j = positions.get(spec.name)
        values = [MISSING] * len(rows) if j is None else [row[j] for row in rows]
        columns[spec.name] = convert_column(spec, values, table.from_csv)
    return _typed_batch(sig, columns, len(rows))


def _numeric_matrix(
    rows: list[Any], width: int, sig: Signature, from_csv: bool
) -> np.ndarray | None:
    """Rows → 2-D float64 (or int64) array, or None when the careful path must decide."""
    try:
        if from_csv:
            if not sig.all_float:
                return None
            a = np.array(rows, dtype=np.float64)
            if not np.isfinite(a).all():  # "nan" or "inf" cells: the careful path decides
                return None
        else:
            a = np.array(rows)
    except (ValueError, TypeError):
        return None
    if a.ndim != 2 or a.shape[1] != width:
        return None
    kind = a.dtype.kind
    if sig.all_float and kind in "fi":
        return a if kind == "f" and a.dtype == np.float64 else a.astype(np.float64)
    if sig.all_int and kind == "i":
        return a
    return None


def _typed_batch(sig: Signature, columns: dict[str, np.ndarray], n: int) -> Batch:
    batch = Batch(n_rows=n, names=sig.names, columns=columns)
    if sig.all_numeric:
        batch.matrix = np.column_stack(
            [columns[name].astype(np.float64, copy=False) for name in sig.names]
        )
    return batch


def _columns_from_records(table: Records, sig: Signature, maybe_bools: bool) -> Batch:
    records = table.records
    if not isinstance(records, list):
        raise InputError("expected a list of records")
    if not records:
        raise InputError(EMPTY_BATCH)
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise InputError(f"row {i}: expected an object of column values, got {json_type(r)}")
    present: set[str] = set()
    for r in records:
        present.update(r)
    _check_required(sig, present)
    names = sig.names
    if sig.all_numeric and not maybe_bools and present.issuperset(names):
        try:
            rows = [[r[n] for n in names] for r in records]
        except KeyError:
            rows = None
        if rows is not None:
            matrix = _numeric_matrix(rows, len(names), sig, False)
            if matrix is not None:
                return Batch(n_rows=len(records), names=names, matrix=matrix)
    columns = {
        spec.name: convert_column(spec, [r.get(spec.name, MISSING) for r in records], False)
        for spec in sig.columns
    }
    return _typed_batch(sig, columns, len(records))


def _columns_from_columnar(table: Columnar, sig: Signature) -> Batch:
    data = table.data
    _check_required(sig, set(data))
    lengths = set()
    for name in sig.names:
        v = data.get(name)
        if v is None:
            continue
        if not isinstance(v, list):
            data[name] = v = [v]
        lengths.add(len(v))
    if len(lengths) > 1:
        detail = ", ".join(f"'{n}': {len(data[n])}" for n in sig.names if n in data)
        raise InputError(f"columns have different lengths ({detail})")
    n = lengths.pop() if lengths else 0
    if n == 0:
        raise InputError(EMPTY_BATCH)
    columns = {}
    for spec in sig.columns:
        values = data.get(spec.name)
        if values is None:
            values = [MISSING] * n
        elif values and isinstance(values[0], list) and all(
            isinstance(x, list) and len(x) == 1 for x in values
        ):
            values = [x[0] for x in values]  # shape [n, 1] tensors from the v2 protocol
        columns[spec.name] = convert_column(spec, values, False)
    return _typed_batch(sig, columns, n)


def _validate_tensor(table: Table, sig: Signature, maybe_bools: bool) -> Batch:
    if len(sig.tensors) > 1 or (sig.tensors[0].name is not None and isinstance(table, Columnar)):
        if not isinstance(table, Columnar):
            raise InputError(
                "this model takes named tensors "
                + ", ".join(f"'{t.name}'" for t in sig.tensors)
                + "; send them as {\"inputs\": {name: data}}"
            )
        out = {}
        for spec in sig.tensors:
            if spec.name not in table.data:
                raise InputError(f"missing required tensor '{spec.name}'")
            out[spec.name] = _check_tensor(table.data[spec.name], spec, maybe_bools)
        n = next(iter(out.values())).shape[0] if out else 0
        return Batch(n_rows=n, tensor=out)
    spec = sig.tensors[0]
    if isinstance(table, Rows):
        data: Any = table.rows
    elif isinstance(table, Columnar) and len(table.data) == 1:
        data = next(iter(table.data.values()))
    else:
        raise InputError("this model takes one unnamed tensor; send {\"inputs\": [[...], ...]}")
    arr = _check_tensor(data, spec, maybe_bools)
    return Batch(n_rows=arr.shape[0] if arr.ndim else 1, tensor=arr)


def _check_tensor(data: Any, spec: TensorSpec, maybe_bools: bool) -> np.ndarray:
    label = f"tensor '{spec.name}'" if spec.name else "input tensor"
    if isinstance(data, list) and not data:
        raise InputError(EMPTY_BATCH)
    try:
        arr = np.array(data)
    except ValueError:
        raise InputError(f"{label}: rows have inconsistent lengths (ragged array)") from None
    want = spec.dtype
    kind = arr.dtype.kind
    ok = (
        (want.kind == "f" and kind in "fi")
        or (want.kind in "iu" and kind in "iu")
        or (want.kind == "b" and kind == "b")
        or (want.kind in "USO")
    )
    if ok and maybe_bools and want.kind in "fiu" and kind in "fi":
        ok = not any(type(v) is bool for v in _flat(data))
    if not ok:
        bad = next((v for v in _flat(data) if not _fits(v, want)), None)
        raise InputError(
            f"{label}: expected {want.name}, got {json_type(bad)} {show(bad)}"
            if bad is not None or kind == "O"
            else f"{label}: expected {want.name}, got {arr.dtype.name}"
        )
    if len(spec.shape) != arr.ndim or any(
        s != -1 and s != a for s, a in zip(spec.shape, arr.shape, strict=False)
    ):
        raise InputError(
            f"{label}: expected shape {list(spec.shape)}, got {list(arr.shape)}"
        )
    if arr.ndim and arr.shape[0] == 0:
        raise InputError(EMPTY_BATCH)
    if want.kind == "O":
        return arr
    with np.errstate(over="ignore"):
        out = arr.astype(want, copy=False)
    if want.kind == "f" and out is not arr and np.isinf(out).any() and np.isfinite(arr).all():
        raise InputError(f"{label}: a value is out of range for {want.name}")
    return out


def _flat(data: Any) -> Any:
    if isinstance(data, list):
        for x in data:
            yield from _flat(x)
    else:
        yield data


def _fits(v: Any, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return type(v) in (int, float)
    if dtype.kind in "iu":
        return type(v) is int
    if dtype.kind == "b":
        return type(v) is bool
    return True


def _best_effort(table: Table) -> Batch:
    """No signature: pass data through in the most natural shape."""
    if isinstance(table, Rows):
        if not table.rows:
            raise InputError(EMPTY_BATCH)
        if table.columns is None:
            try:
                arr = np.array(table.rows)
            except ValueError:
                raise InputError("rows have inconsistent lengths (ragged array)") from None
            return Batch(n_rows=len(table.rows), tensor=arr)
        names = list(table.columns)
        columns = {}
        for j, name in enumerate(names):
            values = [row[j] for row in table.rows]
            if table.from_csv:
                columns[name] = _csv_guess(values)
            else:
                columns[name] = np.array(values, dtype=object if _mixed(values) else None)
        return Batch(n_rows=len(table.rows), names=names, columns=columns)
    if isinstance(table, Records):
        if not table.records:
            raise InputError(EMPTY_BATCH)
        names = list(dict.fromkeys(k for r in table.records for k in r))
        columns = {n: np.array([r.get(n) for r in table.records]) for n in names}
        return Batch(n_rows=len(table.records), names=names, columns=columns)
    names = list(table.data)
    columns = {n: np.asarray(table.data[n]) for n in names}
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        raise InputError(EMPTY_BATCH)
    return Batch(n_rows=n, names=names, columns=columns)


def _mixed(values: list[Any]) -> bool:
    return len({type(v) for v in values}) > 1


def _csv_guess(values: list[str]) -> np.ndarray:
    for dtype in (np.int64, np.float64):
        try:
            return np.array(values, dtype=dtype)
        except (ValueError, OverflowError):  # OverflowError: an integer beyond int64
            continue
    return np.array(values, dtype=object)
