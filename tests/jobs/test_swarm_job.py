"""A batch job end to end on a real single-node Swarm target, through the jobs runner (the core
stream's ``jobs.runner``) and ``SwarmRuntime.batch_runtime()``: the whole job is one
replicated-job service of the serving image running ``serving.batch``; the output equals the
local model's predictions row for row, and nothing is left afterwards (no service, no task
container, no job network)."""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest

from compute.models import ExecutionTarget
from jobs import datasets, services
from jobs.runner.reconciler import tick
from tests.jobs.conftest import iris_frame, local_predictions, parquet_upload, run_to_end
from tests.swarm_fixtures import swarm  # noqa: F401 - fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db,
              pytest.mark.timeout(900)]


@pytest.fixture
def swarm_target(swarm, platform_serving_image, settings, monkeypatch):  # noqa: F811
    monkeypatch.setattr("jobs.passes.enqueue", lambda job_id: None)
    return ExecutionTarget.objects.create(name="swarm-jobs", kind="swarm",
                                          settings={"network": "host"})


def test_a_job_on_a_swarm_target_runs_as_one_replicated_job(
        swarm, swarm_target, engineer, iris_version, iris_dir):  # noqa: F811
    from teams.installation import installation_id

    frame = iris_frame(3_000, seed=3)
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=2,
                              chunk_rows=1_000, output_columns=["id"],
                              resources={"cpu": 0.5, "memory_mb": 768},
                              target=swarm_target.name)
    assert (job.target, job.runtime) == (swarm_target, "swarm")
    assert job.chunks_total == 3
    seen: list[str] = []

    def services_of(j) -> list:
        found = swarm.api.services(filters={"label": [f"modelport.job={j.name}",
                                                      f"modelport.installation="
                                                      f"{installation_id()}"]})
        seen.extend(s["Spec"]["Name"] for s in found)
        return found

    assert run_to_end(job, until=lambda j: bool(services_of(j)) and False) == "succeeded", \
        job.status_message
    assert len(set(seen)) == 1  # one service for the whole job, never resubmitted
    handle, _name, _type = services.open_output(actor=engineer, job=job)
    with handle:
        out = pd.read_parquet(io.BytesIO(handle.read()))
    assert list(out.columns) == ["id", "prediction"] and len(out) == 3_000
    assert (out["id"].to_numpy() == np.arange(3_000)).all()
    assert (out["prediction"].to_numpy() == np.asarray(local_predictions(iris_dir,
                                                                         frame))).all()
    assert services_of(job) == []
    assert swarm.containers.list(all=True, filters={"label": f"modelport.job={job.name}"}) == []

    def network_left() -> bool:
        return bool([n for n in swarm.api.networks() if n["Name"].endswith(f"-{job.name}")])

    # Swarm releases a removed task's network endpoint lazily: on a loaded machine the network
    # can outlive the job's last tick, and the ticks beat gives a just-ended job remove it.
    deadline = time.monotonic() + 120
    while network_left() and time.monotonic() < deadline:
        tick(job.pk)
        time.sleep(1)
    assert not network_left()
    assert not datasets.work_dir(job.pk).exists()
