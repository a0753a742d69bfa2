"""The navigation shows a link exactly when the page opens for that user: per role, every
shown link answers 200 and every hidden one is refused (403, or the console's redirect to its
own login). Links are read from the rendered page, so a link added to the template without an
entry in frontend/nav.py fails here too."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from frontend.nav import PAGES
from teams.roles import Role
from tests.factories import AdminFactory, TeamFactory, UserFactory
from tests.fixtures import member

pytestmark = pytest.mark.django_db


class _MainNavLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.links: set[str] = set()

    def handle_starttag(self, tag: str, attrs) -> None:
        a = dict(attrs)
        if tag == "nav" and a.get("aria-label") == "Main":
            self.depth = 1
        elif tag == "nav" and self.depth:
            self.depth += 1
        elif tag == "a" and self.depth and a.get("href"):
            self.links.add(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav" and self.depth:
            self.depth -= 1


def _user(persona: str):
    team = TeamFactory(slug="ml-search")
    if persona == "platform admin":
        return AdminFactory(username="root")
    if persona == "no team":
        return UserFactory(username="newcomer")
    return member(team, Role(persona), persona)


def _refused(response) -> bool:
    if response.status_code == 403:
        return True
    # Django's admin sends users who are not staff to its own login form.
    return response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("persona", ["viewer", "engineer", "maintainer", "platform admin",
                                     "no team"])
def test_shown_links_open_and_hidden_ones_are_refused(persona):
    user = _user(persona)
    client = Client()
    client.force_login(user)
    parser = _MainNavLinks()
    parser.feed(client.get("/").content.decode())
    pages = {reverse(page.url_name): page.key for page in PAGES}
    assert parser.links <= set(pages), f"links not in frontend/nav.py: {parser.links - set(pages)}"
    for path, key in pages.items():
        response = client.get(path)
        if path in parser.links:
            assert response.status_code == 200, (persona, key, response.status_code)
        else:
            assert _refused(response), (persona, key, response.status_code)


def test_what_each_role_sees():
    """The decisions themselves, as a table (the test above proves them against the pages)."""
    expected = {"viewer": set(), "engineer": set(), "no team": set(),
                "maintainer": {"audit"}, "platform admin": {"audit", "users", "console"}}
    for persona, extra in expected.items():
        client = Client()
        user = _user(persona)
        client.force_login(user)
        parser = _MainNavLinks()
        parser.feed(client.get("/").content.decode())
        restricted = {"audit": "/audit/", "users": "/users/", "console": "/admin/"}
        assert {k for k, p in restricted.items() if p in parser.links} == extra, persona
        client.logout()


def test_signed_out_pages_show_no_navigation():
    parser = _MainNavLinks()
    parser.feed(Client().get("/login/").content.decode())
    assert parser.links <= {"/"}
