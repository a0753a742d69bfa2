"""The jobs REST API (``/api/v1/jobs/``, API.md): create → 202 queued, list and filters,
visibility across teams (404), roles, cancel/retry/output conflicts, chunks, events, logs,
the OpenAPI schema. The runner is not run here: its tick is recorded instead of enqueued
(tests/jobs/test_*.py of the core stream run jobs on Docker); the download test marks a job
succeeded and stores its output file directly, as the runner would at the end."""

from __future__ import annotations

import io
import uuid

import pandas as pd
import pytest
from django.core.files.base import ContentFile

from jobs.models import BatchJob, JobChunk, JobSchedule, JobStatus
from quotas.models import Reservation
from registry.storage import artifact_storage
from teams.models import AuditEvent
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.fixtures import bearer_client
from tests.jobs.conftest import csv_upload, iris_frame, parquet_upload

pytestmark = pytest.mark.django_db
URL = "/api/v1/jobs/"


@pytest.fixture(autouse=True)
def ticks(monkeypatch):
    """Runner ticks recorded, not run."""
    calls: list[int] = []
    monkeypatch.setattr("jobs.passes.enqueue", calls.append)
    return calls


@pytest.fixture
def api(engineer):
    return bearer_client(engineer)


def form(mv, **extra):
    data = {"team": mv.model.team.slug, "model": mv.model.name, "version": 1,
            "input": csv_upload(iris_frame(20)), "output_format": "csv",
            "parallelism": 2, "resources": '{"cpu": 0.5, "memory_mb": 256}',
            "output_columns": "id"}
    data.update(extra)
    return {k: v for k, v in data.items() if v is not None}


def run(api, mv, **extra) -> dict:
    response = api.post(URL, form(mv, **extra), format="multipart")
    assert response.status_code == 202, response.content
    return response.json()


def test_create_answers_202_queued_and_ticks(api, iris_version, ticks,
                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, form(iris_version), format="multipart")
    assert response.status_code == 202, response.content
    data = response.json()
    assert data["status"] == "queued" and isinstance(data["id"], int)
    assert data["model"] == iris_version.model.name and data["version"] == 1
    assert data["resources"] == {"cpu": 0.5, "memory_mb": 256, "gpus": 0}
    assert data["parallelism"] == 2 and data["output_format"] == "csv"
    assert data["output_columns"] == ["id"] and data["trigger"] == "api"
    assert data["input"]["filename"] == "input.csv" and data["input"]["rows"] == 20
    assert data["progress"]["rows_done"] == 0 and data["progress"]["rows_total"] == 20
    assert data["output"] is None
    assert ticks == [data["id"]]
    assert Reservation.objects.filter(owner=f"job:{data['id']}").exists()
    assert AuditEvent.objects.filter(action="job.created", object_id=str(data["id"])).exists()


def test_parquet_upload_alias_and_json_body_with_input_uri(api, iris_version):
    from registry.models import ModelAlias

    ModelAlias.objects.create(model=iris_version.model, name="production", version=iris_version)
    first = run(api, iris_version, version=None, alias="production",
                input=parquet_upload(iris_frame(12)), output_format="parquet")
    assert first["alias"] == "production" and first["version"] == 1
    again = api.post(URL, {"team": iris_version.model.team.slug,
                           "model": iris_version.model.name, "version": 1,
                           "input_uri": f"jobs:/{first['id']}/input",
                           "resources": {"cpu": 1}, "output_columns": ["id"]}, format="json")
    assert again.status_code == 202, again.content
    assert again.json()["input"]["rows"] == 12
    assert again.json()["input"]["uri"] == f"jobs:/{first['id']}/input"


@pytest.mark.parametrize(("override", "field"), [
    ({"input": None}, "input"),
    ({"input_uri": "https://example.com/data.csv"}, "input"),
    ({"input": None, "input_uri": "https://example.com/data.csv"}, "input_uri"),
    ({"input": None, "input_uri": "jobs:/999999/output"}, "input_uri"),
    ({"resources": "{not json"}, "resources"),
    ({"resources": '{"cpu": 0}'}, "resources"),
    ({"parallelism": 0}, "parallelism"),
    ({"output_format": "xlsx"}, "output_format"),
    ({"output_columns": "nope"}, "output_columns"),
    ({"version": None}, "version"),
    ({"schedule": "61 * * * *"}, "cron"),
    ({"target": "no-such-target"}, "target"),
])
def test_bad_fields_are_400_naming_the_field_and_write_nothing(api, iris_version, override,
                                                               field):
    response = api.post(URL, form(iris_version, **override), format="multipart")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not BatchJob.objects.exists() and not JobSchedule.objects.exists()
    assert not Reservation.objects.filter(owner__startswith="job:").exists()


