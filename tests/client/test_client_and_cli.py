"""The Python client and the ``modelport`` CLI against a live Modelport server."""

from __future__ import annotations

import io
import json
import stat

import pytest
from modelport import Client, Conflict, NotFound, cli
from modelport.errors import AuthenticationError

from teams.roles import Role
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
    code = cli.main([*base, "models", "register", "broken", str(bad), "--format", "sklearn",
                     "--input-example", '{"columns": ["a"], "data": [[1]]}', "--wait"])
    assert code == 10
    assert "not a scikit-learn estimator" in capsys.readouterr().err


def test_table_output_for_people():
    text = cli.table([{"name": "iris", "tags": ["a", "b"], "latest_version": None}],
                     ["name", "tags", "latest_version"])
    assert text.splitlines() == ["NAME  TAGS  LATEST_VERSION", "iris  a,b   -"]
