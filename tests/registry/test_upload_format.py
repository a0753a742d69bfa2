"""Uploads tell their format from the file, fill a missing input example from the MLflow
signature, and a refused upload leaves nothing behind — over the API and in the portal
(plain and htmx posts). Validation itself is not run here (its task is enqueued on commit,
which these transaction-wrapped tests never reach); tests/registry/test_validation.py runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from registry import mlmodel
from registry.models import ModelVersion, ReferenceStatus
from tests.fixtures import bearer_client

from .conftest import COLUMNS, example_json, tar_dir, zip_dir, zip_with
from .test_upload_safety import assert_nothing_stored

pytestmark = pytest.mark.django_db
URL = "/api/v1/models/iris/versions/"


def post(client, name: str, data: bytes, **fields):
    return client.post(URL, {"file": SimpleUploadedFile(name, data), **fields},
                       format="multipart")


@pytest.mark.parametrize("name", ["model.joblib", "model.pkl", "model.pickle", "estimator"])
def test_api_tells_a_scikit_learn_file_without_format(iris, team_engineer, sklearn_pickle, name):
    response = post(bearer_client(team_engineer), name, sklearn_pickle,
                    input_example=example_json())
    assert response.status_code == 202, response.json()
    version = ModelVersion.objects.get()
    assert (version.source_format, version.flavor) == ("sklearn", "sklearn")


@pytest.mark.parametrize(("name", "pack"), [("iris.zip", zip_dir), ("iris.tar.gz", tar_dir),
                                            ("upload", zip_dir)])
def test_api_tells_an_mlflow_archive_without_format(iris, team_engineer, mlflow_model_dir,
                                                    name, pack):
    response = post(bearer_client(team_engineer), name, pack(mlflow_model_dir))
    assert response.status_code == 202, response.json()
    assert ModelVersion.objects.get().source_format == "mlflow"


def test_an_explicit_format_still_wins(iris, team_engineer, sklearn_pickle):
    response = post(bearer_client(team_engineer), "model.joblib", sklearn_pickle,
                    format="mlflow")
    assert response.status_code == 400
    assert "Unknown archive type" in json.dumps(response.json())


@pytest.mark.parametrize(("name", "data", "field"), [
    ("notes.txt", b"hello, these are notes", "file"),
    ("weights.bin", b"\x00\x01\x02\x03", "file"),
    ("model.zip", zip_with({"model.pkl": b"x"}), "detail"),
])
def test_unknown_kinds_are_refused_naming_the_accepted_ones(iris, team_engineer, settings,
                                                            name, data, field):
    response = post(bearer_client(team_engineer), name, data)
    assert response.status_code == 400
    message = json.dumps(response.json())
    assert ".joblib" in message and ".zip" in message and "MLmodel" in message
    assert_nothing_stored(settings)


def _without_example(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for name in ("input_example.json", "serving_input_example.json"):
        (target / name).unlink(missing_ok=True)
    text = (target / "MLmodel").read_text()
    (target / "MLmodel").write_text("\n".join(
        line for line in text.splitlines() if "input_example" not in line
        and not line.startswith(("  artifact_path:", "  type:", "  pandas_orient:",
                                 "  serving_input_path:"))) + "\n")
    return target


def test_mlflow_model_without_example_gets_one_from_its_signature(iris, team_engineer,
                                                                  mlflow_model_dir, tmp_path):
    bare = _without_example(mlflow_model_dir, tmp_path / "bare")
    assert mlmodel.read_metadata(bare).input_example is None
    response = post(bearer_client(team_engineer), "bare.zip", zip_dir(bare))
    assert response.status_code == 202, response.json()
    version = ModelVersion.objects.get()
    split = version.input_example["dataframe_split"]
    assert split["columns"] == COLUMNS
    assert len(split["data"]) == 1 and all(isinstance(v, float) for v in split["data"][0])
    # A made-up row is neither predicted in the sandbox nor a drift baseline.
    job = json.loads((Path(version.staging_dir) / "input" / "job.json").read_text())
    assert job["input_example"] is None
    assert version.reference_status != ReferenceStatus.PENDING


@pytest.mark.parametrize(("signature", "example"), [
    ({"inputs": [{"name": "age", "type": "long"}, {"name": "city", "type": "string"},
                 {"name": "vip", "type": "boolean", "required": False}]},
     {"dataframe_split": {"columns": ["age", "city", "vip"], "data": [[1, "text", True]]}}),
    ({"inputs": [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]},
     {"inputs": [[0.5, 0.5, 0.5]]}),
    ({"inputs": [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28, 28]}}]},
     None),
    ({"inputs": [{"name": "x", "type": "array"}]}, None),
    (None, None),
])
def test_example_from_signature(signature, example):
    assert mlmodel.example_from_signature(signature) == example


def _portal(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_portal_upload_without_format_goes_to_the_version(iris, team_engineer, sklearn_pickle):
    response = _portal(team_engineer).post("/models/iris/", {
        "file": SimpleUploadedFile("iris.joblib", sklearn_pickle),
        "input_example": example_json()})
    assert response.status_code == 302
    assert response["Location"] == "/models/iris/versions/1/"
    assert ModelVersion.objects.get().source_format == "sklearn"


def test_htmx_upload_answers_with_a_redirect_header(iris, team_engineer, sklearn_pickle):
    response = _portal(team_engineer).post("/models/iris/", {
        "file": SimpleUploadedFile("iris.pkl", sklearn_pickle),
        "input_example": example_json()}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/models/iris/versions/1/"


def test_htmx_refusal_returns_the_form_with_errors_on_top_and_by_the_field(
        iris, team_engineer, sklearn_pickle, settings):
    response = _portal(team_engineer).post("/models/iris/", {
        "file": SimpleUploadedFile("iris.joblib", sklearn_pickle), "description": "kept"},
        HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="upload-form"')
    top = html.index('class="flash flash-error form-errors"')
    field = html.index('id="id_input_example-error"')
    assert top < html.index('id="id_file"') < field
    assert html.count("needs an input_example") == 2  # the summary and the field
    assert 'value="kept"' in html  # what was typed stays
    assert 'hx-preserve="true"' in html  # and the browser keeps the chosen file
    assert_nothing_stored(settings)
