"""The whole path a user takes: a training script in its own process, configured only by the
documented environment (``MLFLOW_TRACKING_URI`` from ``GET /api/v1/info/``, and
``MLFLOW_TRACKING_TOKEN``), logs runs through the live platform to the real tracking server the
Procfile starts and registers its model in Modelport itself (``mlflow_registry_api``), for the
token's user, validated in the Docker sandbox like any upload. Versions registered in the
tracking server's own registry before that are imported once (``import_mlflow_registry``), each
for its recorded creator — or refused, saying why once.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
from django.test import Client

from registry import mlflow_services, mlflow_upstream, services
from registry.models import MlflowVersion, ModelVersion, RegisteredModel
from teams.models import AuditEvent, Membership
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory, make_token

from .conftest import procfile_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.usefixtures("sandbox_image")]


def engineer_of(slug: str, name: str, role: Role = Role.ENGINEER):
    user = UserFactory(username=name)
    MembershipFactory(team=TeamFactory(slug=slug), user=user, role=role)
    return user


def token(user) -> str:
    return make_token(user, name=f"training-{user.username}")[1]


def test_a_training_script_registers_its_version_in_modelport_for_its_author(tracking):
    alice = engineer_of("team-a", "alice")
    stray = Path("mlflow.db")
    existed = stray.exists()
    done = tracking(token(alice), "iris-tracked")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split("RUN_ID=")[1].strip()

    model = RegisteredModel.objects.get(name="iris-tracked")
    assert model.team.slug == "team-a" and model.created_by == alice
    version = model.versions.get()
    assert version.status == "ready", version.status_message
    assert version.created_by == alice
    assert version.lineage["mlflow_run_id"] == run_id
    assert version.lineage["git_commit"] == "deadbeef"
    assert version.params == {"max_iter": "300"} and version.metrics == {"accuracy": 0.97}
    registered = AuditEvent.objects.get(action="version.registered")
    assert registered.actor == alice and registered.team_slug == "team-a"
    # The tracking server's registry holds nothing: there is nothing to sync.
    assert mlflow_upstream.client().get("/api/2.0/mlflow/registered-models/get", params={
        "name": "iris-tracked"}).status_code == 404
    assert mlflow_services.sync_from_mlflow() == []
    assert stray.exists() == existed and not (tracking.workdir / "mlflow.db").exists()


def test_another_teams_engineer_cannot_log_into_a_model_of_team_a(tracking):
    alice = engineer_of("team-a", "alice")
    bob = engineer_of("team-b", "bob")
    services.create_model(actor=alice, team=alice.memberships.get().team, name="fraud")
    done = tracking(token(bob), "fraud")
    assert done.returncode != 0
    assert "PERMISSION_DENIED" in done.stderr and "belongs to team 'team-a'" in done.stderr
    assert not ModelVersion.objects.filter(model__name="fraud").exists()
    found = mlflow_upstream.client().get("/api/2.0/mlflow/model-versions/search",
                                         params={"filter": "name='fraud'"}).json()
    assert "model_versions" not in found  # nothing reached MLflow's registry


def test_a_team_tag_naming_another_team_is_refused(tracking):
    engineer_of("team-a", "alice")
    bob = engineer_of("team-b", "bob")
    done = tracking(token(bob), "sneaky", tags={"modelport.team": "team-a"})
    assert done.returncode != 0 and "PERMISSION_DENIED" in done.stderr
    assert "would be created in team 'team-a'" in done.stderr
    assert not RegisteredModel.objects.filter(name="sneaky").exists()


def test_a_viewer_cannot_log(tracking):
    viewer = engineer_of("team-a", "vera", Role.VIEWER)
    done = tracking(token(viewer), "iris-viewer")
    assert done.returncode != 0
    assert "PERMISSION_DENIED" in done.stderr and "engineer or maintainer" in done.stderr


def test_without_a_token_the_script_is_refused(tracking):
    done = tracking(None, "iris-anonymous")
    assert done.returncode != 0 and "UNAUTHENTICATED" in done.stderr
    assert "MLFLOW_TRACKING_TOKEN" in done.stderr


def legacy_version(tracking, user, name: str, *, record: bool = True) -> None:
    """A version registered in the tracking server's own registry before the upgrade (written
    straight to the server, as the old route forwarded it) and, when ``record``, its creator as
    the old route recorded it."""
    done = tracking(token(user), "")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split("RUN_ID=")[1].strip()
    run = mlflow_upstream.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id})
    models = mlflow_upstream.call("POST", "/api/2.0/mlflow/logged-models/search", json={
        "experiment_ids": [run["run"]["info"]["experiment_id"]]})["models"]
    model_id = next(m["info"]["model_id"] for m in models
                    if m["info"]["source_run_id"] == run_id)
    with contextlib.suppress(mlflow_upstream.MlflowError):
        mlflow_upstream.call("POST", "/api/2.0/mlflow/registered-models/create",
                             json={"name": name})
    created = mlflow_upstream.call("POST", "/api/2.0/mlflow/model-versions/create", json={
        "name": name, "source": f"models:/{model_id}", "run_id": run_id,
        "model_id": model_id})["model_version"]
    if record:
        MlflowVersion.objects.create(name=name, version=int(created["version"]),
                                     created_by=user)


def test_the_one_off_import_brings_in_pre_upgrade_versions_for_their_creators(tracking):
    from django.core.management import call_command

    alice = engineer_of("team-a", "alice")
    legacy_version(tracking, alice, "iris-legacy")
    call_command("import_mlflow_registry")
    model = RegisteredModel.objects.get(name="iris-legacy")
    version = model.versions.get()
    assert version.status == "ready" and version.created_by == alice
    assert version.source == "models:/iris-legacy/1"
    assert MlflowVersion.objects.get(name="iris-legacy").imported == version
    call_command("import_mlflow_registry")  # once
    assert model.versions.count() == 1


def test_a_version_nobody_may_own_is_not_imported_and_the_reason_is_recorded_once(
        tracking, monkeypatch):
    alice = engineer_of("team-a", "alice")
    legacy_version(tracking, alice, "churn")
    # Alice lost the engineer role before the import.
    Membership.objects.filter(user=alice).update(role=Role.VIEWER)
    # A second version written straight into the server: no creator was recorded for it.
    # Recorded versions need no grace period in a test.
    monkeypatch.setattr(mlflow_services, "RECORD_GRACE", mlflow_services.timedelta(0))
    legacy_version(tracking, engineer_of("team-c", "carl"), "churn", record=False)

    for _ in range(2):
        assert mlflow_services.sync_from_mlflow() == []
    assert not RegisteredModel.objects.filter(name="churn").exists()
    first, second = MlflowVersion.objects.filter(name="churn").order_by("version")
    assert first.status == second.status == "refused"
    assert "'alice' is an engineer or maintainer in no team" in first.reason
    assert second.created_by is None and "not created through Modelport" in second.reason
    events = AuditEvent.objects.filter(action="mlflow.version_refused",
                                       object_id__startswith="churn/").order_by("object_id")
    assert [(e.object_repr, e.actor) for e in events] == [("churn v1", alice),
                                                          ("churn v2", None)]
    tags = mlflow_upstream.call("GET", "/api/2.0/mlflow/model-versions/get", params={
        "name": "churn", "version": "1"})["model_version"]["tags"]
    assert {"key": "modelport.import", "value": f"not imported: {first.reason}"} in tags
    # Alice sees that it was refused on her dashboard's recent activity.
    portal = Client()
    portal.force_login(alice)
    assert "mlflow.version_refused" in portal.get("/").content.decode()


def test_a_refused_version_shows_on_its_models_page(tracking):
    alice = engineer_of("team-a", "alice")
    team = alice.memberships.get().team
    maintainer = UserFactory(username="mia")
    MembershipFactory(team=team, user=maintainer, role=Role.MAINTAINER)
    services.create_model(actor=maintainer, team=team, name="churn-page")
    legacy_version(tracking, alice, "churn-page")
    Membership.objects.filter(user=alice).update(role=Role.VIEWER)
    assert mlflow_services.sync_from_mlflow() == []
    portal = Client()
    portal.force_login(maintainer)
    page = portal.get("/models/churn-page/").content.decode()
    assert "Not imported from MLflow" in page and "alice" in page
    assert "needs engineer or higher" in page


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        # Children hang off the thread that forked them: read every thread's list.
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                pending.extend(int(child) for child in children.read_text().split())
    return found


def test_the_tracking_server_listens_only_on_a_private_socket(mlflow_server):
    socket_path = mlflow_server["socket"]
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    listening = _listening_inodes()
    processes = _tree(mlflow_server["pid"])
    for pid in processes:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                assert target[8:-1] not in listening, f"process {pid} listens on TCP"
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                for pid in processes]
    assert not any("huey" in c for c in commands), commands  # no job runner
    # One process: config/mlflow_server.py execs the uvicorn server `mlflow server` would
    # spawn (no waiting parent); `sh -c` may stay as the Procfile line's shell.
    assert len([c for c in commands if "uvicorn" in c or "mlflow" in c]) == 1, commands
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in procfile_command("mlflow")
