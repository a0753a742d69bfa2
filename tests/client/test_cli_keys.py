"""``modelport consumer-keys …`` and the client's consumer-key calls against a live Modelport:
create (the secret printed once), list, update limits, revoke by name, callers, and the API
refusing a consumer key given as the CLI's token."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from modelport import Client, cli

from deployments.models import ConsumerKey, ConsumerTraffic
from teams import tokens
from teams.roles import Role
from tests.deployments.keys_fixtures import make_deployment
from tests.factories import MembershipFactory, TeamFactory, UserFactory, make_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base(live_server) -> list[str]:
    team = TeamFactory(slug="ml-search")
    user = UserFactory(username="mia")
    MembershipFactory(team=team, user=user, role=Role.MAINTAINER)
    make_deployment(team, "search-rank")
    make_deployment(team, "churn")
    _, token = make_token(user, name="tests")
    return ["--url", live_server.url, "--token", token]


def test_create_list_update_revoke(base, capsys):
    assert cli.main([*base, "consumer-keys", "create", "search-api", "--team", "ml-search",
                     "--deployment", "search-rank", "--rate", "20", "--burst", "40"]) == 0
    printed = capsys.readouterr().out
    secret = printed.strip().splitlines()[-1]
    key = ConsumerKey.objects.get()
    assert tokens.matches(secret, key.digest) and "not shown again" in printed
    assert (key.rate_per_s, key.burst) == (20, 40)

    assert cli.main([*base, "consumer-keys", "list", "--team", "ml-search"]) == 0
    listed = capsys.readouterr().out
    assert "search-api" in listed and "20/s burst 40" in listed and secret not in listed

    assert cli.main([*base, "consumer-keys", "update", "search-api", "--team", "ml-search",
                     "--deployment", "search-rank,churn", "--burst", "60"]) == 0
    key.refresh_from_db()
    assert (key.rate_per_s, key.burst) == (20, 60)
    assert sorted(key.deployments.values_list("name", flat=True)) == ["churn", "search-rank"]
    capsys.readouterr()
    assert cli.main([*base, "consumer-keys", "update", str(key.pk), "--no-limit"]) == 0
    key.refresh_from_db()
    assert key.rate_per_s is None

    now = timezone.now()
    ConsumerTraffic.objects.create(key=key, deployment=key.deployments.get(name="churn"),
                                   at=now - timedelta(minutes=1), requests=12, limited=3)
    capsys.readouterr()
    assert cli.main([*base, "--json", "consumer-keys", "callers", "churn",
                     "--window", "1h"]) == 0
    callers = json.loads(capsys.readouterr().out)["callers"]
    assert [(c["name"], c["requests"], c["limited"]) for c in callers] == [("search-api", 12, 3)]

    assert cli.main([*base, "consumer-keys", "revoke", "search-api", "--team", "ml-search"]) == 0
    assert "revoked search-api" in capsys.readouterr().out
    key.refresh_from_db()
    assert key.status == "revoked"


def test_refusals_exit_with_their_codes(base, capsys):
    assert cli.main([*base, "consumer-keys", "create", "x", "--team", "ml-search",
                     "--deployment", "nope"]) == 6
    assert "nope" in capsys.readouterr().err
    assert cli.main([*base, "consumer-keys", "create", "x", "--team", "ml-search",
                     "--deployment", "churn", "--burst", "5"]) == 6
    assert cli.main([*base, "consumer-keys", "revoke", "ghost", "--team", "ml-search"]) == 4
    assert cli.main([*base, "consumer-keys", "revoke", "ghost"]) == 6
    assert not ConsumerKey.objects.exists()


def test_a_consumer_key_is_no_api_token(base, live_server, capsys):
    assert cli.main([*base, "consumer-keys", "create", "search-api", "--team", "ml-search",
                     "--deployment", "churn", "-q"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("mpk_")
    assert cli.main(["--url", live_server.url, "--token", secret, "teams"]) == 3
    assert "only at /serve/" in capsys.readouterr().err
    with pytest.raises(Exception, match="only at /serve/"):
        Client(live_server.url, token=secret).teams()
