"""A job's input: read (CSV or Parquet, in the platform — no model code runs here), checked
against the version's input signature, and staged as one Parquet file whose row groups are the
job's chunks.

Why stage at all: every chunk container then reads exactly its own row group of one file
(``pyarrow.parquet.ParquetFile.read_row_group``), the values already have the signature's types
(a cast problem is the user's 400 at submission, not a failed chunk an hour later), and the
staged file is kept in artifact storage for drift and re-runs (``jobs:/<id>/input``).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings

from core.errors import InvalidInput
from core.lazy_imports import lazy_module
from core.uploads import UploadTooLarge
from registry import reference

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    np = lazy_module("numpy")
    pd = lazy_module("pandas")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

FIELD = "input"
INPUT_FILE = "input.parquet"
MAX_CHUNK_ROWS = 1_000_000  # pyarrow's own row group ceiling
FLOATS = {"double": "float64", "float": "float64"}
INTEGERS = {"long": "int64", "integer": "int64"}
TRUE, FALSE = {"true", "1", "t", "yes", "y"}, {"false", "0", "f", "no", "n"}


@dataclass
class InputData:
    """What was read: the table (signature columns cast, plus the columns kept), and where it
    came from (for the audit record and lineage)."""

    table: pa.Table
    fmt: str  # csv | parquet
    sha256: str
    size: int
    filename: str = ""
    uri: str = ""

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def max_input_bytes() -> int:
    return int(getattr(settings, "MODELPORT_JOB_MAX_INPUT_MB", 512)) * 1024 * 1024


def _on_disk(stream: IO[bytes]) -> tuple[Path, str, int] | None:
    """An upload Django already wrote to a temporary file (``TemporaryUploadedFile``): hashed
    and measured where it is, not copied again (a 200 MB CSV is read once less)."""
    where = getattr(stream, "temporary_file_path", None)
    if not callable(where):
        return None
    path = Path(where())
    size, digest = path.stat().st_size, hashlib.sha256()
    if size > max_input_bytes():
        raise UploadTooLarge(f"The input is over {max_input_bytes() // 1048576} MB "
                             "(MODELPORT_JOB_MAX_INPUT_MB).", field=FIELD)
    with path.open("rb") as f:
        while piece := f.read(1024 * 1024):
            digest.update(piece)
    return path, digest.hexdigest(), size


def _spool(stream: IO[bytes], name: str) -> tuple[Path, str, int]:
    """Copy the input to a private temporary file (seekable, size-limited), hashing it."""
    limit = max_input_bytes()
    digest = hashlib.sha256()
    size = 0
    tmp_root = Path(settings.MODELPORT_DATA_DIR) / "jobs" / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(dir=tmp_root, suffix=Path(name).suffix[:10])
    with open(handle, "wb") as out:
        stream.seek(0)
        while piece := stream.read(1024 * 1024):
            size += len(piece)
            if size > limit:
                Path(path).unlink(missing_ok=True)
                raise UploadTooLarge(f"The input is over {limit // 1048576} MB "
                                     "(MODELPORT_JOB_MAX_INPUT_MB).", field=FIELD)
            digest.update(piece)
            out.write(piece)
    return Path(path), digest.hexdigest(), size


def read_input(stream: IO[bytes], name: str, *, signature: dict[str, Any] | None,
               keep: list[str], uri: str = "") -> InputData:
    """Read, check and type the input; ``InvalidInput`` naming the problem otherwise."""
    kept = _on_disk(stream)
    path, sha256, size = kept or _spool(stream, name)
    try:
        with path.open("rb") as f:
            try:
                fmt = reference.check_upload(
                    f, name, max_columns=settings.MODELPORT_REFERENCE_MAX_COLUMNS)
            except InvalidInput as exc:
                raise InvalidInput(exc.message.replace("reference_data", "The input"),
                                   field=FIELD) from None
        table = _parse(path, fmt, signature)
    finally:
        if kept is None:  # Django removes its own temporary file
            path.unlink(missing_ok=True)
    if table.num_rows == 0:
        raise InvalidInput("The input has no rows.", field=FIELD, code="empty_input")
    unknown = [c for c in keep if c not in table.column_names]
    if unknown:
        raise InvalidInput(f"output_columns names columns the input does not have: "
                           f"{', '.join(unknown)} (it has {', '.join(table.column_names[:20])}).",
                           field="output_columns")
    table = conform(table, signature, keep)
    return InputData(table=table, fmt=fmt, sha256=sha256, size=size,
                     filename="" if uri else Path(name).name[:300], uri=uri)


def _parse(path: Path, fmt: str, signature: dict[str, Any] | None = None) -> pa.Table:
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        typed = _typed_csv(path, signature)
        if typed is not None:
            return typed
        # Every CSV cell as text: the signature decides the types, and a bad cell is named.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        return pa.Table.from_pandas(frame, preserve_index=False)
    except Exception as exc:  # noqa: BLE001 - any parser error is the user's file
        raise InvalidInput(f"The input is not a readable {fmt.upper()} file: "
                           f"{str(exc).splitlines()[0][:300]}", field=FIELD) from None


ARROW_TYPES = {"double": "float64", "float": "float64", "long": "int64", "integer": "int64",
               "boolean": "bool", "string": "string"}


def _typed_csv(path: Path, signature: dict[str, Any] | None) -> pa.Table | None:
    """The CSV read by Arrow with the signature's types (17 CPU-s → under 1 for a 210 MB file
    of numbers), or None when that read fails or leaves a required cell empty: the text path
    then reads it, and its ``conform`` names the first bad row. Columns outside the signature
    stay text either way, as the text path keeps them."""
    import pyarrow.compute as pc  # noqa: PLC0415 - only for CSV inputs
    import pyarrow.csv as pacsv  # noqa: PLC0415

    specs = signature_columns(signature)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), [])
    if not header or "" in header or len(set(header)) != len(header):
        return None  # pandas names and renames such columns: its path keeps its names
    kinds = {s["name"]: str(s.get("type", "")) for s in specs or []}
    # Without a column signature the model gets every column as Arrow infers it (numbers as
    # numbers, as `mlflow models predict` reads a CSV); with one, other columns stay text.
    types = {name: pa.type_for_alias(ARROW_TYPES.get(kinds.get(name, ""), "string"))
             for name in header if specs is not None or name in kinds}
    options = pacsv.ConvertOptions(
        column_types=types, null_values=[""], strings_can_be_null=True,
        true_values=sorted(TRUE | {v.upper() for v in TRUE} | {v.title() for v in TRUE}),
        false_values=sorted(FALSE | {v.upper() for v in FALSE} | {v.title() for v in FALSE}))
    try:
        table = pacsv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    for spec in specs or []:
        column = spec["name"]
        if (column in table.column_names and spec.get("required", True)
                and kinds[column] != "string" and table.column(column).null_count):
            return None
        if kinds.get(column) in FLOATS and column in table.column_names and \
                pc.any(pc.is_nan(table.column(column))).as_py():
            return None  # "nan" in a cell: the text path refuses it by row
    return table


def signature_columns(signature: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The signature's named input columns, or None when it has no column signature."""
    inputs = (signature or {}).get("inputs") or []
    if isinstance(inputs, str):
        import json  # noqa: PLC0415 - rare: an MLmodel string kept as is

        inputs = json.loads(inputs)
    if not inputs or any(s.get("type") == "tensor" or s.get("name") is None for s in inputs):
        return None
    return inputs