def test_a_job_runs_on_the_target_it_names(api, iris_version):
    from compute.models import ExecutionTarget

    ExecutionTarget.objects.create(name="night-batch", kind="docker")
    job = run(api, iris_version, target="night-batch")
    assert (job["target"], job["runtime"]) == ("night-batch", "docker")
    assert BatchJob.objects.get(pk=job["id"]).target.name == "night-batch"


def test_bad_rows_name_the_column_and_first_bad_row(api, iris_version):
    frame = iris_frame(10).astype({"sepal_width": object})
    frame.loc[3, "sepal_width"] = "wide"
    response = api.post(URL, form(iris_version, input=csv_upload(frame)), format="multipart")
    assert response.status_code == 400
    message = str(response.json())
    assert "sepal_width" in message and "row 4" in message
    assert not BatchJob.objects.exists()


def test_version_not_ready_is_409(api, iris_version):
    iris_version.status = "failed"
    iris_version.save(update_fields=["status"])
    response = api.post(URL, form(iris_version), format="multipart")
    assert response.status_code == 409 and response.json()["code"] == "version_not_ready"
    assert not BatchJob.objects.exists()


def test_list_filter_and_search(api, iris_version):
    a = run(api, iris_version)
    b = run(api, iris_version, output_format="parquet")
    BatchJob.objects.filter(pk=a["id"]).update(status=JobStatus.FAILED)
    listing = api.get(URL).json()
    assert listing["count"] == 2 and [j["id"] for j in listing["results"]] == [b["id"], a["id"]]
    assert [j["id"] for j in api.get(URL, {"status": "failed"}).json()["results"]] == [a["id"]]
    assert api.get(URL, {"model": iris_version.model.name}).json()["count"] == 2
    assert api.get(URL, {"model": "other"}).json()["count"] == 0
    assert api.get(URL, {"team": iris_version.model.team.slug}).json()["count"] == 2
    assert api.get(URL, {"search": str(b["id"])}).json()["results"][0]["id"] == b["id"]
    assert api.get(URL, {"status": "sleeping"}).status_code == 400


def test_another_teams_job_is_404_and_not_listed(api, iris_version):
    job = run(api, iris_version)
    other_team = TeamFactory(slug=f"other-{uuid.uuid4().hex[:6]}")
    stranger = UserFactory()
    MembershipFactory(team=other_team, user=stranger, role=Role.MAINTAINER)
    them = bearer_client(stranger)
    assert them.get(URL).json()["count"] == 0
    for method, path in [("get", ""), ("post", "cancel/"), ("post", "retry/"),
                         ("get", "output/"), ("get", "logs/"), ("get", "chunks/"),
                         ("get", "events/")]:
        response = getattr(them, method)(f"{URL}{job['id']}/{path}")
        assert response.status_code == 404, (path, response.content)
    assert BatchJob.objects.get(pk=job["id"]).status == JobStatus.QUEUED
    # Nor can they run a job on this team's model, or with this team's input.
    response = them.post(URL, form(iris_version), format="multipart")
    assert response.status_code == 404


def test_viewer_reads_but_cannot_run_or_cancel(api, team, iris_version):
    job = run(api, iris_version)
    viewer = UserFactory()
    MembershipFactory(team=team, user=viewer, role=Role.VIEWER)
    as_viewer = bearer_client(viewer)
    assert as_viewer.get(f"{URL}{job['id']}/").status_code == 200
    assert as_viewer.post(URL, form(iris_version), format="multipart").status_code == 403
    assert as_viewer.post(f"{URL}{job['id']}/cancel/").status_code == 403
    assert BatchJob.objects.count() == 1
    assert BatchJob.objects.get(pk=job["id"]).status == JobStatus.QUEUED
    assert bearer_client(None).get(URL).status_code == 401


def test_cancel_then_cancel_again_is_409(api, iris_version):
    job = run(api, iris_version)
    response = api.post(f"{URL}{job['id']}/cancel/")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "cancelled"
    assert not Reservation.objects.filter(owner=f"job:{job['id']}").exists()
    again = api.post(f"{URL}{job['id']}/cancel/")
    assert again.status_code == 409 and again.json()["code"] == "job_finished"


def test_output_is_409_until_succeeded_then_downloads(api, iris_version):
    job = run(api, iris_version)
    response = api.get(f"{URL}{job['id']}/output/")
    assert response.status_code == 409 and response.json()["code"] == "job_not_succeeded"
    # What the runner does at the end (set directly here: the runner is not run).
    out = pd.DataFrame({"id": range(20), "prediction": [0] * 20}).to_csv(index=False)
    name = artifact_storage().save(f"jobs/{job['id']}/output.csv", ContentFile(out.encode()))
    BatchJob.objects.filter(pk=job["id"]).update(status=JobStatus.SUCCEEDED, output_name=name,
                                                 rows_done=20)
    shown = api.get(f"{URL}{job['id']}/").json()
    assert shown["output"] == f"/api/v1/jobs/{job['id']}/output/"
    response = api.get(f"{URL}{job['id']}/output/")
    assert response.status_code == 200
    assert f"job-{job['id']}-output.csv" in response["Content-Disposition"]
    frame = pd.read_csv(io.BytesIO(b"".join(response.streaming_content)))
    assert list(frame.columns) == ["id", "prediction"] and len(frame) == 20
    # A finished job is not cancelled, nor retried (it did not fail).
    assert api.post(f"{URL}{job['id']}/cancel/").status_code == 409
    assert api.post(f"{URL}{job['id']}/retry/").status_code == 409


