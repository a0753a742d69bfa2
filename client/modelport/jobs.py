"""Batch scoring jobs and their schedules: the ``Client`` methods (mixed into ``Client``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from . import errors

JSON = dict[str, Any]
TERMINAL_JOB = {"succeeded", "failed", "cancelled"}


class JobsMixin:
    """``/api/v1/jobs/`` and ``/api/v1/job-schedules/``."""

    _http: httpx.Client

    def request(self, method: str, path: str, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _all(self, path: str, params: dict[str, Any] | None = None
             ) -> Iterator[JSON]:  # pragma: no cover
        raise NotImplementedError

    # --- jobs ----------------------------------------------------------------------------------
    def jobs(self, *, team: str | None = None, model: str | None = None,
             status: str | None = None, search: str | None = None) -> list[JSON]:
        return list(self._all("/jobs/", {"team": team, "model": model, "status": status,
                                         "search": search}))

    def job(self, job_id: int) -> JSON:
        return self.request("GET", f"/jobs/{job_id}/")

    def run_job(self, *, team: str, model: str, input: str | os.PathLike[str] | None = None,
                input_uri: str | None = None, version: int | None = None,
                alias: str | None = None, output_format: str = "parquet",
                cpu: float | None = None, memory_mb: int | None = None,
                gpus: int | None = None, parallelism: int = 1,
                output_columns: list[str] | None = None, chunk_rows: int | None = None,
                max_retries: int | None = None, schedule: str | None = None,
                schedule_name: str | None = None, target: str | None = None) -> JSON:
        """Start a batch job on a local CSV/Parquet file (``input``) or an object in the
        platform's storage (``input_uri``). Returns the job (``status: queued``); follow it
        with ``wait_for_job``. ``schedule``: also repeat it on that cron expression."""
        data: JSON = {"team": team, "model": model, "output_format": output_format,
                      "parallelism": str(parallelism)}
        if version is not None:
            data["version"] = str(version)
        if alias:
            data["alias"] = alias
        resources = {k: v for k, v in (("cpu", cpu), ("memory_mb", memory_mb),
                                       ("gpus", gpus)) if v is not None}
        if resources:
            data["resources"] = json.dumps(resources)
        if output_columns:
            data["output_columns"] = json.dumps(list(output_columns))
        for key, value in (("chunk_rows", chunk_rows), ("max_retries", max_retries)):
            if value is not None:
                data[key] = str(value)
        if schedule:
            data["schedule"] = schedule
        if schedule_name:
            data["schedule_name"] = schedule_name
        if input_uri:
            data["input_uri"] = input_uri
        if target:
            data["target"] = target
        with contextlib.ExitStack() as stack:
            files = None
            if input is not None:
                path = Path(input)
                files = {"input": (path.name, stack.enter_context(path.open("rb")))}
            elif not input_uri:
                raise errors.BadRequest("give an input file or an input_uri")
            return self.request("POST", "/jobs/", data=data, files=files, timeout=None)

    def cancel_job(self, job_id: int) -> JSON:
        return self.request("POST", f"/jobs/{job_id}/cancel/")

    def retry_job(self, job_id: int) -> JSON:
        """Resume a failed job: only its chunks not done run again."""
        return self.request("POST", f"/jobs/{job_id}/retry/")

    def job_chunks(self, job_id: int) -> list[JSON]:
        return list(self._all(f"/jobs/{job_id}/chunks/"))

    def job_events(self, job_id: int, *, since: int | None = None) -> list[JSON]:
        """Newest first."""
        return list(self._all(f"/jobs/{job_id}/events/", {"since": since}))

    def job_logs(self, job_id: int, *, chunk: int | None = None, tail: int = 200) -> str:
        params: JSON = {"tail": tail}
        if chunk is not None:
            params["chunk"] = chunk
        return self.request("GET", f"/jobs/{job_id}/logs/", params=params)["logs"]

    def wait_for_job(self, job_id: int, *, timeout: float = 3600,
                     on_progress: Callable[[JSON], None] | None = None,
                     interval: float = 1.0) -> JSON:
        """Poll until the job ``succeeded`` (returned); ``failed`` or ``cancelled`` raise
        OperationFailed with its status message."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.job(job_id)
            if on_progress:
                on_progress(current)
            if current["status"] == "succeeded":
                return current
            if current["status"] in TERMINAL_JOB:
                raise errors.OperationFailed(f"job {job_id} {current['status']}: "
                                             f"{current.get('status_message', '')}",
                                             body=current)
            if time.monotonic() > deadline:
                raise errors.TimeoutExpired(f"job {job_id} is still {current['status']} after "
                                            f"{timeout:.0f}s")
            time.sleep(interval)

    def download_job_output(self, job_id: int, target: str | os.PathLike[str] | None = None
                            ) -> Path:
        """Save the output file (to ``target``; a directory or None: the server's file name
        there). ``Conflict`` until the job succeeded."""
        with self._http.stream("GET", f"/api/v1/jobs/{job_id}/output/") as response:
            if response.status_code >= 400:
                response.read()
                try:
                    body: Any = response.json()
                except ValueError:
                    body = response.text
                raise errors.from_response(response.status_code, body)
            path = Path(target) if target is not None else Path(".")
            if path.is_dir():
                path = path / _filename(response.headers.get("content-disposition", ""),
                                        f"job-{job_id}-output")
            partial = path.with_name(path.name + ".part")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
            partial.replace(path)
        return path

    # --- schedules -----------------------------------------------------------------------------
    def job_schedules(self, *, team: str | None = None) -> list[JSON]:
        return list(self._all("/job-schedules/", {"team": team}))

    def job_schedule(self, schedule_id: int) -> JSON:
        return self.request("GET", f"/job-schedules/{schedule_id}/")

    def create_job_schedule(self, *, team: str, name: str, model: str, input_uri: str,
                            cron: str = "", version: int | None = None,
                            alias: str | None = None, **options: Any) -> JSON:
        """``options``: parallelism, resources ({cpu, memory_mb, gpus}), output_format,
        output_columns, enabled."""
        body: JSON = {"team": team, "name": name, "model": model, "input_uri": input_uri,
                      "cron": cron, **{k: v for k, v in options.items() if v is not None}}
        if version is not None:
            body["version"] = version
        if alias:
            body["alias"] = alias
        return self.request("POST", "/job-schedules/", json=body)

    def update_job_schedule(self, schedule_id: int, **changes: Any) -> JSON:
        return self.request("PATCH", f"/job-schedules/{schedule_id}/", json=changes)

    def delete_job_schedule(self, schedule_id: int) -> None:
        self.request("DELETE", f"/job-schedules/{schedule_id}/")

    def run_job_schedule(self, schedule_id: int) -> JSON:
        """One run now; returns the job."""
        return self.request("POST", f"/job-schedules/{schedule_id}/run/")


def _filename(disposition: str, default: str) -> str:
    """The file name of a ``Content-Disposition: attachment; filename="…"`` header, without
    any directory part."""
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            return Path(value.strip().strip('"')).name or default
    return default
