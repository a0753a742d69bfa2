"""Failed deployments recover on a real Docker Engine. The failure is real: the serving image
cannot be built because the base image MODELPORT_SERVING_BASE_IMAGE names does not exist on the
engine; "fixing" it is pointing the setting back at the base image that does (as an operator
would after building it with platform/images/build-base.sh)."""

from __future__ import annotations

import time
import uuid

import pytest

from deployments import tasks
from deployments.models import Deployment, Revision
from deployments.reconcile import reconcile_deployment
from teams.models import AuditEvent
from tests.deployments.conftest import unique_name
from tests.deployments.test_docker import containers, deploy, gateway_client, invoke
from tests.fixtures import bearer_client

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
URL = "/api/v1/deployments/"


@pytest.fixture
def missing_base(settings, docker_env, platform_serving_image):
    """The base image setting names an image the engine does not have; returns the fix."""
    present = settings.MODELPORT_SERVING_BASE_IMAGE
    settings.MODELPORT_SERVING_BASE_IMAGE = f"modelport/base:missing-{uuid.uuid4().hex[:8]}"

    def fix() -> None:
        settings.MODELPORT_SERVING_BASE_IMAGE = present
    return fix


def test_failed_then_stop_start_then_retry_becomes_healthy(docker_client, docker_env,
                                                           missing_base, settings, engineer,
                                                           v1):
    settings.MODELPORT_RETRY_MAX_ATTEMPTS = 0  # no automatic retry: only a user's
    name = unique_name("retry")
    docker_env.append(name)
    api = bearer_client(engineer)
    deploy(api, name)
    d = Deployment.objects.get(name=name)
    assert reconcile_deployment(d.pk) == "failed"
    body = api.get(f"{URL}{name}/").json()
    assert body["status"] == "failed"
    assert "Image build failed: base image modelport/base:missing-" in body["status_message"]
    assert body["retry"]["next_attempt_at"] is None and containers(docker_client, name) == []

    # Stop, then Start while it is still broken: it runs again and fails saying why.
    assert api.post(f"{URL}{name}/stop/").status_code == 202
    assert reconcile_deployment(d.pk) == "stopped"
    assert api.post(f"{URL}{name}/start/").status_code == 202
    assert reconcile_deployment(d.pk) == "failed"
    body = api.get(f"{URL}{name}/").json()
    assert body["status"] == "failed" and "is missing" in body["status_message"]

    missing_base()
    response = api.post(f"{URL}{name}/retry/")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert reconcile_deployment(d.pk) == "healthy"
    assert invoke(gateway_client(engineer), name).json()["predictions"] == [0, 2]
    assert len(containers(docker_client, name, all_=False)) == 1
    assert AuditEvent.objects.filter(action="deployment.retried", object_repr=name).count() == 1


def test_the_automatic_retry_recovers_a_transient_failure_without_a_user(
        docker_client, docker_env, missing_base, settings, engineer, v1):
    settings.MODELPORT_RETRY_BACKOFF_S = 1
    name = unique_name("auto")
    docker_env.append(name)
    deploy(bearer_client(engineer), name)
    d = Deployment.objects.get(name=name)
    assert reconcile_deployment(d.pk) == "retry-scheduled"
    d.refresh_from_db()
    assert d.status == "pending" and "(attempt 1 of 6)" in d.status_message
    missing_base()  # the base image is there now

    # Beat's ticks, nothing else: reconcile_all re-runs every deployment.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        tasks.reconcile_all()
        d.refresh_from_db()
        if d.status == "healthy":
            break
        time.sleep(0.5)
    assert d.status == "healthy", (d.status, d.status_message)
    assert d.events.filter(message__startswith="Retrying revision 1 automatically").exists()
    assert Revision.objects.get(deployment=d, number=1).state == "active"
    assert not AuditEvent.objects.filter(action="deployment.retried").exists()
    assert invoke(gateway_client(engineer), name).status_code == 200
