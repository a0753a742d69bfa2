"""The MLflow registry API (``/mlflow/…``, answered by Modelport) against a hostile caller:
another team's member, a viewer writing, malformed numbers, paths that try to leave the version
they name, a revoked token, and the two reads that once went to the tracking server's own
registry (which still holds every team's versions registered before the upgrade).

Real PostgreSQL and Modelport's storage, through Django's test client (the route is a plain
Django view; none of these calls reaches the tracking server, so none is needed).
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from registry import storage
from registry.mlflow_policy import classify
from registry.models import MlflowTag, ModelVersion, RegisteredModel, VersionStatus
from registry.sandbox import platform_requirements
from teams.models import AuditEvent
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory, make_token

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
API = "/mlflow/api/2.0/mlflow"
FILES = "/mlflow/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture
def world(mlflow_model_dir):
    """Team A's model 'secret-iris' v1 (ready) and v2 (failed); users of both teams."""
    team_a, team_b = TeamFactory(slug="team-a"), TeamFactory(slug="team-b")
    users = {}
    for name, team, role in (("alice", team_a, Role.ENGINEER), ("vera", team_a, Role.VIEWER),
                             ("bob", team_b, Role.MAINTAINER)):
        users[name] = UserFactory(username=name)
        MembershipFactory(team=team, user=users[name], role=role)
    model = RegisteredModel.objects.create(name="secret-iris", team=team_a,
                                           created_by=users["alice"])
    stored = storage.store_model_dir(mlflow_model_dir)
    for number, status in ((1, VersionStatus.READY), (2, VersionStatus.FAILED)):
        ModelVersion.objects.create(
            model=model, version=number, status=status, source_format="mlflow",
            flavor="sklearn", requirements=platform_requirements(), artifact_name=stored.name,
            artifact_sha256=stored.sha256, artifact_size=stored.size)
    tokens = {name: make_token(user, name=f"t-{name}") for name, user in users.items()}
    return model, users, tokens


def call(tokens, who: str, method: str, url: str, **params):
    client = Client(raise_request_exception=False)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {tokens[who][1]}"}
    if method == "GET":
        return client.get(url, params, **auth)
    return client.generic(method, url, json.dumps(params), "application/json", **auth)


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_another_team_cannot_read_list_or_download(world):
    _, _, tokens = world
    for path, params in (
            ("registered-models/get", {"name": "secret-iris"}),
            ("model-versions/get", {"name": "secret-iris", "version": "1"}),
            ("model-versions/get-download-uri", {"name": "secret-iris", "version": "1"}),
            ("registered-models/alias", {"name": "secret-iris", "alias": "champion"})):
        answer = call(tokens, "bob", "GET", f"{API}/{path}", **params)
        assert answer.status_code == 404, (path, answer.content)
        assert answer.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    for search in ("registered-models/search", "model-versions/search"):
        for flt in ("", "name = 'secret-iris'", "name LIKE 'secret%'"):
            found = call(tokens, "bob", "GET", f"{API}/{search}", filter=flt)
            assert found.status_code == 200 and b"secret-iris" not in found.content
    for path in ("modelport-registry/secret-iris/1/MLmodel",
                 "modelport-registry/secret-iris/1/%2E%2E/2/MLmodel"):
        answer = call(tokens, "bob", "GET", f"{FILES}/{path}")
        assert answer.status_code in (400, 404) and b"flavors" not in body(answer)
    listed = call(tokens, "bob", "GET", FILES, path="modelport-registry/secret-iris/1")
    assert listed.status_code == 404 and b"MLmodel" not in listed.content
    # The UI's read of a version's file is Modelport's, with Modelport's visibility.
    ui = call(tokens, "bob", "GET", "/mlflow/model-versions/get-artifact",
              name="secret-iris", version="1", path="MLmodel")
    assert ui.status_code == 404 and b"flavors" not in body(ui)
    own = call(tokens, "vera", "GET", "/mlflow/model-versions/get-artifact",
               name="secret-iris", version="1", path="MLmodel")
    assert own.status_code == 200 and b"flavors" in body(own)
    for bad in ("../1/MLmodel", "", "a//b"):
        refused = call(tokens, "vera", "GET", "/mlflow/model-versions/get-artifact",
                       name="secret-iris", version="1", path=bad)
        assert refused.status_code == 400, bad


