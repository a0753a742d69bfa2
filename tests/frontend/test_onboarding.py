"""Onboarding pages: the Users page (platform admins create users), the add-member search
(scoped to who may add members to that team) and adding by exact username without JavaScript."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from teams.directory import LIMIT
from teams.models import AuditEvent, Membership
from teams.roles import Role
from teams.services import create_user
from teams.welcome import welcome_path
from tests.factories import TeamFactory, UserFactory
from tests.fixtures import member

from .test_accessibility import _Controls

pytestmark = pytest.mark.django_db
User = get_user_model()


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_creates_a_user_and_sees_the_welcome_link(admin_user, team):
    response = _client(admin_user).post("/users/", {
        "username": "dana", "email": "dana@corp.example", "first_name": "Dana",
        "last_name": "Scully", "sign_in": "link", "team": team.slug, "role": "engineer"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Created dana and added them to ml-search as engineer." in body
    assert "http://testserver/welcome/" in body
    assert response["Cache-Control"] == "no-store"
    assert Membership.objects.get(user__username="dana").role == "engineer"


def test_the_form_shows_duplicates_and_missing_password_next_to_the_field(admin_user, engineer):
    client = _client(admin_user)
    dup = client.post("/users/", {"username": "eve", "email": "x@corp.example",
                                  "sign_in": "link", "role": "engineer"}).content.decode()
    assert "A user named &#x27;eve&#x27; already exists." in dup
    assert 'id="id_username-error"' in dup
    nopw = client.post("/users/", {"username": "dana", "email": "x@corp.example",
                                   "sign_in": "password", "role": "engineer"}).content.decode()
    assert "Type the initial password" in nopw and 'id="id_password-error"' in nopw
    assert not User.objects.filter(username="dana").exists()


@pytest.mark.parametrize("fixture", ["maintainer", "engineer", "viewer", "outsider"])
def test_only_platform_admins_open_the_users_page(fixture, request):
    client = _client(request.getfixturevalue(fixture))
    assert client.get("/users/").status_code == 403
    assert client.post("/users/", {"username": "x", "email": "x@corp.example",
                                   "sign_in": "link", "role": "engineer"}).status_code == 403
    assert not User.objects.filter(username="x").exists()


@pytest.fixture
def people(db):
    UserFactory(username="dana", first_name="Dana", last_name="Scully",
                email="dana.scully@corp.example")
    UserFactory(username="fox", first_name="Fox", last_name="Mulder", email="fm@corp.example")
    UserFactory(username="gone", first_name="Dana", email="gone@corp.example", is_active=False)


def _search(client: Client, slug: str, query: str):
    return client.get(f"/teams/{slug}/people/", {"username": query}, HTTP_HX_REQUEST="true")


@pytest.mark.parametrize(("query", "found"), [
    ("dan", ["dana"]),              # username prefix
    ("scul", ["dana"]),             # last name
    ("dana scully", ["dana"]),      # full name
    ("fm@corp", ["fox"]),           # email
    ("corp.example", ["dana", "fox"]),
    ("mia", []),                    # already a member: not offered
    ("gone", []),                   # deactivated
])
def test_a_maintainer_finds_people_to_add(maintainer, people, query, found):
    response = _search(_client(maintainer), "ml-search", query)
    assert response.status_code == 200
    shown = [u for u in ("dana", "fox", "mia", "gone")
             if f'data-pick-user="{u}"' in response.content.decode()]
    assert shown == found


def test_results_are_bounded_and_short_queries_match_exactly(maintainer, people):
    for i in range(LIMIT + 5):
        UserFactory(username=f"bulk{i:02d}")
    client = _client(maintainer)
    many = _search(client, "ml-search", "bulk").content.decode()
    assert many.count("data-pick-user=") == LIMIT
    assert f"The first {LIMIT} matches" in many
    assert "data-pick-user" not in _search(client, "ml-search", "b").content.decode()
    UserFactory(username="q")
    assert 'data-pick-user="q"' in _search(client, "ml-search", "q").content.decode()


def test_who_may_search_is_who_may_add_members(team, people, admin_user, maintainer):
    other = TeamFactory(slug="other")
    other_engineer = member(other, Role.ENGINEER, "oscar")
    other_maintainer = member(other, Role.MAINTAINER, "olga")
    own_engineer = member(team, Role.ENGINEER, "eve")
    own_viewer = member(team, Role.VIEWER, "vic")
    expected = {admin_user: 200, maintainer: 200, own_engineer: 403, own_viewer: 403,
                other_engineer: 404, other_maintainer: 404, UserFactory(username="nobody"): 404}
    for user, status in expected.items():
        response = _search(_client(user), "ml-search", "dana")
        assert response.status_code == status, user.username
        assert ("dana.scully" in response.content.decode()) == (status == 200)
    anonymous = Client().get("/teams/ml-search/people/", {"username": "dana"})
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_the_add_form_searches_and_still_takes_an_exact_username(maintainer, people):
    client = _client(maintainer)
    page = client.get("/teams/ml-search/").content.decode()
    assert 'hx-get="/teams/ml-search/people/"' in page and 'id="user-matches"' in page
    added = client.post("/teams/ml-search/", {"intent": "add", "username": "fox",
                                              "role": "engineer"})
    assert added.status_code == 302
    assert Membership.objects.get(user__username="fox").role == "engineer"


def test_a_new_link_only_for_invited_users(admin_user, engineer, maintainer):
    create_user(actor=admin_user, username="dana", email="dana@corp.example")
    admin = _client(admin_user)
    page = admin.get("/users/").content.decode()
    assert 'aria-label="New link for dana"' in page
    assert "New link for eve" not in page  # eve has a password
    renewed = admin.post("/users/", {"intent": "link", "username": "dana"})
    assert "A new link for dana." in renewed.content.decode()
    assert renewed["Cache-Control"] == "no-store"
    refused = admin.post("/users/", {"intent": "link", "username": "eve"}, follow=True)
    assert "has set a password already" in refused.content.decode()
    assert _client(maintainer).post("/users/", {"intent": "link",
                                                "username": "dana"}).status_code == 403
    assert AuditEvent.objects.filter(action="user.welcome_link_issued").count() == 1


def test_every_control_of_the_new_pages_has_a_label(admin_user, team, people):
    client = _client(admin_user)
    user = create_user(actor=admin_user, username="newbie", email="newbie@corp.example")
    pages = {
        "/users/": client.get("/users/").content.decode(),
        "/users/ (errors)": client.post("/users/", {"sign_in": "password",
                                                    "role": "x"}).content.decode(),
        "/teams/ml-search/": client.get("/teams/ml-search/").content.decode(),
        "search fragment": _search(client, "ml-search", "dana").content.decode(),
    }
    welcome_client = Client()
    form_url = welcome_client.get(welcome_path(user))["Location"]
    pages["/welcome/"] = welcome_client.get(form_url).content.decode()
    assert "Set password" in pages["/welcome/"]
    for name, html in pages.items():
        parser = _Controls()
        parser.feed(html)
        missing = [(c["tag"], c["attrs"].get("name")) for c in parser.unlabelled()]
        assert not missing, f"{name}: controls without a label: {missing}"


def test_the_users_page_and_the_search_run_fixed_queries(admin_user, team, maintainer):
    def count(client: Client, path: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(path).status_code == 200
        return len(ctx.captured_queries)

    def add(start: int, n: int) -> None:
        for i in range(start, start + n):
            user = UserFactory(username=f"pat{i:02d}", first_name="Pat")
            Membership.objects.create(team=TeamFactory(slug=f"t-{i}"), user=user, role="viewer")

    admin, owner = _client(admin_user), _client(maintainer)
    paths = [(admin, "/users/"), (admin, "/users/?q=pat"),
             (owner, "/teams/ml-search/people/?username=pat")]
    add(0, 2)
    few = [count(c, p) for c, p in paths]
    add(2, 10)
    assert [count(c, p) for c, p in paths] == few
