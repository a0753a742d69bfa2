"""Reference data (the drift baseline) is checked cheaply in the request and parsed and
profiled by a worker task; the version shows the reference's state.

The finding: a reference CSV of 100,000 columns tied a web worker for 73 s. The request now only
reads the CSV header line or the Parquet footer. Tasks run here as the worker runs them
(``registry.tasks.compute_reference``, called with the version id); validation, the other task
a registration enqueues, is left out (``test_validation.py`` runs it in the sandbox).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry import tasks
from registry.models import ModelVersion
from teams.models import AuditEvent
from tests.fixtures import bearer_client

from .conftest import COLUMNS, EXAMPLE, example_json

pytestmark = pytest.mark.django_db
VERSIONS = "/api/v1/models/iris/versions/"


def reference_csv(rows: int = 40, extra: str = "") -> bytes:
    lines = [",".join(COLUMNS) + ",kind" + extra]
    lines += [f"{5 + i / 10},{3 + i / 20},{1 + i / 5},{i / 10},{'a' if i % 2 else 'b'}"
              for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def wide_csv(columns: int, body: bytes = b"1\n") -> bytes:
    return ",".join(f"c{i}" for i in range(columns)).encode() + b"\n" + body


def register(client, capture, reference: SimpleUploadedFile | None, sklearn_pickle, **fields):
    """POST a version; the tasks it enqueues are held (not run)."""
    with capture(execute=False) as held:
        response = client.post(VERSIONS, {
            "file": SimpleUploadedFile("iris.joblib", sklearn_pickle), "format": "sklearn",
            "input_example": example_json(),
            **({"reference_data": reference} if reference is not None else {}), **fields},
            format="multipart")
    return response, held


def references_dir(settings):
    root = settings.MODELPORT_DATA_DIR / "references"
    return sorted(root.iterdir()) if root.exists() else []


def test_reference_data_is_profiled_by_the_task_and_the_version_shows_its_state(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    response, held = register(client, django_capture_on_commit_callbacks,
                              SimpleUploadedFile("train.csv", reference_csv()), sklearn_pickle)
    assert response.status_code == 202, response.content
    assert len(held) == 2  # validation and profiling, both after commit
    body = client.get(f"{VERSIONS}1/").json()
    assert body["reference"] == {"status": "pending", "source": None, "rows": None,
                                 "features": None,
                                 "message": "Waiting for a worker to profile reference_data."}
    assert body["reference_stats"] is None and len(references_dir(settings)) == 1

    tasks.compute_reference(ModelVersion.objects.get().pk)
    body = client.get(f"{VERSIONS}1/").json()
    assert body["reference"]["status"] == "ready"
    assert body["reference"] | {"message": ""} == {"status": "ready", "source": "reference_data",
                                                   "rows": 40, "features": 5, "message": ""}
    assert body["reference_stats"]["features"]["kind"]["frequencies"] == {"a": 20, "b": 20}
    # The KS sample is kept with the baseline (all 40 rows here), not sent to clients.
    stored = ModelVersion.objects.get().reference_stats["features"]
    numeric = [f for f in stored.values() if f["kind"] == "numeric"]
    assert numeric and all(len(f["sample"]) == 40 for f in numeric)
    assert not any("sample" in f for f in body["reference_stats"]["features"].values())
    assert references_dir(settings) == []  # the kept file goes once profiled
    assert AuditEvent.objects.filter(action="version.reference_ready").exists()
    tasks.compute_reference(ModelVersion.objects.get().pk)  # a retry changes nothing
    assert client.get(f"{VERSIONS}1/").json()["reference_stats"] == body["reference_stats"]


def test_drift_uses_the_reference_once_ready(iris, team_engineer, sklearn_pickle,
                                            django_capture_on_commit_callbacks):
    from deployments.models import Deployment, Revision
    from monitoring import rollups

    register(bearer_client(team_engineer), django_capture_on_commit_callbacks,
             SimpleUploadedFile("train.csv", reference_csv()), sklearn_pickle)
    version = ModelVersion.objects.get()
    version.status = "ready"
    version.save(update_fields=["status"])
    deployment = Deployment.objects.create(name="iris-prod", team=iris.team, model=iris,
                                           version=version, revision=1)
    Revision.objects.create(deployment=deployment, number=1, model_version=version)
    assert rollups.reference_of(deployment.pk, 1) == {}  # pending: no baseline yet
    tasks.compute_reference(version.pk)
    assert rollups.reference_of(deployment.pk, 1)["source"] == "reference_data"


def test_without_reference_data_the_input_example_is_profiled_by_the_task(
        iris, team_engineer, sklearn_pickle, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks, None, sklearn_pickle)
    assert client.get(f"{VERSIONS}1/").json()["reference"]["status"] == "pending"
    tasks.compute_reference(ModelVersion.objects.get().pk)
    reference = client.get(f"{VERSIONS}1/").json()["reference"]
    assert (reference["status"], reference["source"], reference["rows"]) == (
        "ready", "input_example", len(EXAMPLE["data"]))


@pytest.mark.parametrize(("data", "name", "message"), [
    (wide_csv(2001), "train.csv", "reference_data has 2001 columns; the limit is 2000 "
                                  "(MODELPORT_REFERENCE_MAX_COLUMNS)."),
    # The finding's file, made unparseable past its header: the request never reads that far.
    (wide_csv(100_000, b"\x00garbage\xff\n" * 1000), "train.csv",
     "reference_data has 100000 columns; the limit is 2000 (MODELPORT_REFERENCE_MAX_COLUMNS)."),
    (b"", "train.csv", "The submitted file is empty."),  # DRF's FileField
    (b"PAR1garbage", "train.parquet", "reference_data is not a readable Parquet file"),
])
def test_reference_data_over_the_column_limit_or_unreadable_is_a_400_in_the_request(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks,
        data, name, message):
    from .test_upload_safety import assert_nothing_stored

    response, held = register(bearer_client(team_engineer), django_capture_on_commit_callbacks,
                              SimpleUploadedFile(name, data), sklearn_pickle)
    assert response.status_code == 400, response.content
    assert response.json()["reference_data"][0].startswith(message)
    assert held == [] and references_dir(settings) == []
    assert_nothing_stored(settings)


def test_a_parquet_over_the_column_limit_is_refused_from_its_footer(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    settings.MODELPORT_REFERENCE_MAX_COLUMNS = 10
    buffer = io.BytesIO()
    pd.DataFrame(np.zeros((5, 11)), columns=[f"c{i}" for i in range(11)]).to_parquet(buffer)
    response, _ = register(bearer_client(team_engineer), django_capture_on_commit_callbacks,
                           SimpleUploadedFile("train.parquet", buffer.getvalue()),
                           sklearn_pickle)
    assert response.status_code == 400
    assert response.json()["reference_data"] == [
        "reference_data has 11 columns; the limit is 10 (MODELPORT_REFERENCE_MAX_COLUMNS)."]


def test_a_parquet_reference_within_the_limit_is_profiled(
        iris, team_engineer, sklearn_pickle, django_capture_on_commit_callbacks):
    frame = pd.read_csv(io.BytesIO(reference_csv()))
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks,
             SimpleUploadedFile("train.parquet", buffer.getvalue()), sklearn_pickle)
    tasks.compute_reference(ModelVersion.objects.get().pk)
    reference = client.get(f"{VERSIONS}1/").json()["reference"]
    assert (reference["status"], reference["rows"], reference["features"]) == ("ready", 40, 5)


def test_an_input_example_over_the_column_limit_is_a_400(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    settings.MODELPORT_REFERENCE_MAX_COLUMNS = 3
    response, _ = register(bearer_client(team_engineer), django_capture_on_commit_callbacks,
                           None, sklearn_pickle)
    assert response.status_code == 400
    assert response.json()["input_example"] == [
        "input_example has 4 columns; the limit is 3 (MODELPORT_REFERENCE_MAX_COLUMNS)."]


def test_reference_data_that_fails_to_parse_fails_with_the_reason_and_keeps_a_baseline(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    broken = b"a,b\n1,2\n" + b'"unterminated,3\n' * 3
    register(client, django_capture_on_commit_callbacks,
             SimpleUploadedFile("train.csv", broken), sklearn_pickle)
    tasks.compute_reference(ModelVersion.objects.get().pk)
    body = client.get(f"{VERSIONS}1/").json()
    assert body["reference"]["status"] == "failed"
    assert body["reference"]["message"].startswith("reference_data could not be read as CSV")
    assert body["reference"]["message"].endswith("The baseline stays the input example.")
    assert body["reference_stats"]["source"] == "input_example"
    assert references_dir(settings) == []
    from django.test import Client  # and the portal says so

    portal = Client()
    portal.force_login(team_engineer)
    page = portal.get("/models/iris/versions/1/").content.decode()
    assert "Drift baseline" in page and "failed" in page and "could not be read" in page


def test_put_reference_answers_202_and_the_old_baseline_serves_until_the_new_is_ready(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks, None, sklearn_pickle)
    version = ModelVersion.objects.get()
    tasks.compute_reference(version.pk)
    with django_capture_on_commit_callbacks(execute=False) as held:
        response = client.put(f"{VERSIONS}1/reference/",
                              {"file": SimpleUploadedFile("ref.csv", reference_csv(10))},
                              format="multipart")
    assert response.status_code == 202, response.content
    assert response.json()["reference"]["status"] == "pending"
    assert response.json()["reference_stats"]["source"] == "input_example"  # still in use
    assert len(held) == 1
    assert AuditEvent.objects.filter(action="version.reference_replaced",
                                     actor=team_engineer).exists()
    held[0]()  # the task, enqueued after commit (eager here)
    body = client.get(f"{VERSIONS}1/").json()
    assert (body["reference"]["status"], body["reference_stats"]["rows"]) == ("ready", 10)


def test_a_newer_upload_supersedes_one_not_yet_profiled(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks,
             SimpleUploadedFile("first.csv", reference_csv(40)), sklearn_pickle)
    version = ModelVersion.objects.get()
    first_file = version.reference_file
    with django_capture_on_commit_callbacks(execute=True):  # deletes the first file, enqueues
        client.put(f"{VERSIONS}1/reference/",
                   {"file": SimpleUploadedFile("second.csv", reference_csv(7))},
                   format="multipart")
    tasks.compute_reference(version.pk)  # the first upload's task, late: nothing to do
    version.refresh_from_db()
    assert version.reference_stats["rows"] == 7 and version.reference_status == "ready"
    assert references_dir(settings) == [] and first_file


def test_a_viewer_cannot_replace_the_reference(iris, team_engineer, team_viewer,
                                               sklearn_pickle,
                                               django_capture_on_commit_callbacks):
    register(bearer_client(team_engineer), django_capture_on_commit_callbacks, None,
             sklearn_pickle)
    response = bearer_client(team_viewer).put(
        f"{VERSIONS}1/reference/", {"file": SimpleUploadedFile("r.csv", reference_csv())},
        format="multipart")
    assert response.status_code == 403
    assert ModelVersion.objects.get().reference_file == ""


def test_a_put_over_the_column_limit_is_a_400_naming_the_file_field(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    register(bearer_client(team_engineer), django_capture_on_commit_callbacks, None,
             sklearn_pickle)
    response = bearer_client(team_engineer).put(
        f"{VERSIONS}1/reference/", {"file": SimpleUploadedFile("r.csv", wide_csv(2001))},
        format="multipart")
    assert response.status_code == 400
    assert json.dumps(response.json()).count("MODELPORT_REFERENCE_MAX_COLUMNS") == 1
    assert "file" in response.json() and references_dir(settings) == []


def test_an_image_shaped_tensor_example_profiles_one_feature_per_element() -> None:
    """A CNN's input example ([n, 1, 8, 8] nested lists) is n rows of 64 features, not a
    crash of the profiling task (issue 19)."""
    from registry import reference

    images = np.arange(2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8).tolist()
    for key in ("inputs", "instances"):
        frame = reference.frame_from_request({key: images})
        assert frame is not None and frame.shape == (2, 64)
        assert frame.iloc[1, 0] == 64.0
