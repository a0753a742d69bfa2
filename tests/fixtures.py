from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import AdminFactory, MembershipFactory, TeamFactory, UserFactory, make_token
from teams.roles import Role


@pytest.fixture
def team(db):  # noqa: ANN001, ANN201
    return TeamFactory(slug="ml-search", name="ML Search")


@pytest.fixture
def admin_user(db):  # noqa: ANN001, ANN201
    return AdminFactory(username="root")


def member(team, role: Role, username: str | None = None):  # noqa: ANN001, ANN201
    user = UserFactory(username=username or f"{role.value}-{team.slug}")
    MembershipFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def maintainer(team):  # noqa: ANN001, ANN201
    return member(team, Role.MAINTAINER, "mia")


@pytest.fixture
def engineer(team):  # noqa: ANN001, ANN201
    return member(team, Role.ENGINEER, "eve")


@pytest.fixture
def viewer(team):  # noqa: ANN001, ANN201
    return member(team, Role.VIEWER, "vic")


@pytest.fixture
def outsider(db):  # noqa: ANN001, ANN201
    return UserFactory(username="otto")


def bearer_client(user) -> APIClient:  # noqa: ANN001
    """An API client authenticated the way scripts are: with a real Bearer token."""
    client = APIClient()
    if user is not None:
        _, secret = make_token(user, name=f"client-{user.username}")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api_as():  # noqa: ANN201
    return bearer_client
