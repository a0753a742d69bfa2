"""Assembling a job's output: the chunks' files joined in index order (input order, each row
once), the row count asserted against the input, written as Parquet or CSV and kept in artifact
storage; and reading chunk progress files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from django.core.files.base import File

from core.lazy_imports import lazy_module
from registry.storage import artifact_storage
from workers.runtimes.batch import chunk_output, chunk_progress

from .. import datasets
from ..models import BatchJob, OutputFormat

if TYPE_CHECKING:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
else:
    pq = lazy_module("pyarrow.parquet")
    pacsv = lazy_module("pyarrow.csv")


class OutputMismatch(RuntimeError):
    """The chunks' rows do not add up to the input's."""


def output_dir(job: BatchJob) -> Path:
    return datasets.work_dir(job.pk) / "output"


def chunk_file(job: BatchJob, index: int) -> Path:
    return output_dir(job) / chunk_output(index)


def progress_of(job: BatchJob, index: int) -> int:
    """Rows a running chunk reports done (0 when it has not said yet)."""
    try:
        data = json.loads((output_dir(job) / chunk_progress(index)).read_text())
        return max(0, int(data.get("rows_done", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def chunk_rows(job: BatchJob, index: int) -> int | None:
    """The complete chunk file's row count (its footer), None when unreadable."""
    try:
        return int(pq.ParquetFile(chunk_file(job, index)).metadata.num_rows)
    except Exception:  # noqa: BLE001 - a truncated file is a failed chunk
        return None


def assemble(job: BatchJob) -> tuple[str, int]:
    """Join the chunk files in index order into the output; (storage name, size)."""
    files = [chunk_file(job, i) for i in range(job.chunks_total)]
    first = pq.ParquetFile(files[0]).schema_arrow
    final = datasets.work_dir(job.pk) / f"output.{job.output_format}"
    tmp = final.with_name(f".{final.name}.tmp")
    rows = 0
    if job.output_format == OutputFormat.PARQUET:
        with pq.ParquetWriter(tmp, first) as writer:
            for path in files:
                table = pq.read_table(path).cast(first)
                rows += table.num_rows
                writer.write_table(table)
    else:
        with tmp.open("wb") as sink:
            for i, path in enumerate(files):
                table = pq.read_table(path).cast(first)
                rows += table.num_rows
                pacsv.write_csv(table, sink,
                                write_options=pacsv.WriteOptions(include_header=i == 0))
    if rows != job.rows_total:
        tmp.unlink(missing_ok=True)
        raise OutputMismatch(f"the chunks hold {rows} rows, the input {job.rows_total}")
    tmp.rename(final)
    storage = artifact_storage()
    name = f"jobs/{job.pk}/output.{job.output_format}"
    if storage.exists(name):
        storage.delete(name)
    with final.open("rb") as f:
        stored = storage.save(name, File(f))
    return stored, final.stat().st_size
