"""Consumer keys' verbs: who may, what is refused (and that nothing is written then), audit,
revoke, and the per-key traffic read."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from deployments import consumer_keys as keys
from deployments.models import ConsumerKey
from teams import tokens
from teams.models import AuditEvent
from tests.deployments.keys_fixtures import traffic
from tests.factories import make_consumer_key

pytestmark = pytest.mark.django_db


def test_maintainer_creates_a_key_shown_once_and_stored_hashed(maintainer, team, search, churn):
    key, secret = keys.create_consumer_key(actor=maintainer, team=team, name="search-api",
                                           deployments=["search-rank", "churn"],
                                           rate_per_s=2.5)
    assert secret.startswith("mpk_") and tokens.parse_prefix(secret, "mpk") == key.prefix
    assert secret not in key.digest and tokens.matches(secret, key.digest)
    assert sorted(key.deployments.values_list("name", flat=True)) == ["churn", "search-rank"]
    assert (key.rate_per_s, key.burst, key.status) == (2.5, 3, "active")  # burst: ceil(rate)
    assert key.created_by == maintainer
    event = AuditEvent.objects.get(action="consumer_key.created")
    assert event.team_slug == "ml-search" and event.actor_username == "mia"
    assert event.after["deployments"] == ["churn", "search-rank"]
    assert event.after["rate_per_s"] == 2.5 and "digest" not in event.after
    assert secret not in str(event.after)


def test_no_limit_and_small_rate_defaults(admin_user, team, search):
    unlimited, _ = keys.create_consumer_key(actor=admin_user, team=team, name="batch",
                                            deployments=[search])
    assert (unlimited.rate_per_s, unlimited.burst) == (None, None)
    slow, _ = keys.create_consumer_key(actor=admin_user, team=team, name="slow",
                                       deployments=[search], rate_per_s=0.2)
    assert slow.burst == 1


@pytest.mark.parametrize("who", ["engineer", "viewer"])
def test_engineers_and_viewers_may_not(request, who, team, search):
    with pytest.raises(PermissionDenied, match="maintainer"):
        keys.create_consumer_key(actor=request.getfixturevalue(who), team=team, name="x",
                                 deployments=["search-rank"])
    assert not ConsumerKey.objects.exists() and not AuditEvent.objects.exists()


def test_outsiders_get_not_found(outsider, team, search):
    with pytest.raises(NotFound):
        keys.create_consumer_key(actor=outsider, team=team, name="x", deployments=["search-rank"])


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"name": "Search API"}, "name", "not a valid key name"),
    ({"deployments": []}, "deployments", "at least one deployment"),
    ({"deployments": "search-rank"}, "deployments", "list of deployment names"),
    ({"deployments": ["search-rank", "ads-ctr"]}, "deployments", "no deployment 'ads-ctr'"),
    ({"deployments": ["nope"]}, "deployments", "no deployment 'nope'"),
    ({"rate_per_s": 0}, "rate_per_s", "more than 0"),
    ({"rate_per_s": -1}, "rate_per_s", "more than 0"),
    ({"rate_per_s": 1e9}, "rate_per_s", "at most"),
    ({"rate_per_s": float("nan")}, "rate_per_s", "more than 0"),
    ({"rate_per_s": "fast"}, "rate_per_s", "number"),
    ({"burst": 5}, "burst", "needs a rate"),
    ({"rate_per_s": 5, "burst": 0}, "burst", "from 1"),
    ({"rate_per_s": 5, "burst": 2.5}, "burst", "whole number"),
    ({"expires_at": "tomorrow"}, "expires_at", "date and time"),
])
def test_bad_input_names_the_field_and_writes_nothing(maintainer, team, search, foreign,
                                                      kwargs, field, message):
    args = {"name": "search-api", "deployments": ["search-rank"], **kwargs}
    with pytest.raises(InvalidInput, match=message) as caught:
        keys.create_consumer_key(actor=maintainer, team=team, **args)
    assert caught.value.field == field
    assert not ConsumerKey.objects.exists() and not AuditEvent.objects.exists()


def test_expiry_must_be_in_the_future(maintainer, team, search):
    with pytest.raises(InvalidInput, match="in the future"):
        keys.create_consumer_key(actor=maintainer, team=team, name="a", deployments=[search],
                                 expires_at=timezone.now() - timedelta(minutes=1))
    key, _ = keys.create_consumer_key(actor=maintainer, team=team, name="a",
                                      deployments=[search],
                                      expires_at=timezone.now() + timedelta(days=30))
    assert key.status == "active" and key.expires_at is not None


def test_active_names_are_unique_per_team_until_revoked(maintainer, team, search):
    first, _ = keys.create_consumer_key(actor=maintainer, team=team, name="search-api",
                                        deployments=[search])
    with pytest.raises(Conflict) as caught:
        keys.create_consumer_key(actor=maintainer, team=team, name="search-api",
                                 deployments=[search])
    assert caught.value.code == "name_taken"
    keys.revoke_consumer_key(actor=maintainer, key=first)
    second, _ = keys.create_consumer_key(actor=maintainer, team=team, name="search-api",
                                         deployments=[search])
    assert second.pk != first.pk and second.prefix != first.prefix


def test_update_changes_deployments_and_limits_not_the_secret(maintainer, team, search, churn):
    key, secret = make_consumer_key(team, [search], rate_per_s=10, burst=20)
    digest = key.digest
    key = keys.update_consumer_key(actor=maintainer, key=key, deployments=["churn"])
    assert list(key.deployments.values_list("name", flat=True)) == ["churn"]
    assert (key.rate_per_s, key.burst) == (10, 20)
    key = keys.update_consumer_key(actor=maintainer, key=key, burst=50)
    assert (key.rate_per_s, key.burst) == (10, 50)
    key = keys.update_consumer_key(actor=maintainer, key=key, rate_per_s=100)
    assert (key.rate_per_s, key.burst) == (100, 100)  # a new rate without a burst: default
    key = keys.update_consumer_key(actor=maintainer, key=key, rate_per_s=None)
    assert (key.rate_per_s, key.burst) == (None, None)
    with pytest.raises(InvalidInput, match="needs a rate"):
        keys.update_consumer_key(actor=maintainer, key=key, burst=3)
    key.refresh_from_db()
    assert key.digest == digest and tokens.matches(secret, key.digest)
    updates = AuditEvent.objects.filter(action="consumer_key.updated").order_by("id")
    assert updates.count() == 4
    assert updates[0].before["deployments"] == ["search-rank"]
    assert updates[0].after["deployments"] == ["churn"]


def test_update_refusals_change_nothing(maintainer, engineer, team, search, foreign):
    key, _ = make_consumer_key(team, [search], rate_per_s=10, burst=20)
    with pytest.raises(InvalidInput, match="ads-ctr"):
        keys.update_consumer_key(actor=maintainer, key=key, deployments=["ads-ctr"],
                                 rate_per_s=1)
    with pytest.raises(PermissionDenied):
        keys.update_consumer_key(actor=engineer, key=key, rate_per_s=1)
    key.refresh_from_db()
    assert (key.rate_per_s, key.burst) == (10, 20)
    assert list(key.deployments.values_list("name", flat=True)) == ["search-rank"]
    assert not AuditEvent.objects.exists()


def test_revoke_is_audited_once_and_final(maintainer, engineer, team, search):
    key, _ = make_consumer_key(team, [search])
    with pytest.raises(PermissionDenied):
        keys.revoke_consumer_key(actor=engineer, key=key)
    key = keys.revoke_consumer_key(actor=maintainer, key=key)
    assert key.status == "revoked" and key.revoked_at is not None
    again = keys.revoke_consumer_key(actor=maintainer, key=key)
    assert again.revoked_at == key.revoked_at
    assert AuditEvent.objects.filter(action="consumer_key.revoked").count() == 1
    with pytest.raises(Conflict) as caught:
        keys.update_consumer_key(actor=maintainer, key=key, rate_per_s=1)
    assert caught.value.code == "key_revoked"


def test_callers_sum_per_key_and_window(viewer, outsider, team, search, churn):
    now = timezone.now()
    app, _ = make_consumer_key(team, [search], name="search-api", rate_per_s=1)
    batch, _ = make_consumer_key(team, [search, churn], name="nightly")
    idle, _ = make_consumer_key(team, [search], name="idle-app")
    make_consumer_key(team, [churn], name="gone")
    traffic(app, search, now - timedelta(minutes=5), 10, 3)
    traffic(app, search, now - timedelta(hours=3), 100, 7)
    traffic(batch, search, now - timedelta(minutes=1), 2)
    traffic(batch, churn, now - timedelta(minutes=1), 50)  # another deployment: not counted
    traffic(app, search, now - timedelta(days=3), 1000)  # outside both windows
    rows = keys.callers(actor=viewer, deployment=search,
                        since=[now - timedelta(hours=1), now - timedelta(hours=24)])
    by_name = {r.name: r for r in rows}
    assert set(by_name) == {"search-api", "nightly", "idle-app"}  # "gone" never called it
    assert (by_name["search-api"].requests, by_name["search-api"].limited) == ([10, 110],
                                                                               [3, 10])
    assert by_name["nightly"].requests == [2, 2]
    assert by_name["idle-app"].requests == [0, 0] and by_name["idle-app"].last_seen is None
    assert rows[0].name == "search-api"  # busiest first
    assert by_name["search-api"].last_seen == now - timedelta(minutes=5)
    with pytest.raises(NotFound):
        keys.callers(actor=outsider, deployment=search, since=[now - timedelta(hours=1)])
    idle.revoked_at = now
    idle.save()
    names = {r.name for r in keys.callers(actor=viewer, deployment=search,
                                          since=[now - timedelta(hours=1)])}
    assert "idle-app" not in names  # revoked and silent: gone from the list
