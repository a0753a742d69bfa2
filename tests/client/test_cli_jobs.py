"""``modelport job …`` and the client's job methods against a live Modelport server.

The runner is replaced by a stand-in (``finish``, put where the runner's tick is enqueued):
it does what the runner does at the end — one output row per input row, in input order, the
kept columns and a ``prediction`` column (a constant here: which predictions are right is the
core stream's Docker tests' business) — and marks the job succeeded, or failed. What is under
test is the CLI: waiting with a progress line, downloading, exit codes, tables and JSON."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from modelport import Client, cli

from jobs.models import BatchJob, JobChunk, JobSchedule, JobStatus
from registry import mlmodel
from registry.models import RegisteredModel
from registry.storage import artifact_storage
from teams.models import Team
from teams.roles import Role
from tests.deployments.conftest import make_version
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory
from tests.jobs.conftest import iris_frame

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engineer(db):
    user = UserFactory(username="cora")
    MembershipFactory(team=TeamFactory(slug="ml-search"), user=user, role=Role.ENGINEER)
    return user


@pytest.fixture
def iris(engineer, iris_dir):
    model = RegisteredModel.objects.create(name="iris", team=Team.objects.get(slug="ml-search"))
    version = make_version(model, 1, iris_dir)
    version.signature = mlmodel.read_metadata(iris_dir).signature
    version.save()
    return version


@pytest.fixture
def token(live_server, engineer) -> str:
    return Client(live_server.url, token="").create_token("cora", PASSWORD,
                                                          name="tests")["token"]


@pytest.fixture
def base(live_server, token) -> list[str]:
    return ["--url", live_server.url, "--token", token]


@pytest.fixture
def runner(monkeypatch):
    """The stand-in runner: ``outcome["next"]`` says how the next job ends (succeeded,
    failed, or None: it stays queued)."""
    outcome: dict = {"next": "succeeded", "ran": []}

    def finish(job_id: int) -> None:
        outcome["ran"].append(job_id)
        how = outcome["next"]
        if how is None:
            return
        job = BatchJob.objects.get(pk=job_id)
        if how == "failed":
            JobChunk.objects.filter(job=job).update(status="failed", attempts=3,
                                                    error="exit 137 (out of memory)")
            BatchJob.objects.filter(pk=job_id).update(
                status=JobStatus.FAILED, finished_at=timezone.now(),
                status_message="Chunk 0 failed 3 times: exit 137 (out of memory).")
            return
        with artifact_storage().open(job.input_name, "rb") as f:
            frame = pd.read_parquet(io.BytesIO(f.read()))
        out = frame[list(job.output_columns)].assign(prediction=0)
        data = (out.to_csv(index=False).encode() if job.output_format == "csv"
                else out.to_parquet(index=False))
        name = artifact_storage().save(f"jobs/{job_id}/output.{job.output_format}",
                                       ContentFile(data))
        JobChunk.objects.filter(job=job).update(status="succeeded", attempts=1)
        BatchJob.objects.filter(pk=job_id).update(
            status=JobStatus.SUCCEEDED, rows_done=job.rows_total, rows_per_s=5000.0,
            output_name=name, output_size=len(data), started_at=timezone.now(),
            finished_at=timezone.now(), status_message="Succeeded.")

    monkeypatch.setattr("jobs.passes.enqueue", finish)
    return outcome


@pytest.fixture
def input_csv(tmp_path):
    path = tmp_path / "customers.csv"
    iris_frame(50).to_csv(path, index=False)
    return path


def test_run_waits_with_a_progress_line_and_downloads_the_output(base, iris, runner,
                                                                 input_csv, tmp_path, capsys):
    out = tmp_path / "scored.csv"
    code = cli.main([*base, "job", "run", str(input_csv), "--team", "ml-search",
                     "--model", "iris", "--version", "1", "--parallelism", "2",
                     "--format", "csv", "--keep", "id", "--cpu", "0.5", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    job = BatchJob.objects.get()
    assert (job.parallelism, float(job.cpu), job.output_columns) == (2, 0.5, ["id"])
    assert f"job {job.pk} succeeded" in captured.out and "50 rows" in captured.out
    assert "50/50 rows" in captured.err  # the progress line
    scored = pd.read_csv(out)
    assert list(scored.columns) == ["id", "prediction"] and scored["id"].tolist() == \
        list(range(50))


def test_no_wait_list_status_logs_output_and_cancel(base, iris, runner, input_csv, tmp_path,
                                                   capsys):
    runner["next"] = None  # it stays queued
    assert cli.main([*base, "job", "run", str(input_csv), "--team", "ml-search", "--model",
                     "iris", "--alias", "missing", "--no-wait"]) == 4
    capsys.readouterr()
    assert cli.main([*base, "job", "run", str(input_csv), "--team", "ml-search", "--model",
                     "iris", "--version", "1", "--no-wait", "-q"]) == 0
    job_id = int(capsys.readouterr().out.strip())
    assert cli.main([*base, "--json", "job", "list", "--model", "iris"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in listed] == [job_id] and listed[0]["status"] == "queued"
    assert cli.main([*base, "job", "list"]) == 0
    assert "0/50" in capsys.readouterr().out
    assert cli.main([*base, "job", "status", str(job_id)]) == 0
    shown = capsys.readouterr().out
    assert f"job {job_id} queued" in shown and "INDEX" in shown
    assert cli.main([*base, "job", "logs", str(job_id)]) == 0
    assert cli.main([*base, "job", "output", str(job_id), "-o", str(tmp_path)]) == 5
    assert "exists once it succeeded" in capsys.readouterr().err
    assert cli.main([*base, "job", "cancel", str(job_id)]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert cli.main([*base, "job", "cancel", str(job_id)]) == 5
    assert cli.main([*base, "job", "status", str(job_id)]) == 10
    assert cli.main([*base, "job", "status", "999999"]) == 4


def test_a_failed_job_exits_10_with_the_reason_then_retry(base, iris, runner, input_csv,
                                                         tmp_path, capsys):
    runner["next"] = "failed"
    assert cli.main([*base, "job", "run", str(input_csv), "--team", "ml-search", "--model",
                     "iris", "--version", "1"]) == 10
    assert "out of memory" in capsys.readouterr().err
    job = BatchJob.objects.get()
    runner["next"] = "succeeded"
    out = tmp_path / "again.parquet"
    assert cli.main([*base, "job", "retry", str(job.pk), "--wait", "-o", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 50
    assert cli.main([*base, "job", "output", str(job.pk), "-o", str(tmp_path)]) == 0
    assert (tmp_path / f"job-{job.pk}-output.parquet").is_file()


def test_bad_input_exits_6_naming_the_column(base, iris, runner, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    iris_frame(5).drop(columns=["petal_length"]).to_csv(bad, index=False)
    assert cli.main([*base, "job", "run", str(bad), "--team", "ml-search", "--model", "iris",
                     "--version", "1"]) == 6
    assert "petal_length" in capsys.readouterr().err
    assert not BatchJob.objects.exists()


def test_schedules_from_the_cli(base, iris, runner, engineer, capsys):
    name = artifact_storage().save("datasets/ml-search/nightly.csv",
                                   ContentFile(iris_frame(8).to_csv(index=False).encode()))
    assert cli.main([*base, "job", "schedule", "create", "nightly", "--team", "ml-search",
                     "--model", "iris", "--version", "1", "--input-uri", f"artifacts:/{name}",
                     "--cron", "0 2 * * *", "--keep", "id"]) == 0
    schedule = JobSchedule.objects.get()
    assert "nightly" in capsys.readouterr().out and schedule.output_columns == ["id"]
    assert cli.main([*base, "job", "schedule", "create", "bad", "--team", "ml-search",
                     "--model", "iris", "--version", "1", "--input-uri", f"artifacts:/{name}",
                     "--cron", "0 25 * * *"]) == 6
    assert "cron" in capsys.readouterr().err
    assert cli.main([*base, "job", "schedule", "disable", str(schedule.pk)]) == 0
    assert "False" in capsys.readouterr().out
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None
    assert cli.main([*base, "--json", "job", "schedule", "run", str(schedule.pk)]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["schedule"] == schedule.pk and job["input"]["rows"] == 8
    assert cli.main([*base, "--json", "job", "schedule", "list"]) == 0
    assert [s["name"] for s in json.loads(capsys.readouterr().out)] == ["nightly"]
    assert cli.main([*base, "job", "schedule", "delete", str(schedule.pk)]) == 0
    assert not JobSchedule.objects.exists()
