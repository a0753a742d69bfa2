"""The first-run demo: seeding switched off, the traffic button and its service, the printed curl.

The demo end to end (models trained, validated in the sandbox, deployed in Docker, curl answered,
traffic with drift and ground truth, seeding twice) runs in tests/test_make_run.py, inside the
one `make run` process the suite starts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client

from core.errors import Conflict, InvalidInput, PermissionDenied
from demo import services, training
from demo.models import TrafficRun, TrafficStatus
from deployments import services as deployment_services
from registry.models import ModelVersion, RegisteredModel, VersionStatus
from teams.models import ApiToken, AuditEvent, Team
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

COLUMNS = training.IRIS_COLUMNS
EXAMPLE = {"dataframe_split": {"columns": COLUMNS,
                               "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}


@pytest.fixture
def demo_admin(settings):
    settings.MODELPORT_ADMIN_USERNAME = "admin"
    user = UserFactory(username="admin", is_staff=True, is_superuser=True)
    return user


@pytest.fixture
def demo_deployment(settings, demo_admin, monkeypatch):
    """The demo deployment's rows, made through the services; no reconcile (nothing runs)."""
    monkeypatch.setattr("deployments.passes.enqueue_reconcile", lambda _pk: None)
    settings.MODELPORT_DEMO_DEPLOYMENT = "iris-demo"
    team = services.ensure_team(demo_admin)
    model = RegisteredModel.objects.create(name=training.CLASSIFIER, team=team,
                                           created_by=demo_admin)
    ModelVersion.objects.create(model=model, version=1, status=VersionStatus.READY,
                                source_format="sklearn", flavor="sklearn",
                                input_example=EXAMPLE)
    return deployment_services.create_deployment(actor=demo_admin, team=team, name="iris-demo",
                                                 model=training.CLASSIFIER, version=1)


def test_seeding_is_off_with_modelport_demo_0(settings, demo_admin):
    settings.MODELPORT_DEMO = False
    call_command("bootstrap")
    call_command("seed_demo")
    assert not Team.objects.filter(slug="demo").exists()
    assert not RegisteredModel.objects.exists()
    assert not ApiToken.objects.exists()


def test_demo_models_train_from_bundled_data_and_drift_shifts_half_the_features():
    for spec in training.SPECS:
        model = spec.train()
        assert model.pickle_bytes() and model.reference_csv().count(b"\n") > 100
        assert set(model.input_example()["dataframe_split"]["columns"]) == \
            set(model.features.columns)
        rng = np.random.default_rng(0)
        normal, labels = sample_means(model, rng, shift=0.0)
        drifted, _ = sample_means(model, rng, shift=2.0)
        half = len(normal) // 2
        std = model.features.std().to_numpy()
        assert all(abs(drifted[i] - normal[i]) < 0.3 * std[i] for i in range(half))
        assert all(drifted[i] - normal[i] > std[i] for i in range(half, len(normal)))
        assert len(labels) == 400


def sample_means(model, rng, shift):
    rows, labels = training.sample_rows(model, 400, rng, shift=shift)
    return np.asarray(rows).mean(axis=0), labels


def test_curl_line_is_one_pasteable_line_with_the_example_row(demo_deployment):
    line = services.curl_line(demo_deployment, "mpt_abc_secret")
    assert "\n" not in line
    words = shlex.split(line)
    assert words[:4] == ["curl", "-sS", "-X", "POST"]
    assert words[4].endswith("/serve/iris-demo/invocations")
    assert "Authorization: Bearer mpt_abc_secret" in words
    body = words[words.index("-d") + 1]
    assert body == ('{"dataframe_split":{"columns":["sepal_length","sepal_width",'
                    '"petal_length","petal_width"],"data":[[5.1,3.5,1.4,0.2]]}}')


def test_a_new_demo_token_revokes_the_previous_one_and_both_are_audited(demo_admin):
    first, _ = services.issue_token(demo_admin)
    second, secret = services.issue_token(demo_admin)
    assert secret.startswith("mpt_")
    first.refresh_from_db()
    assert first.revoked_at is not None
    assert list(ApiToken.objects.active().filter(name=services.TOKEN_NAME)) == [second]
    actions = list(AuditEvent.objects.filter(action__startswith="token.")
                   .values_list("action", flat=True))
    assert sorted(actions) == ["token.created", "token.created", "token.revoked"]


