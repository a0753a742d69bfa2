"""Registry pages in the portal render real data and their forms call the services."""

from __future__ import annotations

import pytest
from django.test import Client

from registry.models import AliasTransitionRequest, ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ready_version(iris):
    return ModelVersion.objects.create(
        model=iris, version=1, source_format="mlflow", status="ready", flavor="sklearn",
        signature={"inputs": [{"name": "petal_length", "type": "double"}]},
        input_example={"dataframe_split": {"columns": ["petal_length"], "data": [[1.4]]}},
        metrics={"accuracy": 0.97}, lineage={"git_commit": "abc123"},
        reference_stats={"source": "input_example", "rows": 1, "features": {
            "petal_length": {"kind": "numeric", "mean": 1.4, "std": 0.0, "min": 1.4,
                             "max": 1.4}}})


def test_model_list_searches_and_filters(iris, team_engineer):
    client = logged_in(team_engineer)
    assert "iris" in client.get("/models/?search=iris").content.decode()
    assert "iris" not in client.get("/models/?tag=vision").content.decode()


def test_engineer_creates_a_model_from_the_list_page(ml_team, team_engineer):
    response = logged_in(team_engineer).post("/models/", {
        "name": "churn", "team": "ml-search", "description": "", "tags": "tabular, crm"},
        follow=True)
    assert response.status_code == 200
    assert RegisteredModel.objects.get(name="churn").tags == ["crm", "tabular"]


def test_model_page_shows_card_versions_metrics_schema_and_curl(iris, team_engineer,
                                                                ready_version):
    iris.card = "# Iris card\n<script>alert(1)</script>"
    iris.save()
    page = logged_in(team_engineer).get("/models/iris/").content.decode()
    assert "<h1>Iris card</h1>" in page
    assert "<script>alert(1)</script>" not in page  # the card is sanitised
    assert "accuracy" in page and "0.9700" in page
    assert "petal_length" in page and "curl -X POST" in page


def test_version_page_shows_status_and_baseline(iris, team_engineer, ready_version):
    page = logged_in(team_engineer).get("/models/iris/versions/1/").content.decode()
    assert "ready" in page and "abc123" in page and "Drift baseline" in page
    assert "Serving image</dt><dd id=\"version-image\">—" in page  # validated before issue 19


def test_version_page_and_api_show_the_image_build(iris, team_engineer, ready_version):
    ModelVersion.objects.filter(pk=ready_version.pk).update(
        image_tag="modelport/serving:0123456789ab-ba9876543210", image_reused=False,
        image_build_seconds=84.21, image_size=1_288_490_189)
    page = logged_in(team_engineer).get("/models/iris/versions/1/").content.decode()
    assert "built in 84.2 s" in page and "1.2\xa0GB" in page
    assert "modelport/serving:0123456789ab" in page
    body = logged_in(team_engineer).get("/api/v1/models/iris/versions/1/").json()
    assert body["image"] == {"tag": "modelport/serving:0123456789ab-ba9876543210",
                             "reused": False, "build_seconds": 84.21,
                             "size_bytes": 1_288_490_189}


def test_pending_version_polls_for_progress(iris, team_engineer):
    ModelVersion.objects.create(model=iris, version=1, source_format="mlflow",
                                status="validating", progress=30)
    page = logged_in(team_engineer).get("/models/iris/versions/1/").content.decode()
    assert 'hx-trigger="every 2s"' in page and 'value="30"' in page
    fragment = logged_in(team_engineer).get("/models/iris/versions/1/",
                                            HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<article id="version-status"')


def test_bad_upload_shows_the_reason_on_the_form(iris, team_engineer):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = logged_in(team_engineer).post("/models/iris/", {
        "file": SimpleUploadedFile("m.zip", b"not an archive"), "format": "mlflow"})
    assert response.status_code == 400
    assert "Unknown archive type" in response.content.decode()
    assert not ModelVersion.objects.exists()


def test_protected_alias_from_portal_files_a_request_the_maintainer_approves(
        iris, team_engineer, team_maintainer, ready_version):
    logged_in(team_engineer).post("/models/iris/aliases/", {"alias": "production",
                                                           "version": 1})
    request = AliasTransitionRequest.objects.get()
    page = logged_in(team_maintainer).get("/models/iris/").content.decode()
    assert "asks to move" in page
    logged_in(team_maintainer).post(f"/models/iris/transitions/{request.pk}/approve/")
    assert iris.aliases.get(name="production").version == ready_version


def test_other_teams_models_are_404_in_the_portal(iris, outsider):
    assert logged_in(outsider).get("/models/iris/").status_code == 404
