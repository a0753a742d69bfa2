"""Job schedules: beat's task starts a due schedule (once, and plans the next run), a disabled
one does not, a bad cron is a 400 that writes nothing, the API's verbs and roles, and an alert
rule's retraining hook starts one job of its schedule when an alert opens. The runner is not
run here (its ticks are recorded): what is checked is that the job exists, queued, with the
right trigger and input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from deployments.models import Deployment
from jobs import schedules
from jobs.models import BatchJob, JobSchedule, Trigger
from jobs.schedule_tasks import run_schedules
from monitoring import alerts
from monitoring.models import Alert, AlertState
from monitoring.tasks import evaluate_alerts
from registry.storage import artifact_storage
from teams.models import AuditEvent
from teams.roles import Role
from tests.factories import MembershipFactory, UserFactory
from tests.fixtures import bearer_client
from tests.jobs.conftest import iris_frame

pytestmark = pytest.mark.django_db
URL = "/api/v1/job-schedules/"


@pytest.fixture(autouse=True)
def ticks(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr("jobs.passes.enqueue", calls.append)
    return calls


@pytest.fixture
def dataset(team) -> str:
    """What a team's nightly ETL writes into artifact storage."""
    name = artifact_storage().save(f"datasets/{team.slug}/nightly.csv",
                                   ContentFile(iris_frame(30).to_csv(index=False).encode()))
    return f"artifacts:/{name}"


@pytest.fixture
def nightly(engineer, team, iris_version, dataset) -> JobSchedule:
    return schedules.create_schedule(actor=engineer, team=team, name="nightly",
                                     model=iris_version.model.name, version=1,
                                     input_uri=dataset, cron="0 2 * * *", parallelism=2,
                                     output_columns=["id"])


def test_next_run_follows_cron():
    monday = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)
    assert schedules.next_run("0 2 * * *", monday) == monday.replace(hour=2, minute=0)
    assert schedules.next_run("0 1 * * *", monday) == datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    assert schedules.next_run("*/15 * * * *", monday) == monday.replace(minute=45)
    assert schedules.next_run("30 3 1 * *", monday) == datetime(2027, 1, 1, 3, 30, tzinfo=UTC)


