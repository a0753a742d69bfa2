"""Every portal page under the browser harness (tests/e2e/harness.py), at desktop and mobile:
axe-core finds no serious or critical violation, nothing is requested off the host, the console
stays clean, no request fails, and no page scrolls sideways at 390 px. The pages come from the
URLconf (htmx fragments and POST-only views excepted) and are filled with seeded data, including
a long model name and a firing alert, the things that used to push pages wider than a phone.
Screenshots: ``test-artifacts/screenshots/pages/<viewport>/``."""

from __future__ import annotations

import pytest

from deployments.models import ConsumerKey
from monitoring.models import AlertRule
from notifications import services as notifications
from quotas import services as quota_services
from quotas.requests import file_request
from teams.roles import Role
from tests.e2e.harness import checked_page
from tests.factories import (
    PASSWORD,
    AdminFactory,
    MembershipFactory,
    UserFactory,
    make_consumer_key,
    make_token,
)
from tests.frontend.conftest import make_alias, make_deployment, make_model

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG = "customer-lifetime-value-gradient-boosted-regressor-europe-west"
RULE = "{rule}"
JOB = "{job}"
KEY = "{key}"
INFO_SUMMARY = "What a client or the CLI needs to know about this platform"  # GET /api/v1/info/
PAGES = [
    ("dashboard", "/"),
    ("search", "/search/?q=churn"),
    ("models", "/models/"),
    ("model", "/models/churn/"),
    ("model-long-name", f"/models/{LONG}/"),
    ("version", "/models/churn/versions/2/"),
    ("deployments", "/deployments/"),
    ("deployment", "/deployments/churn-prod/"),
    ("deployment-idle", "/deployments/churn-idle/"),
    ("jobs", "/jobs/"),
    ("job", f"/jobs/{JOB}/"),
    ("monitoring", "/monitoring/"),
    ("monitoring-model", "/monitoring/models/churn/"),
    ("monitoring-deployment", "/monitoring/deployments/churn-prod/"),
    ("monitoring-deployment-autoscaled", "/monitoring/deployments/churn-idle/"),
    ("monitoring-model-settings", "/monitoring/models/churn/settings/"),
    ("monitoring-deployment-settings", "/monitoring/deployments/churn-prod/settings/"),
    ("monitoring-rule-new", "/monitoring/deployments/churn-prod/rules/"),
    ("monitoring-rule-edit", f"/monitoring/deployments/churn-prod/rules/{RULE}/edit/"),
    ("teams", "/teams/"),
    ("team", "/teams/ml-search/"),
    ("quota", "/teams/ml-search/quota/"),
    ("consumer-keys", "/teams/ml-search/consumer-keys/"),
    ("consumer-key-edit", f"/teams/ml-search/consumer-keys/{KEY}/edit/"),
    ("consumer-key-revoke", f"/teams/ml-search/consumer-keys/{KEY}/revoke/"),
    ("resource-requests", "/resource-requests/"),
    ("capacity", "/capacity/"),
    ("capacity-targets", "/capacity/targets/"),
    ("tokens", "/tokens/"),
    ("users", "/users/"),
    ("client", "/client/"),
    ("audit", "/audit/"),
    ("notifications", "/notifications/"),
]


def seed(team) -> dict[str, str]:
    """A catalogue worth looking at: versions, an alias, three deployments (one with a firing
    alert, one autoscaled and idle), a long-named model, a pending resource request, a token,
    a notification."""
    admin = AdminFactory(username="root")
    mia = UserFactory(username="mia")
    MembershipFactory(team=team, user=mia, role=Role.MAINTAINER)
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    churn = make_model(team, "churn", versions=2,
                       description="Churn risk from the last 90 days of account activity")
    make_alias(churn, "production", 2)
    prod = make_deployment(churn, "churn-prod", firing=True)
    _idle(churn)
    make_deployment(make_model(team, LONG, versions=1), "customer-lifetime-value-eu-west-canary",
                    ready=1)
    quota_services.get_quota(team)
    file_request(actor=mia, team=team, justification="Nightly batch scoring on a GPU", gpus=1,
                 cpu=2)
    make_token(admin, name="ci-pipeline")
    notifications.notify(users=[admin], text="Resource request from ML Search: 1 GPU",
                         link="/resource-requests/", email=False)
    return {RULE: str(AlertRule.objects.get(name="errors high").pk), JOB: str(_job(churn)),
            KEY: _consumer_key(prod)}


def _consumer_key(d) -> str:
    """A rate-limited key calling churn-prod (its Callers panels) and a revoked one."""
    from datetime import timedelta

    from django.utils import timezone

    from deployments.models import ConsumerTraffic

    key, _ = make_consumer_key(d.team, [d], name="search-api", rate_per_s=20, burst=40)
    old, _ = make_consumer_key(d.team, [d], name="legacy-batch")
    ConsumerKey.objects.filter(pk=old.pk).update(revoked_at=timezone.now())
    now = timezone.now()
    for minutes, requests, limited in ((2, 1200, 35), (30, 900, 0), (300, 5000, 12)):
        ConsumerTraffic.objects.create(key=key, deployment=d, requests=requests,
                                       limited=limited, at=now - timedelta(minutes=minutes))
    ConsumerTraffic.objects.create(key=old, deployment=d, requests=80, limited=0,
                                   at=now - timedelta(hours=3))
    return str(key.pk)


