"""Score one chunk of a batch job, inside its hardened container: ``python -m serving.batch``.
No Django import.

Reads row group ``MODELPORT_CHUNK`` (or Kubernetes' ``JOB_COMPLETION_INDEX``) of
``/job/input/input.parquet`` (staged by the platform: the signature's columns already typed,
plus the columns to keep), loads the model with ``serving.loader.load`` — the same loading
path, input mode and fast paths as a replica, so the same predictions — and predicts in
sub-batches streamed from the file (memory stays bounded), rewriting ``progress-<i>.json``
after each. The chunk's file
``chunk-<i>.parquet`` is written under a temporary name and renamed: it exists only complete.
Exit 0 when it does; anything else is a failed attempt the platform retries.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from serving.loader import load
from serving.schema import Batch, Signature

INPUT = "/job/input/input.parquet"
OUTPUT = "/job/output"
SUB_BATCH_ROWS = 50_000
PREDICTION = "prediction"


def chunk_index() -> int:
    value = os.environ.get("MODELPORT_CHUNK") or os.environ.get("JOB_COMPLETION_INDEX")
    if value is None:
        raise SystemExit("MODELPORT_CHUNK is not set")
    return int(value)


def chunk_output(index: int) -> str:  # as workers.runtimes.batch names them (no import: Django-
    return f"chunk-{index:06d}.parquet"  # free either way, but serving stands alone in images)


def chunk_progress(index: int) -> str:
    return f"progress-{index:06d}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def batch_of(frame: Any, signature: Signature, keep: list[str] | None = None) -> Batch:
    """A frame of the staged columns as the validated ``Batch`` a replica would build: typed
    columns in signature order, and the float64 matrix when every column is numeric. Without
    a column signature the model gets every column but those only kept (``output_columns``)."""
    n = len(frame)
    if signature.kind != "columns" or not signature.named:
        names = [c for c in frame.columns if c not in set(keep or [])]
        return Batch(n_rows=n, names=names, columns={c: frame[c].to_numpy() for c in names})
    names = [name for name in signature.names if name in frame.columns]
    columns = {name: frame[name].to_numpy() for name in names}
    batch = Batch(n_rows=n, names=names, columns=columns)
    if signature.all_numeric and len(names) == len(signature.names):
        batch.matrix = np.column_stack([columns[c].astype(np.float64, copy=False)
                                        for c in names])
    return batch


def prediction_columns(predictions: Any, n: int) -> dict[str, Any]:
    """``prediction``, or ``prediction_<name>`` per output (a frame's columns, a dict's keys,
    a 2-D array's column numbers)."""
    import pandas as pd  # noqa: PLC0415 - present wherever serving runs batch

    if isinstance(predictions, pd.DataFrame):
        if predictions.shape[1] == 1:
            return {PREDICTION: predictions.iloc[:, 0].to_numpy()}
        return {f"{PREDICTION}_{c}": predictions[c].to_numpy() for c in predictions.columns}
    if isinstance(predictions, pd.Series):
        return {PREDICTION: predictions.to_numpy()}
    if isinstance(predictions, dict):
        return {f"{PREDICTION}_{k}": np.asarray(v) for k, v in predictions.items()}
    array = np.asarray(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        return {f"{PREDICTION}_{i}": array[:, i] for i in range(array.shape[1])}
    if array.ndim != 1 or len(array) != n:
        raise RuntimeError(f"the model returned {array.shape} for {n} rows")
    return {PREDICTION: array}


def main() -> int:
    """Stream the row group in sub-batches (memory stays bounded whatever the chunk's size)
    into a Parquet writer; the file is renamed into place only once complete."""
    import pyarrow as pa  # noqa: PLC0415 - the batch entry point's own needs
    import pyarrow.parquet as pq  # noqa: PLC0415

    index = chunk_index()
    output = Path(os.environ.get("MODELPORT_BATCH_OUTPUT", OUTPUT))
    source = pq.ParquetFile(os.environ.get("MODELPORT_BATCH_INPUT", INPUT))
    keep = json.loads(os.environ.get("MODELPORT_OUTPUT_COLUMNS", "[]") or "[]")
    total = source.metadata.row_group(index).num_rows
    progress = output / chunk_progress(index)
    write_json(progress, {"rows_done": 0, "rows": total})
    model = load(os.environ.get("MODELPORT_MODEL_DIR", "/model"))
    print(f"chunk {index}: {total} rows, model loaded in {model.load_seconds:.2f}s "
          f"({model.flavor}, {model.input_mode})", flush=True)
    final = output / chunk_output(index)
    tmp = output / f".{final.name}.tmp"
    writer = None
    done, started = 0, time.perf_counter()
    try:
        for part in source.iter_batches(batch_size=SUB_BATCH_ROWS, row_groups=[index]):
            frame = part.to_pandas()
            predicted = prediction_columns(model.predict(batch_of(frame, model.signature, keep)),
                                           len(frame))
            arrays = [part.column(name) for name in keep]
            names = list(keep)
            for name, values in predicted.items():
                arrays.append(pa.array(values.tolist() if values.dtype == object else values))
                names.append(name)
            table = pa.Table.from_arrays(arrays, names=names)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
            done += len(frame)
            write_json(progress, {"rows_done": done, "rows": total,
                                  "seconds": round(time.perf_counter() - started, 3)})
    finally:
        if writer is not None:
            writer.close()
    if done != total or writer is None:
        raise RuntimeError(f"read {done} of the chunk's {total} rows")
    os.replace(tmp, final)
    seconds = time.perf_counter() - started
    rate = total / seconds if seconds > 0 else 0.0
    print(f"chunk {index}: {total} rows scored in {seconds:.2f}s ({rate:.0f} rows/s)",
          flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - the traceback is the chunk's log; the exit code says it
        traceback.print_exc()
        sys.exit(1)
