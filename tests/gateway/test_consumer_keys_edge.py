"""Consumer keys at the edge (``config/edge.py`` as the Procfile runs it: a real uvicorn process
in front of a real gunicorn, on the test's PostgreSQL), answering like the Django path
(test_consumer_keys_django.py).

Replicas are stand-in HTTP servers on unix socket files (tests/deployments/conftest.py): the
edge tests have no real model container, and what is tested here — admission, the rate limit,
revocation, the counts — happens before any replica is reached. Both processes write
prometheus-client's multiprocess files to one folder, so gunicorn's ``/metrics`` shows the
edge's counters as in production.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta

import pytest
import requests
from django.db.models import Sum
from django.utils import timezone

from deployments.models import ConsumerKey, ConsumerTraffic, Deployment, Revision
from tests.deployments.test_edge import Front, _wait_up, eventually, start_web_and_edge
from tests.deployments.test_gateway import add_replica
from tests.factories import make_consumer_key, make_token
from tests.test_make_run import _free_ports
from tests.workers.test_celery_worker import _database_url, _stop

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
SCORE = b'{"inputs": [[1, 2]]}'
METRICS_TOKEN = "consumer-keys-metrics-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def front(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    """gunicorn on a unix socket and the edge on a free port, as `make run` starts them; token
    and key checks trusted for 30 s, so only the revocation check can drop a revoked key."""
    tmp = tmp_path_factory.mktemp("edge-keys")
    logs, prom = tmp / "logs", tmp / "prometheus"
    for folder in (tmp / "data" / "run", logs, prom):
        folder.mkdir(parents=True)
    with django_db_blocker.unblock():
        database_url = _database_url()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
                "MODELPORT_DATA_DIR": str(tmp / "data"), "DATABASE_URL": database_url,
                "REDIS_URL": redis_url, "MODELPORT_GATEWAY_AUTH_TTL_S": "30",
                "MODELPORT_GATEWAY_TIMEOUT_S": "2", "PROMETHEUS_MULTIPROC_DIR": str(prom),
                "MODELPORT_METRICS_TOKEN": METRICS_TOKEN})
    socket = f"unix:{tmp / 'data' / 'run' / 'web.sock'}"
    (port,) = _free_ports(1)
    procs = start_web_and_edge(env, logs, socket, port)
    base = f"http://127.0.0.1:{port}"
    _wait_up(f"{base}/healthz", procs, logs)
    yield Front(base, procs, logs, tmp / "data")
    _stop(*procs)


@pytest.fixture
def pair(team, v1, upstreams):
    """Two deployments of one team, each with a ready stand-in replica."""
    made = []
    for suffix in ("keyed", "other"):
        d = Deployment.objects.create(name=f"edge-{suffix}-{os.urandom(3).hex()}", team=team,
                                      model=v1.model, version=v1, revision=1)
        Revision.objects.create(deployment=d, number=1, model_version=v1)
        add_replica(d, upstreams(suffix))
        made.append(d)
    return made


def score(front: Front, name: str, secret: str, path: str = "/invocations"
          ) -> requests.Response:
    return requests.post(f"{front.base}/serve/{name}{path}", data=SCORE, timeout=10,
                         headers={"Content-Type": "application/json",
                                  "Authorization": f"Bearer {secret}"})


def metric(front: Front, name: str, labels: str) -> float | None:
    text = requests.get(f"{front.base}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_key_admitted_on_its_deployment_only(front, pair, team, engineer):
    keyed, other = pair
    _, secret = make_consumer_key(team, [keyed], name="search-api")
    ok = eventually(lambda: (r := score(front, keyed.name, secret)).status_code == 200 and r)
    assert ok, front.output()
    assert ok.json()["predictions"] == ["keyed"] and "X-RateLimit-Limit" not in ok.headers
    hidden = score(front, other.name, secret)  # the same team's, not listed
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"
    v2_hidden = score(front, other.name, secret, "/v2/models/iris/infer")
    assert v2_hidden.status_code == 404 and set(v2_hidden.json()) == {"error"}
    assert score(front, "no-such-deployment", secret).status_code == 404
    # a key is not a user: the API and /metrics refuse it
    api = requests.get(f"{front.base}/api/v1/deployments/", timeout=10,
                       headers={"Authorization": f"Bearer {secret}"})
    assert api.status_code == 401
    # personal tokens are unaffected
    _, token = make_token(engineer, name="edge")
    mine = score(front, other.name, token)
    assert mine.status_code == 200 and mine.json()["predictions"] == ["other"]
    assert "X-RateLimit-Limit" not in mine.headers


@pytest.mark.parametrize("case", ["bad-secret", "revoked", "expired"])
def test_invalid_keys_401(front, pair, team, case):
    key, secret = make_consumer_key(team, [pair[0]], name=f"svc-{case}")
    if case == "bad-secret":
        secret = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    elif case == "revoked":
        ConsumerKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    else:
        ConsumerKey.objects.filter(pk=key.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1))
    response = score(front, pair[0].name, secret)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"]
    assert response.json()["code"] == {"revoked": "key_revoked", "expired": "key_expired"}.get(
        case, "token_invalid")


def test_revocation_reaches_the_running_edge(front, pair, team):
    """The edge trusts a key check for 30 s here; a revocation must still stop the key within
    about a second (a generous bound of 10 s, no timing assertion beyond it)."""
    key, secret = make_consumer_key(team, [pair[0]], name="revoke-me")
    assert eventually(lambda: score(front, pair[0].name, secret).status_code == 200)
    ConsumerKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    refused = eventually(lambda: (r := score(front, pair[0].name, secret)).status_code == 401
                         and [r], timeout=10)  # (a 4xx Response is falsy)
    assert refused, front.output()
    assert refused[0].json()["code"] == "key_revoked"


def test_rate_limit_429_then_admitted_again_and_counted(front, pair, team):
    keyed = pair[0]
    key, secret = make_consumer_key(team, [keyed], name="batch-scorer", rate_per_s=0.5,
                                    burst=3)
    answers = [score(front, keyed.name, secret) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], front.output()
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    assert answers[-1].headers["X-RateLimit-Remaining"] == "0"
    limited = score(front, keyed.name, secret)
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert limited.headers["Retry-After"] in ("1", "2")  # a token at 0.5/s: up to 2 s
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    v2 = score(front, keyed.name, secret, "/v2/models/iris/infer")
    assert v2.status_code == 429 and set(v2.json()) == {"error"}
    time.sleep(int(limited.headers["Retry-After"]))
    assert score(front, keyed.name, secret).status_code == 200  # refilled: admitted again

    def counted() -> dict:
        return ConsumerTraffic.objects.filter(key=key, deployment=keyed).aggregate(
            requests=Sum("requests"), limited=Sum("limited"))

    assert eventually(lambda: counted() == {"requests": 4, "limited": 2}), counted()
    labels = f'deployment="{keyed.name}",key="ml-search/batch-scorer"'
    assert eventually(lambda: metric(front, "modelport_gateway_rate_limited_total",
                                     labels) == 2.0)
    assert eventually(lambda: metric(front, "modelport_gateway_consumer_requests_total",
                                     labels) == 4.0)
    assert ConsumerKey.objects.get(pk=key.pk).last_used_at is not None
