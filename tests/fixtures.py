from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from teams.roles import Role
from tests.factories import AdminFactory, MembershipFactory, TeamFactory, UserFactory, make_token


@pytest.fixture
def team(db):
    return TeamFactory(slug="ml-search", name="ML Search")


@pytest.fixture
def admin_user(db):
    return AdminFactory(username="root")


def member(team, role: Role, username: str | None = None):
    user = UserFactory(username=username or f"{role.value}-{team.slug}")
    MembershipFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def maintainer(team):
    return member(team, Role.MAINTAINER, "mia")


@pytest.fixture
def engineer(team):
    return member(team, Role.ENGINEER, "eve")


@pytest.fixture
def viewer(team):
    return member(team, Role.VIEWER, "vic")


@pytest.fixture
def outsider(db):
    return UserFactory(username="otto")


def bearer_client(user) -> APIClient:
    """An API client authenticated the way scripts are: with a real Bearer token."""
    client = APIClient()
    if user is not None:
        _, secret = make_token(user, name=f"client-{user.username}")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api_as():
    return bearer_client
