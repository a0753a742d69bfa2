"""Reference statistics of the training data: the baseline that drift detection compares with.

Numeric features: quantiles (deciles), a histogram on the decile bin edges (what PSI uses) and
a bounded random sample of the values (what the KS test compares with: ``sample_size``);
categorical features: category frequencies. Computed from an uploaded CSV/Parquet sample or, when
there is none, from the input example. Parsing CSV/Parquet executes no model code.

Parsing and profiling happen in a Celery task (``registry.services.compute_reference``): a
request only runs ``check_upload``, which reads the CSV header line or the Parquet footer to
refuse more than ``MODELPORT_REFERENCE_MAX_COLUMNS`` columns (100,000 columns tied a web worker
for 73 s).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from core.errors import InvalidInput
from core.lazy_imports import lazy_module

# Imported when first used: every Django process loads this module (issue 26, memory).
if TYPE_CHECKING:  # the real modules, for annotations
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    np = lazy_module("numpy")
    pd = lazy_module("pandas")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

MAX_CATEGORIES = 50
# Profiling reads at most this many rows: the statistics of a larger sample hardly move.
MAX_ROWS = 1_000_000
# A Parquet footer (the schema and per-column metadata) larger than this is refused unread.
MAX_PARQUET_FOOTER = 16 * 1024 * 1024
# A CSV header line is counted exactly (quoted names may hold commas) up to this length.
MAX_EXACT_HEADER = 4 * 1024 * 1024
FIELD = "reference_data"
# The KS test's reference: up to SAMPLE_PER_FEATURE values of each numeric feature, drawn at
# random (seeded, so a baseline is reproducible), at most SAMPLE_BUDGET values per baseline
# (it is stored with the version's statistics). Fewer than SAMPLE_MIN per feature: no sample,
# and drift rebuilds one from the deciles (as for baselines profiled before samples were kept).
SAMPLE_PER_FEATURE = 1000
SAMPLE_BUDGET = 50_000
SAMPLE_MIN = 100
# Text features (free-text string columns, e.g. a sentence-embedding model's input): the
# distribution of their length in tokens (a numeric profile) and of their vocabulary (the
# TOP_TOKENS most frequent tokens' counts, the rest as "other"). A string column is text when
# its values average at least TEXT_MIN_TOKENS tokens, or when most of its values are distinct
# and there are more of them than categories are kept.
TOP_TOKENS = 200
TEXT_MIN_TOKENS = 2.5
TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """The tokens vocabulary drift counts: lower-cased words (letters, digits, underscore)."""
    return TOKEN.findall(text.lower())


def _too_many(columns: int | str, limit: int) -> InvalidInput:
    return InvalidInput(f"reference_data has {columns} columns; the limit is {limit} "
                        "(MODELPORT_REFERENCE_MAX_COLUMNS).", field=FIELD)


def is_parquet(name: str, head: bytes) -> bool:
    return name.lower().endswith((".parquet", ".pq")) or head[:4] == b"PAR1"


def check_upload(stream: IO[bytes], name: str, *, max_columns: int) -> str:
    """What the request can check cheaply, before the file is kept for the profiling task:
    that it is CSV or Parquet with at most ``max_columns`` columns — from the CSV header line
    (read in 1 MB pieces, stopping once it is over the limit) or the Parquet footer (its size
    first). Returns ``"parquet"`` or ``"csv"``."""
    stream.seek(0)
    head = stream.read(4)
    if not head:
        raise InvalidInput("reference_data is empty.", field=FIELD)
    if is_parquet(name, head):
        _check_parquet(stream, max_columns)
        return "parquet"
    stream.seek(0)
    _check_csv_header(stream, max_columns)
    return "csv"


def _check_parquet(stream: IO[bytes], max_columns: int) -> None:
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    if size < 12:
        raise InvalidInput("reference_data is not a readable Parquet file: too short.",
                           field=FIELD)
    stream.seek(size - 8)
    tail = stream.read(8)
    footer = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or footer > size - 12:
        raise InvalidInput("reference_data is not a readable Parquet file: no footer.",
                           field=FIELD)
    if footer > MAX_PARQUET_FOOTER:
        raise InvalidInput(f"reference_data's Parquet metadata is {footer / 1048576:.0f} MB, "
                           "too many columns or row groups to profile; the column limit is "
                           f"{max_columns} (MODELPORT_REFERENCE_MAX_COLUMNS).", field=FIELD)
    stream.seek(0)
    try:
        columns = len(pq.read_schema(stream).names)
    except Exception as exc:  # noqa: BLE001 - any parser error is the user's file
        raise InvalidInput(f"reference_data is not a readable Parquet file: {exc}",
                           field=FIELD) from None
    finally:
        stream.seek(0)
    if columns > max_columns:
        raise _too_many(columns, max_columns)


def _check_csv_header(stream: IO[bytes], max_columns: int) -> None:
    """Count the header line's commas in 1 MB pieces (C-speed), stopping as soon as there are
    surely too many; only a header with quoted names (which may hold commas) near the limit is
    parsed exactly."""
    kept = bytearray()  # the header, while it is short enough to parse exactly
    length = commas = 0
    quoted = complete = False
    while not complete:
        piece = stream.read(1024 * 1024)
        if not piece:
            break
        end = piece.find(b"\n")
        if end >= 0:
            piece, complete = piece[:end], True
        length += len(piece)
        commas += piece.count(b",")
        quoted = quoted or b'"' in piece
        if length <= MAX_EXACT_HEADER:
            kept += piece
        if commas >= max_columns and (not quoted or length > MAX_EXACT_HEADER):
            break
    stream.seek(0)
    if commas < max_columns:  # at most commas + 1 <= max_columns names
        return
    if quoted and length <= MAX_EXACT_HEADER:
        try:
            names = next(csv.reader([kept.decode("utf-8", errors="replace")]))
        except (csv.Error, StopIteration):
            names = []
        if len(names) <= max_columns:
            return
        raise _too_many(len(names), max_columns)
    raise _too_many(commas + 1 if complete and not quoted else f"more than {max_columns}",
                    max_columns)


def frame_from_file(path: Path, fmt: str, *, max_columns: int) -> pd.DataFrame:
    """The reference sample (up to ``MAX_ROWS`` rows) as a frame; runs in the worker."""
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            if len(parquet.schema_arrow.names) > max_columns:
                raise _too_many(len(parquet.schema_arrow.names), max_columns)
            batches, rows = [], 0
            for batch in parquet.iter_batches(batch_size=65536):
                batches.append(batch.slice(0, MAX_ROWS - rows))
                rows += batches[-1].num_rows
                if rows >= MAX_ROWS:
                    break
            frame = pa.Table.from_batches(batches, schema=parquet.schema_arrow).to_pandas() \
                if batches else parquet.schema_arrow.empty_table().to_pandas()
        else:
            columns = pd.read_csv(path, nrows=0).shape[1]
            if columns > max_columns:
                raise _too_many(columns, max_columns)
            frame = pd.read_csv(path, nrows=MAX_ROWS)
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser error is the user's file
        raise InvalidInput(f"reference_data could not be read as CSV or Parquet: {exc}",
                           field=FIELD) from None
    if frame.empty or frame.shape[1] == 0:
        raise InvalidInput("reference_data has no rows.", field=FIELD)
    return frame


def frame_from_request(body: dict[str, Any] | None) -> pd.DataFrame | None:
    if not body:
        return None
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        return pd.DataFrame(split.get("data", []), columns=split.get("columns"))
    if "dataframe_records" in body:
        return pd.DataFrame(body["dataframe_records"])
    for key in ("instances", "inputs"):
        if key in body and isinstance(body[key], list):
            rows = body[key]
            if rows and isinstance(rows[0], dict):
                return pd.DataFrame(rows)
            if rows and all(isinstance(r, str) for r in rows):
                return pd.DataFrame({0: rows})  # strings: one text column, a row each
            array = np.asarray(rows, dtype=object)
            if array.ndim > 2:  # image-shaped tensors: one feature per element of a row
                array = array.reshape(array.shape[0], -1)
            return pd.DataFrame(np.atleast_2d(array))
    return None


def sample_size(numeric_features: int) -> int:
    """Values kept per numeric feature for the KS test (0: none, within the budget)."""
    size = min(SAMPLE_PER_FEATURE, SAMPLE_BUDGET // max(numeric_features, 1))
    return size if size >= SAMPLE_MIN else 0


def random_sample(values: np.ndarray, size: int, *, seed: int = 0) -> list[float]:
    """Up to ``size`` of ``values`` drawn uniformly without replacement, in random order (so
    any prefix is a uniform sample too)."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(values, size, replace=False) if len(values) > size \
        else rng.permutation(values)
    return [float(v) for v in picked]


