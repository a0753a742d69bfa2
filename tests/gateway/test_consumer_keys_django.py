"""Consumer keys on the gateway's Django path (``GatewayMiddleware`` → ``gateway.views``), with
stand-in replicas (tiny HTTP servers: what is tested is admission, not a model), plus the token
bucket's arithmetic on a given clock.

The edge answers alike (tests/gateway/test_consumer_keys_edge.py)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from deployments.models import ConsumerKey, ConsumerTraffic, Deployment, Revision
from gateway import consumers, routes
from monitoring import prom
from tests.deployments.test_gateway import add_replica
from tests.factories import make_consumer_key, make_token

SCORE = '{"inputs": [[1, 2]]}'


@pytest.fixture
def deployments(team, v1):
    routes.invalidate()
    made = []
    for name in ("iris-keyed", "iris-other"):
        d = Deployment.objects.create(name=name, team=team, model=v1.model, version=v1,
                                      revision=1)
        Revision.objects.create(deployment=d, number=1, model_version=v1)
        made.append(d)
    yield made
    routes.invalidate()


def post(secret: str, name: str = "iris-keyed", path: str = "/invocations") -> Any:
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}").post(
        f"/serve/{name}{path}", data=SCORE, content_type="application/json")


def test_key_admitted_only_on_its_deployments(deployments, team, engineer, upstreams):
    keyed, other = deployments
    add_replica(keyed, upstreams("keyed"))
    add_replica(other, upstreams("other"))
    _, secret = make_consumer_key(team, [keyed])
    ok = post(secret)
    assert ok.status_code == 200 and ok.json()["predictions"] == ["keyed"]
    assert "X-RateLimit-Limit" not in ok  # no limit set: no limit headers
    hidden = post(secret, "iris-other")  # the same team's, not listed: like an outsider's
    assert hidden.status_code == 404 and hidden.json() == {
        "detail": "No deployment 'iris-other'.", "code": "not_found"}
    assert post(secret, "no-such").status_code == 404
    v2_hidden = post(secret, "iris-other", "/v2/models/iris/infer")
    assert v2_hidden.status_code == 404 and set(v2_hidden.json()) == {"error"}
    key = ConsumerKey.objects.get(prefix=secret.split("_")[1])
    assert key.last_used_at is not None
    # personal tokens are unaffected
    _, token = make_token(engineer, name="gw")
    assert post(token, "iris-other").json()["predictions"] == ["other"]


def test_key_is_never_a_user(deployments, team):
    _, secret = make_consumer_key(team, [deployments[0]])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/v1/deployments/")
    assert api.status_code == 401
    assert Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/metrics").status_code == 401


@pytest.mark.parametrize("case", ["bad-secret", "revoked", "expired", "unknown"])
def test_invalid_keys_are_refused_401(deployments, team, case):
    key, secret = make_consumer_key(team, [deployments[0]])
    if case == "bad-secret":
        secret = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    elif case == "revoked":
        ConsumerKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    elif case == "expired":
        ConsumerKey.objects.filter(pk=key.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "unknown":
        secret = "mpk_000000000000_nope"
    response = post(secret)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    code = {"revoked": "key_revoked", "expired": "key_expired"}.get(case, "token_invalid")
    assert response.json()["code"] == code


def test_revocation_drops_a_cached_key(deployments, team, upstreams, settings):
    settings.MODELPORT_GATEWAY_AUTH_TTL_S = 300  # only the revocation check can drop it
    add_replica(deployments[0], upstreams("a"))
    key, secret = make_consumer_key(team, [deployments[0]])
    assert post(secret).status_code == 200
    ConsumerKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    routes._last_revoke_check[0] = 0.0  # the once-a-second check is due (no sleeping here)
    assert post(secret).json()["code"] == "key_revoked"


def test_over_the_limit_429_with_retry_after_and_counts(deployments, team, upstreams):
    add_replica(deployments[0], upstreams("a"))
    key, secret = make_consumer_key(team, [deployments[0]], name="batch-scorer",
                                    rate_per_s=0.01, burst=2)
    first, second = post(secret), post(secret)
    assert first.status_code == second.status_code == 200
    assert first["X-RateLimit-Limit"] == "2" and first["X-RateLimit-Remaining"] == "1"
    assert second["X-RateLimit-Remaining"] == "0"
    limited = post(secret)
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert "ml-search/batch-scorer" in limited.json()["detail"]
    assert 90 <= int(limited["Retry-After"]) <= 100  # one token at 0.01/s: about 100 s
    assert limited["X-RateLimit-Remaining"] == "0"
    v2 = post(secret, path="/v2/models/iris/infer")
    assert v2.status_code == 429 and set(v2.json()) == {"error"} and v2["Retry-After"]
    routes.flush()
    rows = ConsumerTraffic.objects.filter(key=key, deployment=deployments[0])
    assert sum(r.requests for r in rows) == 2 and sum(r.limited for r in rows) == 2
    text = prom.exposition().decode()
    labels = 'deployment="iris-keyed",key="ml-search/batch-scorer"'
    assert f"modelport_gateway_rate_limited_total{{{labels}}} 2.0" in text
    assert f"modelport_gateway_consumer_requests_total{{{labels}}} 2.0" in text


@pytest.mark.django_db(transaction=True)  # the threads' own connections see the rows
def test_limit_is_shared_by_threads(deployments, team, upstreams):
    """gunicorn's threads share one bucket per process: 40 concurrent requests with a burst
    of 10 (and a rate too slow to matter) admit exactly 10."""
    add_replica(deployments[0], upstreams("a"))
    _, secret = make_consumer_key(team, [deployments[0]], rate_per_s=0.001, burst=10)
    assert post(secret).status_code == 200  # cached before the crowd
    codes: list[int] = []

    def call() -> None:
        try:
            codes.append(post(secret).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(codes)) == [200, 429] and codes.count(200) == 9


def test_bucket_arithmetic():
    bucket = consumers.Bucket(rate=2.0, capacity=3.0)
    start = bucket.stamp
    assert [bucket.take(start) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(start) == pytest.approx(0.5)  # one token at 2/s
    assert bucket.take(start + 0.5) == 0.0
    assert bucket.take(start + 10) == 0.0  # refilled to capacity, not beyond
    assert [bucket.take(start + 10) for _ in range(3)][-1] == pytest.approx(0.5)
    assert consumers.retry_after(0.01) == 1 and consumers.retry_after(1.2) == 2
    assert consumers.capacity_of(2.5, None) == 3 and consumers.capacity_of(2.5, 7) == 7


def test_limit_split_across_processes(deployments, team, upstreams, settings, monkeypatch):
    """With 2 processes sharing a key (MODELPORT_GATEWAY_PROCESSES), each admits half of the
    burst."""
    settings.MODELPORT_GATEWAY_PROCESSES = 2
    monkeypatch.setattr(consumers, "_shares", [])
    add_replica(deployments[0], upstreams("a"))
    _, secret = make_consumer_key(team, [deployments[0]], rate_per_s=0.001, burst=4)
    codes = [post(secret).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]


def test_prune_drops_old_consumer_traffic(deployments, team, settings):
    from monitoring import rollups

    key, _ = make_consumer_key(team, [deployments[0]])
    now = timezone.now()
    old = now - timedelta(days=settings.MODELPORT_MONITORING_RAW_RETENTION_DAYS, minutes=1)
    for at in (old, now):
        ConsumerTraffic.objects.create(key=key, deployment=deployments[0], at=at, requests=1)
    assert rollups.prune(now=now)["consumer_traffic"] == 1
    assert ConsumerTraffic.objects.get().at == now


def test_cached_key_costs_no_query(deployments, team, django_assert_num_queries):
    """A cached key's check, deployment check and bucket: no query (the revocation check is
    once a second, the route's own check once a second per deployment)."""
    _, secret = make_consumer_key(team, [deployments[0]], rate_per_s=5, burst=5)
    route = routes.route_for("iris-keyed")
    routes.consumer(secret)
    routes._last_revoke_check[0] = time.monotonic()  # the once-a-second check is not due
    with django_assert_num_queries(0):
        keyed = routes.consumer(secret)
        assert routes.key_refusal(keyed, route, "iris-keyed") is None
