"""Model signatures (from the MLmodel file) and validation of request data against them.

The validator turns parsed request data (see :mod:`serving.protocol`) into a :class:`Batch`:
a 2-D numpy array in signature column order when every column is numeric (the fast path,
no pandas), or typed per-column arrays otherwise (:mod:`serving.values`, value by value). Every
problem raises :class:`~serving.errors.InputError` with a message naming the column, the row
(0-based, like a DataFrame index) and the offending value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.errors import InputError
from serving.values import (
    FLOAT_TYPES,
    INT_TYPES,
    MISSING,
    NUMERIC_TYPES,
    convert_column,
    json_type,
    show,
)


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
    # False for a column signature without names (``[{"type": "string"}]``, as
    # mlflow.sentence_transformers logs it): MLflow matches such columns by position, so any
    # column name (a v2 input's, a dataframe's) is accepted for them.
    named: bool = True

    def __post_init__(self) -> None:
        self.names = [c.name for c in self.columns]
        self.name_set = frozenset(self.names)
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
        named = any(s.get("name") is not None for s in specs)
        return cls(kind="columns", columns=columns, named=named)

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
        import pandas as pd  # noqa: PLC0415 - lazy: ~0.35 s, only models that take a frame

        if self.columns is not None:
            return pd.DataFrame(self.columns, columns=self.names)
        if self.matrix is not None:
            return pd.DataFrame(self.matrix, columns=self.names)
        if isinstance(self.tensor, dict):
            return pd.DataFrame({k: list(v) for k, v in self.tensor.items()})
        return pd.DataFrame(self.tensor)


EMPTY_BATCH = "empty batch: the request contains no rows"


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
    if not sig.named:
        table = _by_position(table, sig)
    if isinstance(table, Rows):
        return _columns_from_rows(table, sig, maybe_bools)
    if isinstance(table, Records):
        return _columns_from_records(table, sig, maybe_bools)
    return _columns_from_columnar(table, sig)


def _by_position(table: Table, sig: Signature) -> Table:
    """Unnamed signature columns take the request's columns in order, whatever their names
    (MLflow's own rule for a schema without names); a single column may come as a plain list
    of values (``{"inputs": ["a", "b"]}``)."""
    width = len(sig.columns)
    if isinstance(table, Rows):
        rows = table.rows
        if width == 1 and isinstance(rows, list) and rows \
                and not any(isinstance(r, list) for r in rows):
            rows = [[r] for r in rows]
        columns = table.columns
        if columns is not None and len(columns) == width:
            columns = None  # positional
        return Rows(rows=rows, columns=columns, from_csv=table.from_csv)
    if isinstance(table, Columnar) and len(table.data) == width:
        return Columnar(data=dict(zip(sig.names, table.data.values(), strict=True)))
    if width == 1 and isinstance(table, Records) and isinstance(table.records, list) \
            and table.records and all(isinstance(r, dict) and len(r) == 1 for r in table.records):
        return Records(records=[dict(zip(sig.names, r.values(), strict=True))
                                for r in table.records])
    return table


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
    if isinstance(data, np.ndarray):  # the Open Inference Protocol's typed tensors
        arr = data
        maybe_bools = False
    else:
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
