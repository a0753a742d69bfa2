"""Failed deployments recover: Retry (API) re-runs the current revision, Stop then Start of a
failed deployment runs it again, transient failures are retried automatically with backoff up to
a cap, a healthy revision is never failed by a replacement that could not be prepared, and
replicas nothing routes to are removed. Against the in-memory runtime of test_reconcile; "time
passes" by moving the retry's due time into the past."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from deployments import retries, services
from deployments.models import Deployment, Revision
from deployments.reconcile import reconcile_deployment
from teams.models import AuditEvent
from tests.deployments.conftest import dead_url
from tests.deployments.test_reconcile import FakeRuntime, create, fast  # noqa: F401
from tests.fixtures import bearer_client
from workers.runtimes import ReplicaRuntimeError, ReplicaState, ReplicaStatus
from workers.runtimes.images import ImageBuildError

URL = "/api/v1/deployments/"
pytestmark = pytest.mark.usefixtures("fast")  # no drain, a short ready timeout, no enqueue


class FlakyRuntime(FakeRuntime):
    """ensure_image raises the queued errors, one per call, then builds."""

    def __init__(self, make_url, errors: list[Exception] | None = None, **kwargs) -> None:
        super().__init__(make_url, **kwargs)
        self.errors = list(errors or [])

    def ensure_image(self, requirements, on_log=None) -> str:
        if self.errors:
            raise self.errors.pop(0)
        return super().ensure_image(requirements, on_log)


def unreachable() -> Exception:
    return ImageBuildError("could not probe modelport/base:bookworm: ('Connection aborted.', "
                           "FileNotFoundError(2, 'No such file or directory'))")


def revision(d: Deployment, number: int = 1) -> Revision:
    return Revision.objects.get(deployment=d, number=number)


def time_passes(d: Deployment, number: int = 1) -> None:
    Revision.objects.filter(deployment=d, number=number).update(
        next_retry_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def api(engineer):
    return bearer_client(engineer)


def test_retry_runs_a_failed_revision_again(engineer, team, v1, upstreams, api,
                                            django_capture_on_commit_callbacks, no_enqueue):
    runtime = FakeRuntime(upstreams, broken={1})
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "failed"
    d.refresh_from_db()
    assert d.status == "failed" and "exited" in d.status_message
    assert revision(d).next_retry_at is None  # the container exits: the model's, not retried
    body = api.get(f"{URL}{d.name}/").json()
    assert body["retry"]["failed"] is True and body["retry"]["next_attempt_at"] is None
    assert "exited" in body["retry"]["reason"]
    assert reconcile_deployment(d.pk, runtime) == "failed"  # stays failed until someone acts

    runtime.broken.clear()  # the cause is fixed
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{URL}{d.name}/retry/")
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "pending" and no_enqueue[-1] == d.pk
    assert revision(d).state == "pending"
    audit = AuditEvent.objects.get(action="deployment.retried", object_repr=d.name)
    assert audit.actor == engineer and audit.before["state"] == "failed"
    assert audit.after["state"] == "pending"
    assert d.events.filter(message__startswith="Retry requested by eve").exists()
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert api.get(f"{URL}{d.name}/").json()["retry"] is None


def test_retry_is_refused_when_nothing_failed_or_for_viewers(engineer, viewer, outsider,
                                                             team, v1, upstreams, api):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    response = api.post(f"{URL}{d.name}/retry/")
    assert response.status_code == 409 and response.json()["code"] == "nothing_to_retry"
    assert "it is healthy and revision 1 is active" in response.json()["detail"]
    assert bearer_client(viewer).post(f"{URL}{d.name}/retry/").status_code == 403
    assert bearer_client(outsider).post(f"{URL}{d.name}/retry/").status_code == 404
    services.stop(actor=engineer, deployment=d)
    response = api.post(f"{URL}{d.name}/retry/")
    assert response.status_code == 409 and response.json()["code"] == "stopped"
    assert not AuditEvent.objects.filter(action="deployment.retried").exists()


def test_stop_then_start_of_a_failed_deployment_runs_it_again(engineer, team, v1,
                                                              upstreams):
    runtime = FakeRuntime(upstreams, broken={1})
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "failed"
    services.stop(actor=engineer, deployment=d)
    assert reconcile_deployment(d.pk, runtime) == "stopped"
    services.start(actor=engineer, deployment=Deployment.objects.get(pk=d.pk))
    assert revision(d).state == "pending"
    # Still broken: failed again, saying why — never "failed · Starting." for good.
    assert reconcile_deployment(d.pk, runtime) == "failed"
    d.refresh_from_db()
    assert d.status == "failed" and "exited" in d.status_message
    assert d.status_message != "Starting."

    runtime.broken.clear()
    services.stop(actor=engineer, deployment=d)
    reconcile_deployment(d.pk, runtime)
    services.start(actor=engineer, deployment=Deployment.objects.get(pk=d.pk))
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert d.events.filter(message__startswith="Started by eve: revision 1 runs again").exists()


def test_a_transient_failure_is_retried_automatically_with_backoff(settings, engineer,
                                                                   team, v1, upstreams, api):
    settings.MODELPORT_RETRY_BACKOFF_S = 10
    runtime = FlakyRuntime(upstreams, errors=[unreachable(), unreachable()])
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    d.refresh_from_db()
    r1 = revision(d)
    assert r1.state == "failed" and r1.retry_attempts == 1 and r1.next_retry_at > timezone.now()
    assert d.status == "pending"
    assert "Retrying automatically at" in d.status_message and "(attempt 1 of 6)" in \
        d.status_message
    assert d.events.filter(message="Automatic retry 1 of 6 in 10 s: the runtime did not answer "
                                   "(a transient cause).").exists()
    retry = api.get(f"{URL}{d.name}/").json()["retry"]
    assert (retry["attempt"], retry["max_attempts"], retry["failed"]) == (1, 6, True)
    assert retry["next_attempt_at"] and "Connection aborted" in retry["reason"]

    # Beat's passes before it is due change nothing.
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    assert revision(d).retry_attempts == 1 and len(runtime.errors) == 1

    time_passes(d)  # attempt 1 runs and fails again: the next waits twice as long
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    assert revision(d).retry_attempts == 2
    assert d.events.filter(message__startswith="Retrying revision 1 automatically (attempt 1 "
                                               "of 6)").exists()
    assert d.events.filter(message__startswith="Automatic retry 2 of 6 in 20 s").exists()

    time_passes(d)  # the runtime answers again: recovered without anyone
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.status == "healthy" and api.get(f"{URL}{d.name}/").json()["retry"] is None
    assert not AuditEvent.objects.filter(action="deployment.retried").exists()


def test_automatic_retries_stop_at_the_cap_and_a_user_retry_starts_over(
        settings, engineer, team, v1, upstreams):
    settings.MODELPORT_RETRY_MAX_ATTEMPTS = 2
    runtime = FlakyRuntime(upstreams, errors=[unreachable() for _ in range(4)])
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "failed"
    d.refresh_from_db()
    r1 = revision(d)
    assert d.status == "failed" and r1.retry_attempts == 2 and r1.next_retry_at is None
    assert d.events.filter(message__startswith="Not retried automatically: 2 automatic retries "
                                               "failed (the runtime did not answer)").exists()
    assert reconcile_deployment(d.pk, runtime) == "failed"

    services.retry(actor=engineer, deployment=d)
    assert revision(d).retry_attempts == 0
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"  # automatic retries again
    assert revision(d).retry_attempts == 1


def test_a_live_replica_not_ready_in_time_is_retried_automatically(settings, engineer,
                                                                   team, v1, upstreams):
    settings.MODELPORT_READY_TIMEOUT_S = 1
    runtime = FakeRuntime(upstreams)
    runtime.make_url = lambda name: dead_url()  # up, but its /ready never answers
    d = create(engineer, team, replicas=1)
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    assert "was not ready after 1 s" in revision(d).failure
    assert runtime.replicas == {}  # the failed replica is removed
    runtime.make_url = upstreams
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "healthy"


def test_a_healthy_revision_is_not_failed_when_a_replacement_cannot_be_prepared(
        engineer, team, v1, upstreams):
    runtime = FlakyRuntime(upstreams)
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    runtime.replicas.pop("mp-iris-rc-r1-1")
    runtime.errors.append(unreachable())
    assert reconcile_deployment(d.pk, runtime) == "degraded"
    d.refresh_from_db()
    assert d.status == "degraded" and "Could not replace replicas of revision 1" in \
        d.status_message
    assert revision(d).state == "active"
    assert sorted(runtime.replicas) == ["mp-iris-rc-r1-0"]  # still serving
    assert reconcile_deployment(d.pk, runtime) == "healthy"


def test_replicas_nothing_routes_to_are_removed_while_a_revision_is_failed(
        engineer, team, v1, v2, upstreams):
    runtime = FakeRuntime(upstreams, broken={2})
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    services.update_deployment(actor=engineer, deployment=d, version=2)
    assert reconcile_deployment(d.pk, runtime) == "failed"
    # Left over by an interrupted rollout: a replica of a revision that serves nothing.
    runtime.replicas["mp-iris-rc-r2-0"] = ReplicaState(
        id="mp-iris-rc-r2-0", deployment="iris-rc", revision=2, replica=0,
        status=ReplicaStatus.RUNNING, url=upstreams("stray"))
    assert reconcile_deployment(d.pk, runtime) == "failed"
    assert sorted(runtime.replicas) == ["mp-iris-rc-r1-0", "mp-iris-rc-r1-1"]
    assert d.events.filter(message__startswith="Removed 1 replica(s) that nothing routes to "
                                               "while revision 2 is failed").exists()


def test_retry_of_a_crash_looping_deployment_replaces_its_replicas_again(
        settings, engineer, team, v1, upstreams):
    settings.MODELPORT_CRASH_LOOP_RESTARTS = 1
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team)
    reconcile_deployment(d.pk, runtime)
    outcome = None
    for _ in range(3):
        victim = runtime.replicas.get("mp-iris-rc-r1-1")
        if victim is not None:
            victim.status, victim.exit_code = ReplicaStatus.EXITED, 137
        outcome = reconcile_deployment(d.pk, runtime)
    assert outcome == "crash-loop"
    assert reconcile_deployment(d.pk, runtime) == "crash-loop"
    services.retry(actor=engineer, deployment=Deployment.objects.get(pk=d.pk))
    assert reconcile_deployment(d.pk, runtime) == "healthy"


@pytest.mark.parametrize(("error", "reason"), [
    (ConnectionRefusedError(111, "Connection refused"), retries.UNREACHABLE),
    (requests.ConnectionError("('Connection aborted.', FileNotFoundError(2))"),
     retries.UNREACHABLE),
    (ImageBuildError("base image modelport/base:bookworm is missing (build it with "
                     "platform/images/build-base.sh, or pull it where possible)"),
     "the base image is missing"),
    (ReplicaRuntimeError("image modelport/serving:abc not found: 404 Client Error"),
     "the serving image is missing"),
    (ImageBuildError("the model's requirements: line 2 'git+https://x/y' is a VCS link"), None),
    (ReplicaRuntimeError("refusing to mount the Docker socket into a model container"), None),
    (FileNotFoundError(2, "No such artifact"), None),
])
def test_which_causes_are_transient(error, reason):
    assert retries.transient_cause(error) == reason


def test_a_transient_cause_is_found_behind_the_error_that_wraps_it():
    try:
        try:
            raise requests.ConnectionError("docker.sock")
        except requests.ConnectionError as inner:
            raise ReplicaRuntimeError("starting mp-x-r1-0 failed") from inner
    except ReplicaRuntimeError as outer:
        assert retries.transient_cause(outer) == retries.UNREACHABLE


def test_backoff_doubles_up_to_its_maximum(settings):
    settings.MODELPORT_RETRY_BACKOFF_S = 10
    settings.MODELPORT_RETRY_BACKOFF_MAX_S = 300
    assert [retries.backoff_s(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_the_deployment_page_shows_the_retry_and_has_the_button(settings, engineer, viewer,
                                                                team, v1, upstreams):
    from django.test import Client

    runtime = FlakyRuntime(upstreams, errors=[unreachable()])
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "retry-scheduled"
    browser = Client()
    browser.force_login(engineer)
    page = browser.get(f"/deployments/{d.name}/status/").content.decode()
    assert "retrying in " in page and " s, attempt 1 of 6" in page
    assert "Retry revision 1" in page
    watcher = Client()
    watcher.force_login(viewer)
    assert "Retry revision 1" not in watcher.get(f"/deployments/{d.name}/").content.decode()

    settings.MODELPORT_RETRY_MAX_ATTEMPTS = 1
    runtime.errors.append(unreachable())
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "failed"
    page = browser.get(f"/deployments/{d.name}/").content.decode()
    assert "not retried automatically" in page and "Retry revision 1" in page
    response = browser.post(f"/deployments/{d.name}/retry/", follow=True)
    assert "Retrying &#x27;iris-rc&#x27;: revision 1 runs again." in response.content.decode()
    assert revision(d).state == "pending"
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert "Retry revision" not in browser.get(f"/deployments/{d.name}/").content.decode()