def test_start_traffic_checks_duration_target_role_and_one_run_at_a_time(
        demo_deployment, demo_admin, monkeypatch):
    enqueued: list[int] = []
    monkeypatch.setattr("demo.services._enqueue_traffic", enqueued.append)
    with pytest.raises(InvalidInput, match="10-540 seconds"):
        services.start_traffic(actor=demo_admin, deployment=demo_deployment, duration=5)
    viewer = UserFactory(username="vic")
    MembershipFactory(team=demo_deployment.team, user=viewer, role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        services.start_traffic(actor=viewer, deployment=demo_deployment, duration=60)
    assert not TrafficRun.objects.exists()

    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        run = services.start_traffic(actor=demo_admin, deployment=demo_deployment, duration=60)
    assert enqueued == [run.pk] and run.status == TrafficStatus.QUEUED
    assert AuditEvent.objects.filter(action="demo.traffic_started").count() == 1
    with pytest.raises(Conflict, match="already queued"):
        services.start_traffic(actor=demo_admin, deployment=demo_deployment, duration=60)


def test_start_traffic_refuses_a_deployment_that_is_not_the_demo(demo_deployment, demo_admin,
                                                                 settings):
    settings.MODELPORT_DEMO_DEPLOYMENT = "something-else"
    with pytest.raises(InvalidInput, match="demo deployment 'something-else' only"):
        services.start_traffic(actor=demo_admin, deployment=demo_deployment, duration=60)


def test_a_dead_run_does_not_block_the_next_one(demo_deployment, demo_admin, monkeypatch):
    monkeypatch.setattr("demo.services._enqueue_traffic", lambda _pk: None)
    stale = TrafficRun.objects.create(deployment=demo_deployment, duration_s=10,
                                      status=TrafficStatus.RUNNING)
    TrafficRun.objects.filter(pk=stale.pk).update(
        created_at=stale.created_at.replace(year=stale.created_at.year - 1))
    run = services.start_traffic(actor=demo_admin, deployment=demo_deployment, duration=60)
    stale.refresh_from_db()
    assert stale.status == TrafficStatus.FAILED and run.status == TrafficStatus.QUEUED


def test_the_button_shows_on_the_demo_deployment_only_and_reports_progress(
        demo_deployment, demo_admin, monkeypatch):
    monkeypatch.setattr("demo.services._enqueue_traffic", lambda _pk: None)
    client = Client()
    client.force_login(demo_admin)
    page = client.get("/deployments/iris-demo/").content.decode()
    assert "Send demo traffic" in page and 'action="/demo/traffic/iris-demo/"' in page

    response = client.post("/demo/traffic/iris-demo/", {"duration": "5"}, follow=True)
    assert "duration must be 10-540 seconds (got 5)" in response.content.decode()
    response = client.post("/demo/traffic/iris-demo/", {"duration": "30"}, follow=True)
    page = response.content.decode()
    assert "Sending 30 s of demo traffic" in page and "Queued" in page
    assert 'hx-get="/demo/traffic/iris-demo/status/"' in page

    run = TrafficRun.objects.get()
    TrafficRun.objects.filter(pk=run.pk).update(status=TrafficStatus.RUNNING, progress=40,
                                                message="120 requests, drifted segment")
    fragment = client.get("/demo/traffic/iris-demo/status/").content.decode()
    assert fragment.startswith('<article id="demo-traffic"')
    assert 'value="40"' in fragment and "drifted segment" in fragment
    assert "Send demo traffic" not in fragment  # one run at a time

    other = TeamFactory(slug="other")
    model = RegisteredModel.objects.create(name="other-model", team=other)
    ModelVersion.objects.create(model=model, version=1, status=VersionStatus.READY,
                                source_format="sklearn", input_example=EXAMPLE)
    deployment_services.create_deployment(actor=demo_admin, team=other, name="other-dep",
                                          model="other-model", version=1)
    assert "Send demo traffic" not in client.get("/deployments/other-dep/").content.decode()
    assert client.get("/demo/traffic/other-dep/status/").status_code == 404


def test_outsiders_cannot_see_or_start_demo_traffic(demo_deployment):
    outsider = UserFactory(username="otto")
    client = Client()
    client.force_login(outsider)
    assert client.post("/demo/traffic/iris-demo/", {"duration": "30"}).status_code == 404
    assert client.get("/demo/traffic/iris-demo/status/").status_code == 404
    assert not TrafficRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_demo_traffic_to_a_dead_deployment_exits_non_zero_and_says_why(demo_deployment,
                                                                       live_server):
    """`make demo-traffic` (``manage.py demo_traffic`` in its own process) against the demo
    deployment with no ready replica: every prediction is a 503, so it stops early, exits
    non-zero and says how many failed with what. The gateway is this test's live server."""
    import os
    import subprocess
    import sys

    from tests.workers.test_celery_worker import _database_url

    env = {**os.environ, "DATABASE_URL": _database_url(), "MODELPORT_BASE_URL": live_server.url,
           "MODELPORT_DEMO_DEPLOYMENT": "iris-demo", "MODELPORT_ADMIN_USERNAME": "admin",
           "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
    done = subprocess.run([sys.executable, "manage.py", "demo_traffic", "--duration", "60"],
                          env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode != 0, done.stdout + done.stderr
    said = re.search(r"Demo traffic failed: Stopped: the first (\d+) requests all failed "
                     r"\((\d+) got 503\); last answer 503 no_ready_replica: Deployment "
                     r"'iris-demo' has no ready replica", done.stderr)
    assert said and said.group(1) == said.group(2) and int(said.group(1)) >= 20, done.stderr
    assert "See iris-demo's status and events: " in done.stderr
    run = TrafficRun.objects.get()
    assert run.status == TrafficStatus.FAILED and run.sent >= 20 and run.errors == run.sent