def conform(table: pa.Table, signature: dict[str, Any] | None, keep: list[str]) -> pa.Table:
    """The signature's columns, cast to their types (missing ones named; the first value that
    cannot be cast named with its row, 1-based), then the kept columns as read. Without a
    column signature the table is kept whole."""
    specs = signature_columns(signature)
    if specs is None:
        if (signature or {}).get("inputs"):
            raise InvalidInput("Batch jobs need a model with a named-column input signature "
                               "(or none); this one takes tensors.", field="version")
        return table
    present = set(table.column_names)
    missing = [s["name"] for s in specs if s.get("required", True) and s["name"] not in present]
    if missing:
        raise InvalidInput(f"The input lacks the signature's column(s): {', '.join(missing)}.",
                           field=FIELD, code="missing_columns", extra={"columns": missing})
    arrays, names = [], []
    for spec in specs:
        if spec["name"] not in present:
            continue
        arrays.append(_cast(table.column(spec["name"]).to_pandas(), spec))
        names.append(spec["name"])
    for name in keep:
        if name not in names:
            arrays.append(table.column(name).combine_chunks())
            names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _bad(column: str, row: int, value: Any, kind: str) -> InvalidInput:
    return InvalidInput(f"Column '{column}', row {row}: {value!r} is not {kind}.", field=FIELD,
                        code="bad_value", extra={"column": column, "row": row})


