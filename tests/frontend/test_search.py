"""Global search: models, deployments, aliases and teams the user can see, grouped by kind."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.factories import TeamFactory

from .conftest import make_alias, make_deployment, make_model

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_search_groups_models_deployments_aliases_and_teams(team, engineer):
    model = make_model(team, "fraud-detector", versions=2, description="Card fraud scores")
    make_alias(model, "production", 2)
    make_deployment(model, "fraud-prod")
    page = logged_in(engineer).get("/search/", {"q": "fraud"}).content.decode()
    for heading in ("<h2>Models</h2>", "<h2>Deployments</h2>", "<h2>Aliases</h2>"):
        assert heading in page
    assert 'href="/models/fraud-detector/"' in page
    assert 'href="/deployments/fraud-prod/"' in page
    assert "fraud-detector@production" in page


def test_models_match_on_description_too(team, engineer):
    make_model(team, "m1", description="Predicts CHURN of customers")
    page = logged_in(engineer).get("/search/", {"q": "churn"}).content.decode()
    assert 'href="/models/m1/"' in page


def test_search_never_shows_other_teams_objects(team, engineer):
    other = TeamFactory(slug="other")
    make_deployment(make_model(other, "fraud-secret"), "fraud-secret-prod")
    page = logged_in(engineer).get("/search/", {"q": "fraud"}).content.decode()
    assert "fraud-secret" not in page
    assert "Nothing you can see matches" in page


def test_version_and_alias_queries_jump_straight_to_the_version(team, engineer):
    model = make_model(team, "iris", versions=3)
    make_alias(model, "production", 2)
    client = logged_in(engineer)
    assert 'href="/models/iris/versions/3/"' in client.get("/search/", {"q": "iris v3"}) \
        .content.decode()
    page = client.get("/search/", {"q": "iris@production"}).content.decode()
    assert "Go to iris v2 (production)" in page


def test_htmx_requests_get_only_the_results_fragment(team, engineer):
    make_model(team, "iris")
    response = logged_in(engineer).get("/search/", {"q": "iris"}, HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert page.startswith('<section id="search-results"') and "<nav" not in page


def test_every_page_has_a_labelled_search_box_with_a_keyboard_shortcut(engineer):
    page = logged_in(engineer).get("/teams/").content.decode()
    assert 'role="search"' in page and 'for="global-search"' in page
    assert 'aria-keyshortcuts="/"' in page


def test_empty_and_overlong_queries_are_handled(engineer):
    client = logged_in(engineer)
    assert "Press <kbd>/</kbd>" in client.get("/search/").content.decode()
    assert client.get("/search/", {"q": "x" * 5000}).status_code == 200


def test_search_runs_a_fixed_number_of_queries_whatever_the_catalogue_size(team, engineer):
    client = logged_in(engineer)

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/search/", {"q": "m"}).status_code == 200
        return len(ctx.captured_queries)

    make_deployment(make_model(team, "m-0"), "m-0-prod")
    few = count()
    for i in range(1, 25):
        make_deployment(make_model(team, f"m-{i}", versions=2), f"m-{i}-prod")
    assert count() <= few  # never more; fewer once prefix matches fill the page