def _idle(model) -> None:
    """An autoscaled deployment scaled to zero after a burst: the page's idle state, its scale
    events and the monitoring page's replicas over time (rows only; nothing runs)."""
    from datetime import timedelta

    from django.utils import timezone

    from deployments.models import Deployment, DeploymentEvent, ScaleSample
    from deployments.spec import Autoscaling

    d = make_deployment(model, "churn-idle", status="idle", replicas=0, ready=0)
    now = timezone.now()
    Deployment.objects.filter(pk=d.pk).update(
        autoscaling=Autoscaling(max_replicas=3, idle_to_zero_after_s=600).as_dict(),
        scaled_at=now - timedelta(minutes=5),
        status_message="Idle (scaled to zero): the next request starts a replica.")
    for minutes, desired, ready in ((50, 1, 1), (40, 3, 2), (39, 3, 3), (20, 1, 1), (5, 0, 0)):
        ScaleSample.objects.create(deployment=d, at=now - timedelta(minutes=minutes),
                                   desired=desired, ready=ready)
    for message in ("Scaling up 1 → 3: 11.0 requests in flight per replica against a target "
                    "of 4.", "Scaling to zero: no request for 600 s. The next request "
                             "wakes it."):
        DeploymentEvent.objects.create(deployment=d, revision=1, message=message)


def _job(model) -> int:
    """A running batch job of a long-named input with a failed chunk: progress bar, chunk
    table with an error and events (rows only; nothing runs)."""
    from jobs.models import BatchJob, JobChunk, JobEvent

    job = BatchJob.objects.create(
        team=model.team, model=model, version=model.versions.get(version=2), status="running",
        input_filename=f"{LONG}-customers-2026-12-07.csv", input_format="csv", rows_total=1000,
        rows_done=400, rows_per_s=812.5, chunk_rows=250, chunks_total=4, parallelism=2,
        output_columns=["customer_id"], status_message="Running: 2 chunk(s) at a time.")
    for index, status in enumerate(("succeeded", "running", "failed", "pending")):
        JobChunk.objects.create(job=job, index=index, row_start=index * 250, rows=250,
                                status=status, attempts=1 if status != "pending" else 0,
                                rows_done={"succeeded": 250, "running": 150}.get(status, 0),
                                error="exited with 137 (out of memory); retrying"
                                if status == "failed" else "")
    JobEvent.objects.create(job=job, kind="warning", chunk=2,
                            message="Chunk 2 failed (attempt 1): exited with 137\nKilled")
    return job.pk


def _soft(failures: list[str], check) -> None:
    try:
        check()
    except pytest.fail.Exception as failure:
        failures.append(str(failure))


@pytest.mark.parametrize(("viewport", "scheme"), [("desktop", "light"), ("mobile", "light"),
                                                  ("desktop", "dark"), ("mobile", "dark")])
def test_every_portal_page_passes_the_harness(live_server, browser, team, viewport, scheme):
    """Both sizes in both themes (the dark theme's colour contrast is its own)."""
    values = seed(team)
    failures: list[str] = []
    with checked_page(browser, live_server.url, viewport, folder="pages",
                      color_scheme=scheme) as checked:
        checked.clear_shots()
        checked.goto("/login/")
        _soft(failures, lambda: checked.check("login"))
        checked.login("root", PASSWORD, check=None)
        for name, path in PAGES:
            for key, value in values.items():
                path = path.replace(key, value)
            response = checked.goto(path)
            assert response.status == 200, (path, response.status)
            _soft(failures, lambda name=name: checked.check(name))
        with checked.expecting(404):
            checked.goto("/models/no-such-model/")
            _soft(failures, lambda: checked.check("not-found"))
        # An engineer opening a platform admin's page: the portal's 403 page.
        checked.context.clear_cookies()
        checked.login("eve", PASSWORD, check=None)
        with checked.expecting(403):
            checked.goto("/audit/")
            _soft(failures, lambda: checked.check("forbidden"))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("viewport", ["desktop", "mobile"])
def test_api_docs_pages_request_nothing_off_the_host(live_server, browser, viewport):
    """Swagger UI and ReDoc, from the platform's own static files (drf-spectacular-sidecar),
    each waited for until it has rendered the API's operations."""
    AdminFactory(username="root")
    with checked_page(browser, live_server.url, viewport, folder="api-docs") as checked:
        checked.clear_shots()
        checked.login("root", PASSWORD)
        checked.goto("/api/v1/docs/")
        checked.page.locator(f"text={INFO_SUMMARY} >> visible=true").first.wait_for()
        checked.check("swagger-ui")
        checked.page.get_by_role("button", name="/api/v1/info/").first.click()
        checked.page.get_by_role("button", name="Try it out").wait_for()
        checked.check("swagger-ui-operation")
        checked.goto("/api/v1/redoc/")
        checked.page.locator(f"text={INFO_SUMMARY} >> visible=true").first.wait_for()
        checked.check("redoc")