def test_paths_and_versions_that_are_not_ready_are_refused(world):
    _, _, tokens = world
    for path in ("modelport-registry/secret-iris/1/../../x", "modelport-registry/secret-iris/1/"
                 "./MLmodel", "modelport-registry/secret-iris/1//MLmodel",
                 "modelport-registry/secret-iris/2/MLmodel", "modelport-registry/secret-iris/"
                 "%C2%B2/MLmodel", "modelport-registry/secret-iris/99999999999999999999/MLmodel"):
        answer = call(tokens, "alice", "GET", f"{FILES}/{path}")
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert b"flavors" not in body(answer)
    failed = call(tokens, "alice", "GET", f"{API}/model-versions/get-download-uri",
                  name="secret-iris", version="2")
    assert failed.status_code == 400 and "only ready versions" in failed.json()["message"]


@pytest.mark.parametrize("number", ["\u00b2", "\u0663", "99999999999999999999", "-1", "1.0"])
def test_version_numbers_that_are_not_numbers_are_400(world, number):
    """'²' passes str.isdigit but not int(); 10**20 overflows PostgreSQL's integer: both were
    500s."""
    _, _, tokens = world
    answer = call(tokens, "alice", "GET", f"{API}/model-versions/get", name="secret-iris",
                  version=number)
    assert answer.status_code == 400, answer.content
    assert "version number" in answer.json()["message"]
    alias = call(tokens, "alice", "POST", f"{API}/registered-models/alias",
                 name="secret-iris", alias="candidate", version=number)
    assert alias.status_code == 400, alias.content
    results = call(tokens, "alice", "GET", f"{API}/registered-models/search",
                   max_results=number)
    assert results.status_code == 400 and "max_results" in results.json()["message"]


def test_viewers_and_outsiders_write_nothing_and_writes_are_audited(world):
    model, users, tokens = world
    writes = (("POST", "registered-models/set-tag", {"name": "secret-iris", "key": "k",
                                                     "value": "v"}),
              ("POST", "model-versions/set-tag", {"name": "secret-iris", "version": "1",
                                                  "key": "k", "value": "v"}),
              ("PATCH", "model-versions/update", {"name": "secret-iris", "version": "1",
                                                  "description": "x"}),
              ("POST", "registered-models/alias", {"name": "secret-iris", "alias": "candidate",
                                                   "version": "1"}),
              ("DELETE", "model-versions/delete", {"name": "secret-iris", "version": "1"}),
              ("DELETE", "registered-models/delete", {"name": "secret-iris"}))
    for who in ("vera", "bob"):
        for method, path, params in writes:
            answer = call(tokens, who, method, f"{API}/{path}", **params)
            assert answer.status_code in (403, 404), (who, path, answer.content)
    assert not MlflowTag.objects.exists() and model.versions.count() == 2
    assert not model.aliases.exists() and RegisteredModel.objects.filter(pk=model.pk).exists()
    done = call(tokens, "alice", "POST", f"{API}/model-versions/set-tag", name="secret-iris",
                version="1", key="k", value="v")
    assert done.status_code == 200, done.content
    assert AuditEvent.objects.filter(action="mlflow.tag_set", actor=users["alice"],
                                     object_id="secret-iris/1#k").exists()


def test_a_revoked_token_is_refused_at_once(world):
    _, _, tokens = world
    assert call(tokens, "alice", "GET", f"{API}/registered-models/get",
                name="secret-iris").status_code == 200
    token = tokens["alice"][0]
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    refused = call(tokens, "alice", "GET", f"{API}/registered-models/get", name="secret-iris")
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"


def test_the_tracking_servers_own_registry_is_not_read():
    """Its registry still holds the versions of every team registered before the upgrade:
    neither the UI's file read nor GraphQL's version search may reach it."""
    local = classify("GET", "model-versions/get-artifact")
    assert local.local and local.endpoint == "model-versions/get-artifact"
    rule = classify("POST", "graphql").rule
    assert rule is not None
    with pytest.raises(Exception, match="read queries") as refused:
        rule(None, {"query": '{ mlflowSearchModelVersions(input: {filter: ""}) '
                             '{ modelVersions { name } } }'}, {})
    assert refused.value.status == 403
