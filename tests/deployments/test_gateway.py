"""The gateway against a stand-in replica (a tiny HTTP server on 127.0.0.1): auth, visibility,
body/content-type/request-id pass-through, traffic split, retry on a dead replica, 503."""

from __future__ import annotations

import pytest
from django.test import Client

from deployments.models import Deployment, Replica, Revision
from gateway import routes
from tests.deployments.conftest import dead_url, key_of
from tests.factories import make_token


@pytest.fixture
def deployment(team, engineer, v1):
    routes.invalidate()
    d = Deployment.objects.create(name="iris-gw", team=team, model=v1.model, version=v1,
                                  revision=1)
    Revision.objects.create(deployment=d, number=1, model_version=v1)
    yield d
    routes.invalidate()


def client_for(user) -> Client:
    _, secret = make_token(user, name="gw")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def add_replica(d, url: str, revision: int = 1, index: int = 0, ready: bool = True) -> None:
    Replica.objects.create(deployment=d, runtime_id=f"mp-{d.name}-r{revision}-{index}",
                           revision=revision, index=index, status="ready", ready=ready, url=url)
    Deployment.objects.filter(pk=d.pk).update(routing_version=d.routing_version + 1)
    d.routing_version += 1
    routes.invalidate(d.name)


def post(client, name="iris-gw", data='{"inputs": [[1, 2]]}', **kw):
    kw.setdefault("content_type", "application/json")
    return client.post(f"/serve/{name}/invocations", data=data, **kw)


def test_auth_and_visibility(deployment, engineer, viewer, stranger):
    assert Client().post("/serve/iris-gw/invocations").status_code == 401
    bad = Client(HTTP_AUTHORIZATION="Bearer mp_nope").post("/serve/iris-gw/invocations")
    assert bad.status_code == 401 and bad["WWW-Authenticate"].startswith("Bearer")
    assert post(client_for(stranger)).status_code == 404
    assert post(client_for(engineer), name="nope").status_code == 404
    response = post(client_for(viewer))
    assert response.status_code == 503
    assert "no ready replica" in response.json()["detail"]
    assert client_for(engineer).get("/serve/iris-gw/invocations").status_code == 405


def test_proxies_body_content_type_and_request_id(deployment, engineer, upstreams):
    add_replica(deployment, upstreams("a"))
    response = post(client_for(engineer), data="a,b\n1,2\n", content_type="text/csv",
                    HTTP_X_REQUEST_ID="abc-1")
    assert response.status_code == 200
    data = response.json()
    assert data["echo"] == "a,b\n1,2\n" and data["content_type"] == "text/csv"
    assert data["request_id"] == "abc-1" and response["X-Request-ID"] == "abc-1"
    assert response["X-Modelport-Revision"] == "1"


def test_sends_the_revisions_replica_key_over_socket_and_tcp(deployment, engineer, upstreams):

    add_replica(deployment, upstreams("unix"), index=0)
    add_replica(deployment, upstreams("tcp", unix=False), index=1)
    answers = [post(client_for(engineer)).json() for _ in range(12)]
    assert {a["predictions"][0] for a in answers} == {"unix", "tcp"}
    assert {a["replica_key"] for a in answers} == {
        key_of(deployment, 1)}


def test_retries_once_on_another_replica(deployment, engineer, upstreams):
    add_replica(deployment, dead_url(), index=0)
    add_replica(deployment, upstreams("alive"), index=1)
    client = client_for(engineer)
    for _ in range(10):
        response = post(client)
        assert response.status_code == 200 and response.json()["predictions"] == ["alive"]


def test_all_replicas_dead_is_502(deployment, engineer):
    add_replica(deployment, dead_url())
    response = post(client_for(engineer))
    assert response.status_code == 502 and response.json()["code"] == "upstream_unavailable"


def test_traffic_split_and_sticky_route_key(deployment, engineer, upstreams, v1):
    Revision.objects.create(deployment=deployment, number=2, model_version=v1)
    add_replica(deployment, upstreams("old"), revision=1)
    add_replica(deployment, upstreams("new"), revision=2)
    Deployment.objects.filter(pk=deployment.pk).update(
        traffic=[{"revision": 2, "percent": 20}, {"revision": 1, "percent": 80}],
        routing_version=99)
    routes.invalidate()
    client = client_for(engineer)
    seen = [post(client).json()["predictions"][0] for _ in range(200)]
    share = seen.count("new") / len(seen)
    assert 0.08 < share < 0.35, share
    sticky = {post(client, HTTP_X_MODELPORT_ROUTE_KEY="user-7").json()["predictions"][0]
              for _ in range(20)}
    assert len(sticky) == 1


def test_routing_table_is_cached_until_the_version_changes(deployment, engineer, upstreams,
                                                           django_assert_max_num_queries):
    add_replica(deployment, upstreams("a"))
    client = client_for(engineer)
    assert post(client).status_code == 200
    # No query per request: at most a routing-version check, a revoked-token check and one
    # stats insert a second.
    with django_assert_max_num_queries(3):
        for _ in range(20):
            assert post(client).status_code == 200


def test_gateway_counts_requests_per_revision(deployment, engineer, upstreams):
    from deployments.models import TrafficSample

    add_replica(deployment, upstreams("a"))
    add_replica(deployment, dead_url(), index=1)
    client = client_for(engineer)
    routes.flush()
    for _ in range(10):
        assert post(client).status_code == 200
    routes.flush()
    totals = TrafficSample.objects.filter(deployment=deployment, revision=1)
    assert sum(t.requests for t in totals) >= 10
    assert sum(t.errors for t in totals) == sum(t.requests for t in totals) - 10
    # Attempts at the dead replica were retried: every caller got an answer, none failed.
    assert sum(t.gateway_requests for t in totals) == 10
    assert sum(t.gateway_502 + t.gateway_503 for t in totals) == 0


def test_gateway_counts_its_own_failures_by_code(deployment, engineer):
    from deployments.models import TrafficSample

    client = client_for(engineer)
    routes.flush()
    assert post(client).status_code == 503  # nothing ready
    add_replica(deployment, dead_url())
    for _ in range(3):
        assert post(client).status_code == 502
    routes.flush()
    rows = TrafficSample.objects.filter(deployment=deployment, revision=1)
    assert sum(t.gateway_503 for t in rows) == 1 and sum(t.gateway_502 for t in rows) == 3
    assert sum(t.gateway_requests for t in rows) == 4
    assert sum(t.requests for t in rows) == sum(t.errors for t in rows) == 3


def test_a_revoked_token_stops_working_at_the_next_revocation_check(deployment, engineer,
                                                                    upstreams):
    from teams.services import revoke_token

    add_replica(deployment, upstreams("a"))
    token, secret = make_token(engineer, name="gw-revoke")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert post(client).status_code == 200  # checked once, cached
    revoke_token(actor=engineer, token=token)
    routes._last_revoke_check[0] = 0.0  # as if REVOKE_CHECK_S had passed
    response = post(client)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
