"""The Python client and the ``modelport`` CLI against a live Modelport server."""

from __future__ import annotations

import io
import json
import stat

import pytest
from django.utils import timezone
from modelport import Client, Conflict, NotFound, cli
from modelport.errors import AuthenticationError

from deployments.models import Deployment, Revision, ShadowSample
from registry.models import RegisteredModel
from teams.models import Team
from teams.roles import Role
from tests.deployments.conftest import make_version
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory
from tests.registry.conftest import zip_dir

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("sandbox_image")]


@pytest.fixture
def engineer(db):
    user = UserFactory(username="cora")
    MembershipFactory(team=TeamFactory(slug="ml-search"), user=user, role=Role.ENGINEER)
    return user


@pytest.fixture
def token(live_server, engineer) -> str:
    return Client(live_server.url, token="").create_token("cora", PASSWORD,
                                                          name="tests")["token"]


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "modelport.json"
    monkeypatch.setenv("MODELPORT_CONFIG", str(path))
    monkeypatch.delenv("MODELPORT_URL", raising=False)
    monkeypatch.delenv("MODELPORT_TOKEN", raising=False)
    return path


def test_client_registers_a_model_with_upload_progress_and_waits_until_ready(
        live_server, token, mlflow_model_dir, tmp_path):
    archive = tmp_path / "iris.zip"
    archive.write_bytes(zip_dir(mlflow_model_dir))
    seen: list[tuple[int, int]] = []
    with Client(live_server.url, token) as mp:
        assert mp.info()["version"]
        mp.create_model(name="iris", team="ml-search", tags=["tabular"])
        accepted = mp.register_version("iris", archive, format="mlflow",
                                       metrics={"accuracy": 0.97},
                                       progress=lambda done, total: seen.append((done, total)))
        ready = mp.wait_for_version("iris", accepted["version"], timeout=300)
        assert ready["status"] == "ready"
        assert seen and seen[-1][0] == seen[-1][1] == archive.stat().st_size
        assert [m["name"] for m in mp.models(tag="tabular")] == ["iris"]
        target = mp.download_artifact("iris", 1, tmp_path / "out.zip")
        assert target.stat().st_size == ready["artifact"]["size"]


def test_client_maps_api_errors_to_exceptions(live_server, token):
    with Client(live_server.url, token) as mp:
        with pytest.raises(NotFound) as missing:
            mp.model("nope")
        assert missing.value.status == 404 and "No model 'nope'" in missing.value.message
        mp.create_model(name="dup", team="ml-search")
        with pytest.raises(Conflict):
            mp.create_model(name="dup", team="ml-search")
    with pytest.raises(AuthenticationError), Client(live_server.url, "mpt_bad") as bad:
        bad.teams()