def _numeric_values(series: pd.Series) -> np.ndarray | None:
    """A column's values as floats when every non-missing value is a number (not a bool)."""
    numeric = pd.to_numeric(series, errors="coerce")
    if len(series) and numeric.notna().all() and series.dtype != bool:
        return numeric.to_numpy(dtype=float)
    return None


def numeric_profile(values: np.ndarray) -> dict[str, Any]:
    """Deciles, the histogram on them (PSI) and a random sample (KS) of numeric values."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
    counts = np.histogram(values, bins=edges)[0].tolist() if len(edges) > 1 else [len(values)]
    return {
        "kind": "numeric",
        "count": len(values),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": [float(q) for q in np.quantile(values, np.linspace(0, 1, 11))],
        "bin_edges": [float(e) for e in edges],
        "bin_counts": counts,
        "sample": random_sample(values, SAMPLE_PER_FEATURE),
    }


def _is_text(series: pd.Series) -> bool:
    if not len(series) or not all(isinstance(v, str) for v in series):
        return False
    mean_tokens = sum(len(tokens(v)) for v in series) / len(series)
    distinct = series.nunique()
    return mean_tokens >= TEXT_MIN_TOKENS or (distinct > MAX_CATEGORIES
                                               and distinct > len(series) / 2)


def text_profile(series: pd.Series) -> dict[str, Any]:
    """A text column: its length in tokens (numeric) and its vocabulary (categorical)."""
    per_text = [tokens(v) for v in series]
    counts: dict[str, int] = {}
    for words in per_text:
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "kind": "text",
        "count": len(series),
        "length": numeric_profile(np.array([len(w) for w in per_text], dtype=float)),
        "vocabulary": {"kind": "categorical", "count": sum(counts.values()),
                       "frequencies": dict(top[:TOP_TOKENS]),
                       "other": sum(n for _, n in top[TOP_TOKENS:])},
    }


def compute(frame: pd.DataFrame, *, source: str) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for column in frame.columns:
        series = frame[column].dropna()
        name = str(column)
        values = _numeric_values(series)
        if values is not None:
            features[name] = numeric_profile(values)
        elif _is_text(series):
            features[name] = text_profile(series)
        else:
            frequencies = series.astype(str).value_counts()
            top = frequencies.head(MAX_CATEGORIES)
            features[name] = {
                "kind": "categorical",
                "count": len(series),
                "frequencies": {str(k): int(v) for k, v in top.items()},
                "other": int(frequencies.iloc[MAX_CATEGORIES:].sum()),
            }
    _fit_samples(features)
    return {"source": source, "rows": len(frame), "features": features}


def _fit_samples(features: dict[str, Any]) -> None:
    """Trim the numeric features' samples to the baseline's budget (prefixes of random
    orders: still uniform samples), or drop them when too few would be left."""
    numeric = [f for f in features.values() if "sample" in f]
    size = sample_size(len(numeric))
    for feature in numeric:
        if size:
            feature["sample"] = feature["sample"][:size]
        else:
            del feature["sample"]
