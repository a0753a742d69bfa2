"""A version's lineage links into the platform's own MLflow UI (issue 18): its run, experiment,
metrics and artifacts, when the run lives on the platform's tracking server; a run logged
elsewhere stays text. The browser test follows the link into MLflow's real UI (the bundled
tracking server, behind the portal's sign-in) and sees the run."""

from __future__ import annotations

import html
import json
import re
import uuid

import pytest
from django.test import Client

from registry.models import ModelVersion, RegisteredModel
from teams.roles import Role
from tests.e2e.conftest import browser, page  # noqa: F401 - fixtures
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory, make_token


def _version(team, *, source_format: str, lineage: dict, metrics: dict | None = None
             ) -> ModelVersion:
    model = RegisteredModel.objects.create(name="churn", team=team)
    return ModelVersion.objects.create(model=model, version=1, status="ready",
                                       source_format=source_format, source="runs:/x/model",
                                       flavor="sklearn", lineage=lineage,
                                       metrics=metrics or {"auc": 0.91})


def _page(user) -> str:
    client = Client()
    client.force_login(user)
    response = client.get("/models/churn/versions/1/")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


@pytest.mark.django_db
def test_an_imported_versions_run_experiment_metrics_and_artifacts_link_to_mlflow(team,
                                                                                  engineer):
    _version(team, source_format="import",
             lineage={"mlflow_run_id": "0123abcd", "mlflow_experiment_id": "7",
                      "git_commit": "deadbeef"})
    text = _page(engineer)
    run = "/mlflow/#/experiments/7/runs/0123abcd"
    assert f'<a href="{run}" aria-label="Run 0123abcd in MLflow"><code>0123abcd</code></a>' in text
    assert f'<a href="{run}/artifacts">artifacts</a>' in text
    assert '<a href="/mlflow/#/experiments/7" aria-label="Experiment 7 in MLflow">' in text
    assert f'<a href="{run}/model-metrics">Metric charts in MLflow</a>' in text
    assert "git_commit: <code>deadbeef</code>" in text  # the rest stays text


@pytest.mark.django_db
def test_without_its_experiment_the_run_link_lets_mlflow_find_it(team, engineer):
    _version(team, source_format="import", lineage={"mlflow_run_id": "0123abcd"})
    assert '<a href="/mlflow/#/runs/0123abcd"' in _page(engineer)


@pytest.mark.django_db
def test_an_uploaded_models_run_from_another_tracking_server_stays_text(team, engineer):
    _version(team, source_format="mlflow", lineage={"mlflow_run_id": "0123abcd"})
    text = _page(engineer)
    assert "/mlflow/#" not in text
    assert "mlflow_run_id: <code>0123abcd</code> <small>(logged on another tracking server" in text


@pytest.mark.django_db(transaction=True)
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.usefixtures("mlflow_upstream")
def test_the_run_link_opens_the_run_in_mlflows_ui(live_server, page):  # noqa: F811
    team = TeamFactory(slug="team-a")
    alice = UserFactory(username="alice")
    MembershipFactory(team=team, user=alice, role=Role.ENGINEER)
    viewer = UserFactory(username="vera")
    MembershipFactory(team=team, user=viewer, role=Role.VIEWER)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {make_token(alice)[1]}"}

    def mlflow(endpoint: str, body: dict) -> dict:
        response = Client().post(f"/mlflow/api/2.0/mlflow/{endpoint}", json.dumps(body),
                                 content_type="application/json", **bearer)
        text = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200, text
        return json.loads(text)

    experiment = mlflow("experiments/create", {"name": f"lineage-{uuid.uuid4().hex[:6]}"})
    run_name = f"training-{uuid.uuid4().hex[:6]}"
    run = mlflow("runs/create", {"experiment_id": experiment["experiment_id"],
                                 "run_name": run_name})["run"]["info"]
    mlflow("runs/log-metric", {"run_id": run["run_id"], "key": "auc", "value": 0.91,
                               "timestamp": 0, "step": 0})
    _version(team, source_format="import",
             lineage={"mlflow_run_id": run["run_id"],
                      "mlflow_experiment_id": experiment["experiment_id"]})

    page.goto(f"{live_server.url}/login/?next=/models/churn/versions/1/")
    page.get_by_label("Username").fill("vera")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name=f"Run {run['run_id']} in MLflow").click()
    page.wait_for_url(re.compile(r".*/mlflow/#/experiments/.+/runs/.+"))
    assert page.url.endswith(f"#/experiments/{experiment['experiment_id']}/runs/"
                             f"{run['run_id']}")
    page.get_by_text(run_name).first.wait_for(timeout=60000)