def test_cli_login_saves_a_private_config_then_lists_models_as_json(
        live_server, engineer, config_file, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["login", "--url", live_server.url, "--username", "cora",
                     "--password-stdin"]) == 0
    saved = json.loads(config_file.read_text())
    assert saved["url"] == live_server.url and saved["token"].startswith("mpt_")
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    capsys.readouterr()

    assert cli.main(["models", "create", "churn", "--team", "ml-search"]) == 0
    capsys.readouterr()
    assert cli.main(["--json", "models", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == ["churn"]
    assert cli.main(["models", "list", "--json"]) == 0  # global options after the command too
    assert json.loads(capsys.readouterr().out) == listed


def test_cli_login_again_rotates_the_machines_token_and_rewrites_the_config(
        live_server, engineer, config_file, monkeypatch, capsys):
    """A second ``modelport login`` used to fail ("active token named 'cli'") and write
    nothing: each login now makes a token named for the machine and the time, saves it, and
    revokes the one the config held."""
    def login(*extra: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
        return cli.main(["--json", "login", "--url", live_server.url, "--username", "cora",
                         "--password-stdin", *extra])

    assert login() == 0
    first = json.loads(config_file.read_text())
    capsys.readouterr()
    assert login() == 0
    second = json.loads(config_file.read_text())
    answer = json.loads(capsys.readouterr().out)
    assert second["token"] != first["token"] and second["token_id"] == answer["token_id"]
    assert answer["revoked"] == first["token_name"]
    assert first["token_name"].startswith("cli@")
    with Client(live_server.url, second["token"]) as mp:
        statuses = {t["id"]: t["status"] for t in mp.tokens()}
    assert statuses[first["token_id"]] == "revoked" and statuses[second["token_id"]] == "active"
    with pytest.raises(AuthenticationError), Client(live_server.url, first["token"]) as old:
        old.teams()
    assert cli.main(["teams"]) == 0  # the saved config works
    capsys.readouterr()
    # A name you chose that is taken: a conflict (exit 5), and the config is left as it was.
    assert login("--token-name", "laptop") == 0
    saved = config_file.read_text()
    assert login("--token-name", "laptop") == 5
    assert "active token named 'laptop'" in capsys.readouterr().err
    assert config_file.read_text() == saved


def test_cli_models_create_exist_ok(live_server, engineer, token, capsys):
    base = ["--url", live_server.url, "--token", token]
    for _ in range(2):
        assert cli.main([*base, "models", "create", "x2", "--team", "ml-search",
                         "--exist-ok"]) == 0
    MembershipFactory(team=TeamFactory(slug="other"), user=engineer, role=Role.ENGINEER)
    assert cli.main([*base, "models", "create", "x2", "--team", "other", "--exist-ok"]) == 5
    assert "already exists in team 'ml-search'" in capsys.readouterr().err


def test_cli_exit_codes_tell_ci_what_went_wrong(live_server, token, capsys):
    base = ["--url", live_server.url, "--token", token]
    assert cli.main([*base, "models", "show", "ghost"]) == 4
    assert "No model 'ghost'" in capsys.readouterr().err
    assert cli.main([*base, "models", "create", "x1", "--team", "ml-search"]) == 0
    assert cli.main([*base, "models", "create", "x1", "--team", "ml-search"]) == 5
    assert cli.main([*base, "models", "create", "Bad Name", "--team", "ml-search"]) == 6
    assert cli.main(["--url", live_server.url, "--token", "mpt_nope", "teams"]) == 3
    capsys.readouterr()
    assert cli.main([*base, "--json", "models", "show", "ghost"]) == 4
    assert json.loads(capsys.readouterr().err)["status"] == 404


def test_cli_register_waits_and_reports_a_failed_version(live_server, token, tmp_path,
                                                         capsys):
    import pickle

    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"not": "a model"}))
    base = ["--url", live_server.url, "--token", token]
    assert cli.main([*base, "models", "create", "broken", "--team", "ml-search"]) == 0
    code = cli.main([*base, "models", "register", "broken", str(bad),  # no --format: a .pkl
                     "--input-example", '{"columns": ["a"], "data": [[1]]}', "--wait"])
    assert code == 10
    assert "not a scikit-learn estimator" in capsys.readouterr().err


def test_table_output_for_people():
    text = cli.table([{"name": "iris", "tags": ["a", "b"], "latest_version": None}],
                     ["name", "tags", "latest_version"])
    assert text.splitlines() == ["NAME  TAGS  LATEST_VERSION", "iris  a,b   -"]


# --- deployments: the shadow strategy ----------------------------------------------------------
@pytest.fixture
def iris_versions(engineer, iris_dir):
    """Two ready iris versions made directly (no validation sandbox), as tests/deployments
    makes them."""
    model = RegisteredModel.objects.create(name="iris", team=Team.objects.get(slug="ml-search"),
                                           created_by=engineer)
    return [make_version(model, number, iris_dir) for number in (1, 2)]


@pytest.fixture
def no_reconcile(monkeypatch):
    """Record reconcile requests instead of running them. The reconciler starts containers on
    Docker; the shadow's end-to-end run (replicas, mirroring, promote, discard) is
    tests/deployments/test_shadow.py. Here the server's answers to the client are tested."""
    calls: list[int] = []
    monkeypatch.setattr("deployments.passes.enqueue_reconcile", calls.append)
    return calls


def shadowing(name: str, *, serving: int, shadow: int, percent: int) -> None:
    """What the reconciler leaves while shadowing (serving revision active with all traffic, the
    new one in state shadow) and what the gateway records of two seconds of mirroring."""
    d = Deployment.objects.get(name=name)
    Revision.objects.filter(deployment=d, number=serving).update(state="active")
    Revision.objects.filter(deployment=d, number=shadow).update(state="shadow")
    Deployment.objects.filter(pk=d.pk).update(
        status="healthy", traffic=[{"revision": serving, "percent": 100}],
        shadow={"revision": shadow, "percent": percent, "tolerance": 0.001})
    for requests, agreed, p50, p95 in ((30, 29, 2.0, 4.0), (10, 10, 4.0, 8.0)):
        ShadowSample.objects.create(deployment=d, revision=shadow, at=timezone.now(),
                                    requests=requests, errors=0, compared=requests,
                                    agreed=agreed, p50_ms=p50, p95_ms=p95)


