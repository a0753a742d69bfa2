"""The runner with a whole_job runtime (Kubernetes Indexed Job, Swarm replicated job): the
indices still to do are submitted, the orchestrator's per-index states are read, the output is
assembled by index, and an index the orchestrator gave up on fails the job with its reason.

The orchestrator is a stand-in (no Kubernetes or Swarm here): it records what was submitted and
"runs" an index by writing its chunk file, as the chunk's container would."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import datasets, services
from jobs.runner import output, reconciler
from quotas.models import Reservation
from tests.jobs.conftest import iris_frame, parquet_upload
from workers.runtimes.batch import BatchRuntime, ChunkPhase, ChunkState

pytestmark = pytest.mark.django_db


class StandInOrchestrator(BatchRuntime):
    mode = "whole_job"

    def __init__(self) -> None:
        self.submitted: list[list[int]] = []
        self.states: dict[int, ChunkState] = {}
        self.removed = False

    def ensure_batch_image(self, requirements, on_log=None) -> str:
        return "stand-in:latest"

    def submit_job(self, spec, indices) -> None:
        self.submitted.append(list(indices))

    def chunk_states(self, job):
        return dict(self.states)

    def remove_chunk(self, job, index) -> None:
        raise AssertionError("a whole_job runtime's indices are not removed one by one")

    def remove_job(self, job) -> None:
        self.removed = True

    def chunk_logs(self, job, index, tail=200) -> str:
        return "Traceback: MemoryError" if self.states[index].phase == "failed" else ""

    def finish(self, job, index: int) -> None:
        """What index ``index``'s pod would write: its rows' ids and a prediction."""
        staged = pq.ParquetFile(datasets.work_dir(job.pk) / "input" / "input.parquet")
        ids = staged.read_row_group(index).column("id")
        table = pa.table({"id": ids, "prediction": pa.array([index] * len(ids))})
        pq.write_table(table, output.chunk_file(job, index))
        self.states[index] = ChunkState(index=index, phase=ChunkPhase.SUCCEEDED, exit_code=0)


@pytest.fixture
def orchestrator(monkeypatch):
    runtime = StandInOrchestrator()
    monkeypatch.setattr(reconciler, "batch_runtime", lambda job: runtime)
    monkeypatch.setattr("jobs.runner.teardown.batch_runtime", lambda job: runtime)
    monkeypatch.setattr("jobs.passes.enqueue", lambda job_id: None)
    return runtime


def create(engineer, version):
    return services.create_job(actor=engineer, team=version.model.team,
                               model=version.model.name, version=1,
                               input_file=parquet_upload(iris_frame(900)), parallelism=2,
                               chunk_rows=300, output_columns=["id"])


def test_submitted_states_read_output_assembled(orchestrator, engineer, iris_version):
    job = create(engineer, iris_version)
    assert reconciler.tick(job.pk) == "running"
    assert orchestrator.submitted == [[0, 1, 2]]
    orchestrator.states[1] = ChunkState(index=1, phase=ChunkPhase.RUNNING, attempt=1)
    orchestrator.finish(job, 2)
    assert reconciler.tick(job.pk) == "running"
    assert orchestrator.submitted[-1] == [0, 1]  # idempotent re-submission of what is left
    orchestrator.finish(job, 0)
    orchestrator.finish(job, 1)
    assert reconciler.tick(job.pk) == "succeeded"
    job.refresh_from_db()
    handle, _name, _type = services.open_output(actor=engineer, job=job)
    with handle:
        out = pd.read_parquet(io.BytesIO(handle.read()))
    assert out["id"].tolist() == list(range(900))
    assert out["prediction"].tolist() == [0] * 300 + [1] * 300 + [2] * 300
    assert orchestrator.removed and not Reservation.objects.filter(owner=job.owner).exists()


def test_an_index_given_up_fails_the_job(orchestrator, engineer, iris_version):
    job = create(engineer, iris_version)
    reconciler.tick(job.pk)
    orchestrator.finish(job, 0)
    orchestrator.states[2] = ChunkState(index=2, phase=ChunkPhase.FAILED, exit_code=137,
                                        message="BackoffLimitExceeded")
    assert reconciler.tick(job.pk) == "failed"
    job.refresh_from_db()
    assert "Chunk 2 failed" in job.status_message and "BackoffLimitExceeded" in \
        job.status_message
    assert job.chunks.get(index=0).status == "succeeded"
    assert orchestrator.removed and not Reservation.objects.filter(owner=job.owner).exists()
