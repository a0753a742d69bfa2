"""The MLflow route (``/mlflow/…``): the platform's sign-in in front of a real tracking server.

Every request here goes through Django's test client to the route, which forwards to the real
MLflow server the Procfile starts (on its unix socket). What a refusal must prove is that nothing
reached MLflow: each such test asks MLflow itself afterwards, over the socket.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.test import Client

from registry import mlflow_services, mlflow_upstream
from registry.models import MlflowObject
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory, make_token

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.usefixtures("mlflow_upstream")]
API = "/mlflow/api/2.0/mlflow"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Caller:
    """A script's HTTP calls to the route with a real API token."""

    def __init__(self, user) -> None:
        self.user = user
        _, self.token = make_token(user, name=f"mlflow-{user.username}")
        self.client = Client()

    def call(self, method: str, path: str, body: dict | None = None, **extra):
        url = path if path.startswith("/") else f"{API}/{path}"
        data = json.dumps(body) if body is not None else ""
        return self.client.generic(method, url, data, content_type="application/json",
                                   HTTP_AUTHORIZATION=f"Bearer {self.token}", **extra)

    def ok(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.call(method, path, body)
        assert response.status_code == 200, response.content
        return json.loads(b"".join(response.streaming_content) if response.streaming
                          else response.content)


def refused(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error_code"] == code, body
    for word in words:
        assert word in body["message"], body["message"]
    return body


def upstream_get(path: str, params: dict) -> httpx.Response:
    """Ask MLflow itself, over its socket (what an operator could see)."""
    return mlflow_upstream.client().get(f"/api/2.0/mlflow/{path}", params=params)


@pytest.fixture
def team_a(db):
    return TeamFactory(slug="team-a")


@pytest.fixture
def team_b(db):
    return TeamFactory(slug="team-b")


def person(team, role: Role, name: str):
    user = UserFactory(username=name)
    MembershipFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def alice(team_a):
    return Caller(person(team_a, Role.ENGINEER, "alice"))


@pytest.fixture
def bob(team_b):
    return Caller(person(team_b, Role.ENGINEER, "bob"))


@pytest.fixture
def vera(team_a):
    return Caller(person(team_a, Role.VIEWER, "vera"))


def a_run(caller: Caller) -> str:
    experiment = caller.ok("POST", "experiments/create", {"name": unique("exp")})
    run = caller.ok("POST", "runs/create", {"experiment_id": experiment["experiment_id"],
                                            "user_id": "root"})
    return run["run"]["info"]["run_id"]


# --- who may come in --------------------------------------------------------------------------
def test_no_token_is_401_in_mlflows_format():
    response = Client().post(f"{API}/runs/search", "{}", content_type="application/json")
    refused(response, 401, "UNAUTHENTICATED", "MLFLOW_TRACKING_TOKEN")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_or_basic_credentials_are_401(alice):
    from teams.models import ApiToken

    ApiToken.objects.filter(user=alice.user).update(revoked_at="2020-01-01T00:00:00Z")
    refused(alice.call("POST", "runs/search", {}), 401, "UNAUTHENTICATED", "revoked")
    basic = Client().post(f"{API}/runs/search", "{}", content_type="application/json",
                          HTTP_AUTHORIZATION="Basic YWxpY2U6cGFzc3dvcmQ=")
    refused(basic, 401, "UNAUTHENTICATED", "Bearer")


def test_a_user_in_no_team_cannot_even_read(db):
    loner = Caller(UserFactory(username="loner"))
    refused(loner.call("POST", "experiments/search", {}), 403, "PERMISSION_DENIED", "no team")


def test_a_viewer_reads_but_cannot_write(vera, alice):
    a_run(alice)
    assert vera.ok("POST", "experiments/search", {"max_results": 10})["experiments"]
    refused(vera.call("POST", "experiments/create", {"name": unique("exp")}), 403,
            "PERMISSION_DENIED", "engineer or maintainer")
    refused(vera.call("POST", "runs/create", {"experiment_id": "0"}), 403, "PERMISSION_DENIED")
    refused(vera.call("POST", "registered-models/create", {"name": unique("m")}), 403,
            "PERMISSION_DENIED")


def test_the_portal_session_opens_the_ui_but_only_reads(alice, client):
    anonymous = Client().get("/mlflow/", HTTP_ACCEPT="text/html")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    client.force_login(alice.user)
    page = client.get("/mlflow/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and b"MLflow" in b"".join(page.streaming_content)
    # MLflow's own UI: the portal's policy, with inline styles (its CSS-in-JS) but no inline
    # scripts.
    policy = dict(d.strip().split(" ", 1) for d in page["Content-Security-Policy"].split(";"))
    assert policy["style-src"] == "'self' 'unsafe-inline'"
    assert policy["font-src"] == "'self' data:"  # its icon font
    assert "unsafe" not in policy["script-src"]
    assert client.post("/mlflow/ajax-api/2.0/mlflow/experiments/search", '{"max_results": 5}',
                       content_type="application/json").status_code == 200
    refused(client.post("/mlflow/ajax-api/2.0/mlflow/experiments/create",
                        json.dumps({"name": unique("exp")}), content_type="application/json"),
            403, "PERMISSION_DENIED", "read-only")


# --- runs and artifacts belong to whoever created them -----------------------------------------
def test_runs_are_attributed_to_the_token_and_only_their_creator_changes_them(alice, bob):
    run_id = a_run(alice)
    info = upstream_get("runs/get", {"run_id": run_id}).json()["run"]["info"]
    assert info["user_id"] == "alice"  # not the "root" the client claimed
    assert MlflowObject.objects.get(kind="run", key=run_id).created_by == alice.user
    alice.ok("POST", "runs/log-metric", {"run_id": run_id, "key": "acc", "value": 0.9,
                                         "timestamp": 1})
    for endpoint, body in [
            ("runs/log-metric", {"run_id": run_id, "key": "acc", "value": 0.1, "timestamp": 2}),
            ("runs/set-tag", {"run_id": run_id, "key": "note", "value": "mine"}),
            ("runs/delete", {"run_id": run_id}),
            ("logged-models", {"experiment_id": info["experiment_id"], "name": "model",
                               "source_run_id": run_id})]:
        refused(bob.call("POST", endpoint, body), 403, "PERMISSION_DENIED", "only its creator")
    path = f"{info['experiment_id']}/{run_id}/artifacts/model/MLmodel"
    refused(bob.client.put(f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{path}", b"flavors: {}",
                           content_type="application/octet-stream",
                           HTTP_AUTHORIZATION=f"Bearer {bob.token}"),
            403, "PERMISSION_DENIED", "only its creator")
    listed = mlflow_upstream.client().get("/api/2.0/mlflow-artifacts/artifacts",
                                          params={"path": f"{info['experiment_id']}/{run_id}"})
    assert "files" not in listed.json()  # nothing was uploaded
    history = upstream_get("metrics/get-history", {"run_id": run_id, "metric_key": "acc"})
    assert [m["value"] for m in history.json()["metrics"]] == [0.9]


def test_artifacts_stream_both_ways(alice):
    run_id = a_run(alice)
    experiment = upstream_get("runs/get", {"run_id": run_id}).json()["run"]["info"][
        "experiment_id"]
    payload = bytes(range(256)) * 40000  # 10 MB
    url = f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/blob.bin"
    put = alice.client.put(url, payload, content_type="application/octet-stream",
                           HTTP_AUTHORIZATION=f"Bearer {alice.token}")
    assert put.status_code == 200, put.content
    got = alice.client.get(url, HTTP_AUTHORIZATION=f"Bearer {alice.token}")
    assert got.status_code == 200 and got.streaming
    assert b"".join(got.streaming_content) == payload
    # Served from the portal's origin, an artifact never runs as a page there.
    assert got["Content-Security-Policy"] == "sandbox"
    assert got["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("body", [
    {"run_id": "aaaa", "runId": "bbbb", "key": "k", "value": 1, "timestamp": 1},
    {"run_id": "aaaa", "run_uuid": "bbbb", "key": "k", "value": 1, "timestamp": 1}])
def test_a_parameter_spelled_twice_with_two_values_is_refused(alice, body):
    refused(alice.call("POST", "runs/log-metric", body), 400, "INVALID_PARAMETER_VALUE",
            "given twice")


def test_bodies_and_query_strings_mlflow_would_read_otherwise_are_refused(alice):
    run_id = a_run(alice)
    not_json = alice.client.post(f"{API}/runs/set-tag", b"run_id=" + run_id.encode(),
                                 content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {alice.token}")
    refused(not_json, 400, "INVALID_PARAMETER_VALUE", "not JSON")
    refused(alice.call("POST", f"{API}/runs/set-tag?run_id={run_id}",
                       {"key": "k", "value": "v"}), 400, "INVALID_PARAMETER_VALUE", "query")
    # Old clients' double-encoded JSON is read as MLflow reads it, and judged.
    twice = json.dumps(json.dumps({"run_id": run_id, "key": "k", "value": "v"}))
    assert alice.client.post(f"{API}/runs/set-tag", twice, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {alice.token}").status_code == 200


@pytest.mark.parametrize("path", [
    "/mlflow/api/2.0/mlflow/../mlflow/registered-models/create",
    "/mlflow/api/2.0/mlflow//registered-models/create",
    "/mlflow/api/2.0/mlflow/%2e%2e/mlflow/registered-models/create",
    "/mlflow/api/2.0/mlflow/./registered-models/create"])
def test_paths_that_could_be_read_two_ways_are_not_forwarded(bob, path):
    refused(bob.call("POST", path, {"name": unique("m")}), 404, "ENDPOINT_NOT_FOUND")


# --- the model registry: Modelport answers it itself (tests/registry/test_mlflow_registry_api.py
# drives it with MlflowClient; here the rules, call by call, without the sandbox) ---------------
@pytest.fixture
def team_a_model(team_a, alice):
    from registry import services

    return services.create_model(actor=alice.user, team=team_a, name=unique("fraud"))


@pytest.mark.parametrize("prefix", ["/mlflow/api/2.0/mlflow", "/mlflow/ajax-api/2.0/mlflow",
                                    "/mlflow/api/3.0/mlflow", "/mlflow/ajax-api/3.0/mlflow"])
def test_another_team_neither_sees_nor_registers_under_a_modelport_model(bob, team_a_model,
                                                                          prefix):
    name = team_a_model.name
    refused(bob.call("POST", f"{prefix}/registered-models/create", {"name": name}), 400,
            "RESOURCE_ALREADY_EXISTS")
    refused(bob.call("POST", f"{prefix}/model-versions/create",
                     {"name": name, "source": "runs:/x/model"}), 403, "PERMISSION_DENIED",
            "belongs to team 'team-a'", "'bob' is not a member")
    refused(bob.call("GET", f"{prefix}/registered-models/get?name={name}"), 404,
            "RESOURCE_DOES_NOT_EXIST")
    assert upstream_get("registered-models/get", {"name": name}).status_code == 404


def test_registering_creates_the_modelport_model_in_the_callers_team(alice):
    name = unique("iris")
    created = alice.ok("POST", "registered-models/create", {
        "name": name, "description": "d", "tags": [{"key": "owner", "value": "alice"}]})
    assert created["registered_model"]["name"] == name
    from registry.models import RegisteredModel
    from teams.models import AuditEvent

    model = RegisteredModel.objects.get(name=name)
    assert model.team.slug == "team-a" and model.created_by == alice.user
    assert model.mlflow_tags.get().key == "owner"
    event = AuditEvent.objects.get(action="model.created")
    assert event.actor == alice.user and event.source == "mlflow"
    # the tracking server's own registry is never written
    assert upstream_get("registered-models/get", {"name": name}).status_code == 404


def test_team_tags_may_only_name_a_team_the_caller_registers_in(alice, bob, team_a_model):
    refused(bob.call("POST", "registered-models/create", {
        "name": unique("mine"), "tags": [{"key": "modelport.team", "value": "team-a"}]}),
        403, "PERMISSION_DENIED", "team-a")
    own = unique("mine")
    bob.ok("POST", "registered-models/create", {"name": own})
    refused(bob.call("POST", "registered-models/set-tag", {
        "name": own, "key": "modelport.team", "value": "team-a"}), 403, "PERMISSION_DENIED")
    refused(alice.call("POST", "registered-models/set-tag", {
        "name": team_a_model.name, "key": "modelport.owner", "value": "x"}), 403,
        "PERMISSION_DENIED", "modelport.*")
    # a refused tag leaves nothing half-written
    name = unique("half")
    refused(alice.call("POST", "registered-models/create", {
        "name": name, "tags": [{"key": "modelport.owner", "value": "x"}]}), 403,
        "PERMISSION_DENIED", "modelport.*")
    refused(alice.call("POST", "model-versions/create", {
        "name": team_a_model.name, "source": "runs:/0123456789abcdef/model",
        "tags": [{"key": "modelport.owner", "value": "x"}]}), 403, "PERMISSION_DENIED")
    from registry.models import RegisteredModel

    assert not RegisteredModel.objects.filter(name=name).exists()
    assert not team_a_model.versions.exists()


def test_a_user_in_several_teams_names_the_team(alice, team_b):
    MembershipFactory(team=team_b, user=alice.user, role=Role.ENGINEER)
    refused(alice.call("POST", "registered-models/create", {"name": unique("both")}), 400,
            "INVALID_PARAMETER_VALUE", "several teams", "modelport.team")
    alice.ok("POST", "registered-models/create", {
        "name": unique("both"), "tags": [{"key": "modelport.team", "value": "team-b"}]})


@pytest.mark.parametrize(("method", "endpoint", "body", "status", "words"), [
    ("POST", "registered-models/rename", {"new_name": "other"}, 400, ("Renaming",)),
    ("POST", "registered-models/alias", {"alias": "production", "version": "1"}, 404,
     ("no version 1",)),
    ("DELETE", "registered-models/alias", {"alias": "production"}, 403, ("maintainer",)),
    ("POST", "model-versions/transition-stage", {"version": "1", "stage": "Production"}, 404,
     ("not found",)),
    ("DELETE", "registered-models/delete", {}, 403, ("needs maintainer",)),
    ("POST", "model-versions/create", {"source": "file:///etc"}, 400, ("mlflow-artifacts:/",)),
    ("POST", "model-versions/create", {"source": "models:/other/1"}, 400, ("copying",)),
])
def test_registry_calls_get_modelports_answers(alice, team_a_model, method, endpoint, body,
                                               status, words):
    code = {400: "INVALID_PARAMETER_VALUE", 403: "PERMISSION_DENIED",
            404: "RESOURCE_DOES_NOT_EXIST"}[status]
    refused(alice.call(method, endpoint, {"name": team_a_model.name, **body}), status, code,
            *words)
    assert upstream_get("registered-models/get", {"name": team_a_model.name}).status_code == 404


def test_names_modelport_cannot_hold_are_refused_at_once(alice):
    refused(alice.call("POST", "registered-models/create", {"name": "Iris Model"}), 400,
            "INVALID_PARAMETER_VALUE", "not a valid Modelport model name")


# --- what Modelport does not offer never reaches MLflow ----------------------------------------
class Listener:
    """A would-be victim on loopback: records every request it receives."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


def test_webhooks_gateway_and_other_unoffered_apis_are_refused(alice, team_a_model, listener):
    refused(alice.call("POST", "webhooks", {
        "name": "leak", "url": listener.url, "events": [
            {"entity": "model_version", "action": "created"}]}), 403, "PERMISSION_DENIED",
        "webhooks")
    refused(alice.call("POST", "/mlflow/api/3.0/mlflow/gateway/secrets/create",
                       {"secret_name": "x", "secret_value": "y"}), 403, "PERMISSION_DENIED")
    refused(alice.call("GET", "/mlflow/ajax-api/2.0/mlflow/gateway-proxy"), 403,
            "PERMISSION_DENIED")
    refused(alice.call("POST", "/mlflow/v1/traces", {}), 404, "ENDPOINT_NOT_FOUND")
    refused(alice.call("POST", "experiments/create", {
        "name": unique("exp"), "artifact_location": f"{listener.url}/art"}), 403,
        "PERMISSION_DENIED", "artifact_location")
    refused(alice.call("POST", "experiments/create", {
        "name": unique("exp"), "artifact_location": "file:///etc"}), 403, "PERMISSION_DENIED")
    # A registry event MLflow would have sent to a webhook: nothing arrives.
    run_id = a_run(alice)
    alice.ok("POST", "model-versions/create", {"name": team_a_model.name, "run_id": run_id,
                                               "source": f"runs:/{run_id}/model"})
    assert listener.hits == []
    assert upstream_get("webhooks", {}).json().get("webhooks") is None


def test_graphql_passes_only_mlflows_read_queries(alice):
    run_id = a_run(alice)
    query = "query { mlflowGetRun(input: {runId: \"RUN\"}) { run { info { runId } } } }"
    query = query.replace("RUN", run_id)
    answer = alice.ok("POST", "/mlflow/graphql", {"query": query})
    assert answer["data"]["mlflowGetRun"]["run"]["info"]["runId"] == run_id
    refused(alice.call("POST", "/mlflow/graphql", {
        "query": "mutation { testMutation(inputString: \"x\") { output } }"}), 403,
        "PERMISSION_DENIED", "read queries")


def test_an_unreachable_tracking_server_is_503(alice, settings, tmp_path):
    settings.MODELPORT_MLFLOW_UPSTREAM = f"unix:{tmp_path / 'nothing.sock'}"
    refused(alice.call("POST", "experiments/search", {}), 503, "TEMPORARILY_UNAVAILABLE")
    # the model registry is Modelport's own: it answers without the tracking server
    assert alice.ok("GET", "registered-models/search") == {"registered_models": []}
    assert mlflow_services.sync_from_mlflow() == []