def _cast(values: pd.Series, spec: dict[str, Any]) -> pa.Array:
    name, kind = spec["name"], str(spec.get("type", "any"))
    missing = values.isna().to_numpy()
    if missing.any() and spec.get("required", True) and kind != "string":
        row = int(np.flatnonzero(missing)[0]) + 1
        raise _bad(name, row, None, f"a {kind} (the column is required)")
    if kind in FLOATS or kind in INTEGERS:
        numbers = pd.to_numeric(values, errors="coerce")
        wrong = numbers.isna().to_numpy() & ~missing
        if kind in INTEGERS and not wrong.any():
            with np.errstate(invalid="ignore"):
                as_float = numbers.to_numpy(dtype="float64", na_value=np.nan)
                wrong |= ~missing & (as_float != np.floor(as_float))
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise _bad(name, row + 1, values.iloc[row], f"a {kind}")
        if kind in INTEGERS and not missing.any():
            return pa.array(numbers.to_numpy().astype("int64"))
        return pa.array(numbers.to_numpy(dtype="float64", na_value=np.nan))
    if kind == "boolean":
        if values.dtype == bool:
            return pa.array(values.to_numpy())
        text = values.astype(str).str.strip().str.lower()
        truth = text.isin(TRUE)
        wrong = ~(truth | text.isin(FALSE)).to_numpy() & ~missing
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise _bad(name, row + 1, values.iloc[row], "a boolean")
        return pa.array(truth.to_numpy())
    if kind == "string":
        return pa.array([None if m else str(v) for v, m in zip(values, missing, strict=True)],
                        type=pa.string())
    return pa.array(values)


def chunk_size(rows: int, parallelism: int, requested: int | None) -> int:
    """Rows per chunk: as asked, else the setting, smaller for small inputs so each of the
    ``parallelism`` containers gets a share."""
    if requested not in (None, ""):
        try:
            size = int(requested)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput("chunk_rows must be a whole number.", field="chunk_rows") from None
        if not 1 <= size <= MAX_CHUNK_ROWS:
            raise InvalidInput(f"chunk_rows must be 1-{MAX_CHUNK_ROWS}.", field="chunk_rows")
        return size
    default = int(getattr(settings, "MODELPORT_JOB_CHUNK_ROWS", MAX_CHUNK_ROWS))
    return max(1, min(default, math.ceil(rows / max(1, parallelism))))


def work_dir(job_id: int) -> Path:
    return Path(settings.MODELPORT_DATA_DIR) / "jobs" / str(job_id)


def stage(table: pa.Table, job_id: int, chunk_rows: int) -> Path:
    """Write the staged input (row group i = chunk i) under the job's work dir, readable by the
    containers' user; the output directory beside it is theirs to write."""
    root = work_dir(job_id)
    input_dir, output_dir = root / "input", root / "output"
    input_dir.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = input_dir / INPUT_FILE
    tmp = input_dir / f".{INPUT_FILE}.tmp"
    pq.write_table(table, tmp, row_group_size=chunk_rows)
    tmp.rename(path)
    for p in (root, input_dir):
        p.chmod(0o755)
    path.chmod(0o644)
    output_dir.chmod(0o777)  # the containers run as uid 10001
    return path


def remove_work_dir(job_id: int) -> None:
    shutil.rmtree(work_dir(job_id), ignore_errors=True)


SAFE_NAME = re.compile(r"^[A-Za-z0-9._/\-]+$")


def check_storage_name(name: str) -> str:
    """An artifact storage name a user gave: relative, no '..', plain characters."""
    if not name or not SAFE_NAME.match(name) or name.startswith("/") or \
            any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidInput(f"'{name}' is not a valid artifact storage name.", field="input_uri")
    return name