def test_cli_update_starts_a_shadow_and_promote_or_discard_without_one_is_a_conflict(
        live_server, token, iris_versions, no_reconcile, capsys):
    base = ["--url", live_server.url, "--token", token]
    assert cli.main([*base, "deploy", "iris-prod", "--team", "ml-search", "--model", "iris",
                     "--version", "1", "--cpu", "0.5", "--memory-mb", "512"]) == 0
    capsys.readouterr()

    assert cli.main([*base, "promote", "iris-prod"]) == 5
    assert "has no shadow to promote" in capsys.readouterr().err
    assert cli.main([*base, "--json", "discard", "iris-prod"]) == 5
    error = json.loads(capsys.readouterr().err)
    assert error["status"] == 409 and error["code"] == "no_shadow"
    with Client(live_server.url, token) as mp, pytest.raises(Conflict) as conflict:
        mp.promote("iris-prod", {"type": "canary"})
    assert conflict.value.code == "no_shadow"

    assert cli.main([*base, "update", "iris-prod", "--strategy", "canary",
                     "--shadow-percent", "20"]) == 6
    assert "only to shadow" in capsys.readouterr().err
    assert cli.main([*base, "update", "iris-prod"]) == 6
    assert "nothing to change" in capsys.readouterr().err
    assert cli.main([*base, "--json", "update", "iris-prod", "--version", "2", "--strategy",
                     "shadow", "--shadow-percent", "20", "--tolerance", "0.001"]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert updated["revision"] == 2 and updated["version"] == 2
    assert updated["strategy"] == {"type": "shadow", "percent": 20, "tolerance": 0.001}
    assert updated["shadow"] is None  # until the reconciler has started it
    assert len(no_reconcile) == 2


def test_cli_status_shows_the_shadow_numbers_then_discard_and_promote_end_it(
        live_server, token, iris_versions, no_reconcile, capsys):
    base = ["--url", live_server.url, "--token", token]
    with Client(live_server.url, token) as mp:
        mp.deploy(name="iris-prod", team="ml-search", model="iris", version=1, cpu=0.5,
                  memory_mb=512)
        mp.update_deployment("iris-prod", version=2, strategy={"type": "shadow", "percent": 20})
    shadowing("iris-prod", serving=1, shadow=2, percent=20)

    assert cli.main([*base, "status", "iris-prod"]) == 0
    text = capsys.readouterr().out
    assert "shadow: revision 2 gets a copy of 20% of requests" in text
    header, row = text.strip().splitlines()[-2:]
    assert header.split() == ["REQUESTS", "ERRORS", "DROPPED", "COMPARED", "AGREED",
                              "AGREEMENT", "P50_MS", "P95_MS"]
    assert row.split() == ["40", "0", "0", "40", "39", "97.5%", "2.5", "5.0"]
    assert cli.main([*base, "--json", "status", "iris-prod"]) == 0
    assert json.loads(capsys.readouterr().out)["shadow"] == {
        "revision": 2, "percent": 20, "requests": 40, "errors": 0, "dropped": 0,
        "compared": 40, "agreed": 39, "agreement": 0.975, "p50_ms": 2.5, "p95_ms": 5.0}

    # Discard: back to revision 1's spec as revision 3, rolled out with rolling.
    assert cli.main([*base, "--json", "discard", "iris-prod"]) == 0
    discarded = json.loads(capsys.readouterr().out)
    assert discarded["revision"] == 3 and discarded["version"] == 1
    assert discarded["strategy"]["type"] == "rolling"
    assert cli.main([*base, "discard", "iris-prod"]) == 5  # revision 3 is no shadow
    capsys.readouterr()

    # Shadow v2 again, then promote it with a canary.
    with Client(live_server.url, token) as mp:
        mp.update_deployment("iris-prod", version=2, strategy={"type": "shadow"})
    shadowing("iris-prod", serving=3, shadow=4, percent=100)
    assert cli.main([*base, "--json", "promote", "iris-prod", "--strategy", "canary",
                     "--steps", "50,100"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert promoted["revision"] == 5 and promoted["version"] == 2
    assert promoted["strategy"]["type"] == "canary" and promoted["strategy"]["steps"] == [50, 100]
    assert Revision.objects.get(deployment__name="iris-prod", number=5).reason == \
        "promote shadow revision 4"
    with pytest.raises(SystemExit) as usage:  # promoting to another shadow is no choice
        cli.main([*base, "promote", "iris-prod", "--strategy", "shadow"])
    assert usage.value.code == 2


# --- retry: deployments and versions -----------------------------------------------------------
def test_cli_retry_runs_a_failed_deployment_again_and_status_says_when_it_retries(
        live_server, token, iris_versions, no_reconcile, capsys):
    from datetime import timedelta

    base = ["--url", live_server.url, "--token", token]
    with Client(live_server.url, token) as mp:
        mp.deploy(name="iris-prod", team="ml-search", model="iris", version=1, cpu=0.5,
                  memory_mb=512)
    assert cli.main([*base, "retry", "iris-prod"]) == 5
    assert "has nothing to retry" in capsys.readouterr().err

    # What the reconciler leaves after a transient failure: attempt 3 due in 40 s.
    d = Deployment.objects.get(name="iris-prod")
    Revision.objects.filter(deployment=d, number=1).update(
        state="failed", failure="Image build failed: base image modelport/base:x is missing",
        retry_attempts=3, next_retry_at=timezone.now() + timedelta(seconds=40))
    Deployment.objects.filter(pk=d.pk).update(status="pending")
    assert cli.main([*base, "status", "iris-prod"]) == 0
    text = capsys.readouterr().out
    assert "failed: Image build failed: base image modelport/base:x is missing" in text
    assert "next automatic attempt (3 of 6) at " in text

    assert cli.main([*base, "--json", "retry", "iris-prod"]) == 0
    retried = json.loads(capsys.readouterr().out)
    assert retried["status"] == "pending" and retried["retry"] is None
    assert Revision.objects.get(deployment=d, number=1).state == "pending"
    assert len(no_reconcile) == 2
    with Client(live_server.url, token) as mp, pytest.raises(Conflict) as conflict:
        mp.retry("iris-prod")
    assert conflict.value.code == "nothing_to_retry"


def test_cli_models_retry_validates_a_kept_upload_again(live_server, token, engineer,
                                                        mlflow_model_dir, settings, capsys):
    """A version whose validation could not run keeps its staged upload; the CLI retries it
    and waits (validation runs in the sandbox as for a new upload)."""
    import shutil
    from pathlib import Path

    from registry import mlmodel
    from registry.models import ModelVersion

    model = RegisteredModel.objects.create(name="iris", team=Team.objects.get(slug="ml-search"),
                                           created_by=engineer)
    staging = Path(settings.MODELPORT_DATA_DIR) / "staging" / "kept"
    shutil.copytree(mlflow_model_dir, staging / "input" / "model")
    metadata = mlmodel.read_metadata(staging / "input" / "model")
    (staging / "input" / "job.json").write_text(json.dumps(
        {"format": "mlflow", "input_example": metadata.input_example}))
    ModelVersion.objects.create(
        model=model, version=1, status="failed", source_format="mlflow",
        requirements=metadata.requirements, staging_dir=str(staging),
        status_message="Validation could not run: DockerException: Error while fetching "
                       "server API version")
    base = ["--url", live_server.url, "--token", token]
    assert cli.main([*base, "models", "retry", "iris", "2"]) == 4
    capsys.readouterr()
    assert cli.main([*base, "models", "retry", "iris", "1", "--wait", "--timeout", "600"]) == 0
    assert "iris v1 is ready" in capsys.readouterr().out
    assert cli.main([*base, "models", "retry", "iris", "1"]) == 5
    assert "only a failed version can be validated again" in capsys.readouterr().err


def test_cli_deploy_exist_ok_is_fine_with_the_same_deployment_only(
        live_server, token, engineer, iris_dir, iris_versions, no_reconcile, capsys):
    """What a CI job's second run needs: the deployment exists (and follows its alias)."""
    base = ["--url", live_server.url, "--token", token]
    deploy = [*base, "deploy", "iris-prod", "--team", "ml-search", "--model", "iris",
              "--version", "1", "--cpu", "0.5", "--memory-mb", "512"]
    assert cli.main(deploy) == 0
    assert cli.main(deploy) == 5
    assert "already exists" in capsys.readouterr().err
    assert cli.main([*deploy, "--exist-ok", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "iris-prod"
    other = RegisteredModel.objects.create(name="other", team=Team.objects.get(slug="ml-search"),
                                           created_by=engineer)
    make_version(other, 1, iris_dir)
    elsewhere = [*base, "deploy", "iris-prod", "--team", "ml-search", "--model", "other",
                 "--version", "1", "--exist-ok"]
    assert cli.main(elsewhere) == 5
    assert "of model 'iris' in team 'ml-search'" in capsys.readouterr().err