def test_due_schedule_fires_once_through_the_beat_task(nightly, dataset, ticks,
                                                      django_capture_on_commit_callbacks):
    assert nightly.next_run_at is not None and nightly.next_run_at > timezone.now()
    assert run_schedules() == {}  # not due yet
    JobSchedule.objects.filter(pk=nightly.pk).update(
        next_run_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        outcome = run_schedules()
    job = BatchJob.objects.get()
    assert outcome == {nightly.pk: f"job {job.pk}"}
    assert (job.trigger, job.schedule_id, job.input_uri) == (Trigger.SCHEDULE, nightly.pk,
                                                             dataset)
    assert (job.status, job.rows_total, job.parallelism, job.output_columns) == \
        ("queued", 30, 2, ["id"])
    assert job.created_by == nightly.created_by and ticks == [job.pk]
    nightly.refresh_from_db()
    assert nightly.last_run_at is not None and nightly.next_run_at > timezone.now()
    assert (nightly.next_run_at.hour, nightly.next_run_at.minute) == (2, 0)
    assert run_schedules() == {} and BatchJob.objects.count() == 1  # not twice


def test_disabled_schedule_does_not_fire(engineer, nightly):
    schedules.set_enabled(actor=engineer, schedule=nightly, enabled=False)
    nightly.refresh_from_db()
    assert nightly.next_run_at is None
    JobSchedule.objects.filter(pk=nightly.pk).update(
        next_run_at=timezone.now() - timedelta(minutes=1))  # even if a run was planned
    assert run_schedules() == {} and not BatchJob.objects.exists()
    schedules.set_enabled(actor=engineer, schedule=nightly, enabled=True)
    nightly.refresh_from_db()
    assert nightly.next_run_at is not None and nightly.next_run_at > timezone.now()


def test_refused_run_is_recorded_and_the_next_one_still_planned(team, nightly):
    nightly.created_by.memberships.filter(team=team).delete()  # its author left the team
    JobSchedule.objects.filter(pk=nightly.pk).update(
        next_run_at=timezone.now() - timedelta(minutes=1))
    outcome = run_schedules()
    assert outcome[nightly.pk].startswith("refused:") and not BatchJob.objects.exists()
    assert AuditEvent.objects.filter(action="job_schedule.refused",
                                     object_id=str(nightly.pk)).exists()
    nightly.refresh_from_db()
    assert nightly.next_run_at > timezone.now()


def body(mv, dataset, **extra):
    data = {"team": mv.model.team.slug, "name": "nightly", "model": mv.model.name,
            "version": 1, "input_uri": dataset, "cron": "0 2 * * *", "parallelism": 2,
            "resources": {"cpu": 0.5, "memory_mb": 256}, "output_format": "csv",
            "output_columns": ["id"]}
    data.update(extra)
    return data


@pytest.mark.parametrize("cron", ["61 * * * *", "0 2 * *", "every night", "0 25 * * *"])
def test_bad_cron_is_400_and_writes_nothing(engineer, iris_version, dataset, cron):
    response = bearer_client(engineer).post(URL, body(iris_version, dataset, cron=cron),
                                            format="json")
    assert response.status_code == 400, response.content
    assert "cron" in response.json()
    assert not JobSchedule.objects.exists()


def test_schedule_api_verbs_and_roles(engineer, team, iris_version, dataset, ticks):
    api = bearer_client(engineer)
    created = api.post(URL, body(iris_version, dataset), format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["cron"] == "0 2 * * *" and data["enabled"] is True
    assert data["resources"] == {"cpu": 0.5, "memory_mb": 256, "gpus": 0}
    assert api.post(URL, body(iris_version, dataset), format="json").status_code == 409
    sid = data["id"]
    patched = api.patch(f"{URL}{sid}/", {"cron": "30 4 * * *"}, format="json").json()
    assert patched["next_run_at"] and "T04:30:00" in patched["next_run_at"]
    off = api.patch(f"{URL}{sid}/", {"enabled": False}, format="json").json()
    assert off["enabled"] is False and off["next_run_at"] is None
    assert api.get(URL, {"team": team.slug}).json()["count"] == 1
    run = api.post(f"{URL}{sid}/run/")
    assert run.status_code == 202, run.content
    assert run.json()["status"] == "queued" and run.json()["schedule"] == sid
    viewer = UserFactory()
    MembershipFactory(team=team, user=viewer, role=Role.VIEWER)
    as_viewer = bearer_client(viewer)
    assert as_viewer.get(f"{URL}{sid}/").status_code == 200
    assert as_viewer.post(f"{URL}{sid}/run/").status_code == 403
    assert as_viewer.delete(f"{URL}{sid}/").status_code == 403
    assert bearer_client(UserFactory()).get(f"{URL}{sid}/").status_code == 404
    assert api.delete(f"{URL}{sid}/").status_code == 204
    assert not JobSchedule.objects.exists() and BatchJob.objects.get().schedule is None


def test_schedule_input_must_be_in_storage(engineer, iris_version):
    response = bearer_client(engineer).post(
        URL, body(iris_version, "https://example.com/x.csv"), format="json")
    assert response.status_code == 400 and "input_uri" in response.json()


def test_alert_rule_hook_starts_one_job(engineer, team, iris_version, nightly, ticks):
    deployment = Deployment.objects.create(name=f"d-{uuid.uuid4().hex[:6]}", team=team,
                                           model=iris_version.model, version=iris_version)
    api = bearer_client(engineer)
    created = api.post("/api/v1/alert-rules/", {
        "deployment": deployment.name, "name": "drifting", "metric": "psi_max",
        "threshold": 0.2, "job_schedule": nightly.pk}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["job_schedule"] == nightly.pk
    rule = deployment.alert_rules.get()
    # The alert opens (as evaluate_alerts opens it when the rule breaches; the metrics behind a
    # real breach are the monitoring tests' business).
    alert = Alert.objects.create(rule=rule, state=AlertState.FIRING, value=0.5,
                                 message="psi 0.5", started_at=timezone.now())
    evaluate_alerts()  # the beat task: evaluates, then starts the retraining jobs
    job = BatchJob.objects.get()
    assert (job.trigger, job.schedule_id) == (Trigger.ALERT, nightly.pk)
    alert.refresh_from_db()
    assert alert.notified["job"] == f"job {job.pk}"
    assert alerts.start_retrain_jobs() == {} and BatchJob.objects.count() == 1
    # A rule may only name its own team's schedule; null clears it.
    other = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"job_schedule": 999999},
                      format="json")
    assert other.status_code == 404 and "job_schedule" in other.json().get("detail", "") + \
        str(other.json())
    cleared = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"job_schedule": None},
                        format="json")
    assert cleared.status_code == 200 and cleared.json()["job_schedule"] is None


def test_portal_rule_form_offers_the_teams_schedules(engineer, team, iris_version, nightly,
                                                     client):
    deployment = Deployment.objects.create(name=f"d-{uuid.uuid4().hex[:6]}", team=team,
                                           model=iris_version.model, version=iris_version)
    client.force_login(engineer)
    page = client.get(f"/monitoring/deployments/{deployment.name}/rules/")
    assert page.status_code == 200 and "nightly (" in page.content.decode()
    response = client.post(f"/monitoring/deployments/{deployment.name}/rules/", {
        "name": "drifting", "metric": "psi_max", "comparison": ">", "threshold": "0.2",
        "window_minutes": "5", "job_schedule": str(nightly.pk), "enabled": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = deployment.alert_rules.get()
    assert rule.job_schedule_id == nightly.pk
    edit = client.get(f"/monitoring/deployments/{deployment.name}/rules/{rule.pk}/edit/")
    assert f'<option value="{nightly.pk}" selected>' in edit.content.decode()
