"""Reference statistics of the training data: the baseline that drift detection compares with.

Numeric features: quantiles (deciles) plus a histogram on the decile bin edges (what PSI uses);
categorical features: category frequencies. Computed from an uploaded CSV/Parquet sample or, when
there is none, from the input example. Parsing CSV/Parquet executes no model code.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from config.errors import InvalidInput

MAX_CATEGORIES = 50


def frame_from_upload(data: bytes, filename: str) -> pd.DataFrame:
    name = filename.lower()
    try:
        if name.endswith((".parquet", ".pq")) or data[:4] == b"PAR1":
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any parser error is the user's file
        raise InvalidInput(f"reference_data could not be read as CSV or Parquet: {exc}",
                           field="reference_data") from None
    if frame.empty or frame.shape[1] == 0:
        raise InvalidInput("reference_data has no rows.", field="reference_data")
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
            return pd.DataFrame(np.atleast_2d(np.asarray(rows, dtype=object)))
    return None


def compute(frame: pd.DataFrame, *, source: str) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for column in frame.columns:
        series = frame[column].dropna()
        name = str(column)
        numeric = pd.to_numeric(series, errors="coerce")
        if len(series) and numeric.notna().all() and series.dtype != bool:
            values = numeric.to_numpy(dtype=float)
            edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
            counts = (np.histogram(values, bins=edges)[0].tolist()
                      if len(edges) > 1 else [len(values)])
            features[name] = {
                "kind": "numeric",
                "count": len(values),
                "mean": float(values.mean()),
                "std": float(values.std()),
                "min": float(values.min()),
                "max": float(values.max()),
                "quantiles": [float(q) for q in np.quantile(values, np.linspace(0, 1, 11))],
                "bin_edges": [float(e) for e in edges],
                "bin_counts": counts,
            }
        else:
            frequencies = series.astype(str).value_counts()
            top = frequencies.head(MAX_CATEGORIES)
            features[name] = {
                "kind": "categorical",
                "count": len(series),
                "frequencies": {str(k): int(v) for k, v in top.items()},
                "other": int(frequencies.iloc[MAX_CATEGORIES:].sum()),
            }
    return {"source": source, "rows": len(frame), "features": features}