def test_retry_of_a_failed_job_requeues_only_missing_chunks(api, iris_version, ticks,
                                                            django_capture_on_commit_callbacks):
    job = run(api, iris_version)
    chunks = JobChunk.objects.filter(job_id=job["id"]).order_by("index")
    assert chunks.count() == 2
    # Chunk states set directly (no runner here): chunk 0 done, chunk 1 failed for good.
    chunks.filter(index=0).update(status="succeeded", rows_done=10, attempts=1)
    chunks.filter(index=1).update(status="failed", attempts=3, error="exit 137")
    Reservation.objects.filter(owner=f"job:{job['id']}").delete()
    BatchJob.objects.filter(pk=job["id"]).update(status=JobStatus.FAILED,
                                                 status_message="chunk 1 failed")
    ticks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{URL}{job['id']}/retry/")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    assert dict(chunks.values_list("index", "status")) == {0: "succeeded", 1: "pending"}
    assert ticks == [job["id"]]


def test_chunks_events_and_logs(api, iris_version):
    job = run(api, iris_version)
    chunks = api.get(f"{URL}{job['id']}/chunks/").json()
    assert [c["index"] for c in chunks["results"]] == [0, 1]
    assert [c["rows"] for c in chunks["results"]] == [10, 10]
    events = api.get(f"{URL}{job['id']}/events/").json()
    assert events["count"] >= 1 and "20 rows" in events["results"][-1]["message"]
    latest = events["results"][0]["id"]
    assert api.get(f"{URL}{job['id']}/events/", {"since": latest}).json()["count"] == 0
    logs = api.get(f"{URL}{job['id']}/logs/", {"chunk": 1, "tail": 10})
    assert logs.status_code == 200 and logs.json() == {"logs": ""}
    assert api.get(f"{URL}{job['id']}/logs/", {"chunk": 9}).status_code == 404


def test_schedule_with_the_job_repeats_its_staged_input(api, iris_version):
    job = run(api, iris_version, schedule="0 2 * * *", schedule_name="nightly")
    schedule = JobSchedule.objects.get(name="nightly")
    assert job["schedule"] == schedule.pk
    assert schedule.input_uri == f"jobs:/{job['id']}/input" and schedule.cron == "0 2 * * *"
    assert schedule.next_run_at is not None and schedule.next_run_at.hour == 2
    assert (schedule.parallelism, float(schedule.cpu), schedule.output_columns) == \
        (2, 0.5, ["id"])
    # The name is taken now: refused before a second job is created.
    response = api.post(URL, form(iris_version, schedule="0 3 * * *",
                                  schedule_name="nightly"), format="multipart")
    assert response.status_code == 409 and BatchJob.objects.count() == 1


def test_openapi_schema_documents_jobs(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    for path in ("/api/v1/jobs/", "/api/v1/jobs/{id}/", "/api/v1/jobs/{id}/cancel/",
                 "/api/v1/jobs/{id}/retry/", "/api/v1/jobs/{id}/logs/",
                 "/api/v1/jobs/{id}/output/", "/api/v1/job-schedules/",
                 "/api/v1/job-schedules/{id}/run/"):
        assert path in paths, path
    create = paths["/api/v1/jobs/"]["post"]
    assert "multipart/form-data" in create["requestBody"]["content"]
    assert "202" in create["responses"] and "409" in create["responses"]
    job = schema["components"]["schemas"]["BatchJob"]["properties"]
    assert {"id", "status", "progress", "output"} <= set(job)


def test_console_lists_jobs_and_cancels_through_the_service(api, iris_version, client):
    from tests.factories import AdminFactory

    job = run(api, iris_version)
    client.force_login(AdminFactory(username="root"))
    assert client.get("/admin/jobs/batchjob/").status_code == 200
    assert client.get(f"/admin/jobs/batchjob/{job['id']}/change/").status_code == 200
    assert client.get("/admin/jobs/jobschedule/").status_code == 200
    response = client.post("/admin/jobs/batchjob/", {"action": "cancel_jobs",
                                                     "_selected_action": [job["id"]]})
    assert response.status_code == 302
    assert BatchJob.objects.get(pk=job["id"]).status == JobStatus.CANCELLED
    assert AuditEvent.objects.filter(action="job.cancelled", object_id=str(job["id"])).exists()
