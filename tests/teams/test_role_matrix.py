"""Each role x each endpoint of teams, members, tokens and audit: the expected HTTP status.

Roles: anonymous (no credentials), outsider (a user in no team), viewer / engineer / maintainer of
team ``ml-search``, and a platform admin (staff) who is in no team.
"""

from __future__ import annotations

import pytest

from teams.roles import Role
from tests.factories import AdminFactory, MembershipFactory, TeamFactory, UserFactory
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "viewer", "engineer", "maintainer", "platform_admin"]
T = "/api/v1/teams/ml-search"

#          method, path, body, expected status per role in ROLES order
MATRIX = [
    ("get", "/api/v1/teams/", None, [401, 200, 200, 200, 200, 200]),
    ("post", "/api/v1/teams/", {"slug": "new-team", "name": "New"},
     [401, 403, 403, 403, 403, 201]),
    ("get", f"{T}/", None, [401, 404, 200, 200, 200, 200]),
    ("patch", f"{T}/", {"name": "Renamed"}, [401, 404, 403, 403, 200, 200]),
    ("get", f"{T}/members/", None, [401, 404, 200, 200, 200, 200]),
    ("post", f"{T}/members/", {"username": "candidate", "role": "viewer"},
     [401, 404, 403, 403, 201, 201]),
    ("patch", f"{T}/members/target/", {"role": "viewer"}, [401, 404, 403, 403, 200, 200]),
    ("delete", f"{T}/members/target/", None, [401, 404, 403, 403, 204, 204]),
    ("get", "/api/v1/tokens/", None, [401, 200, 200, 200, 200, 200]),
    ("post", "/api/v1/tokens/", {"name": "matrix"}, [401, 201, 201, 201, 201, 201]),
    ("get", "/api/v1/audit/", None, [401, 403, 403, 403, 200, 200]),
    ("get", "/api/v1/info/", None, [200, 200, 200, 200, 200, 200]),
]

CASES = [
    pytest.param(method, path, body, role, statuses[i], id=f"{role}-{method}-{path}")
    for method, path, body, statuses in MATRIX
    for i, role in enumerate(ROLES)
]


def _user_for(role: str):
    team = TeamFactory(slug="ml-search")
    UserFactory(username="candidate")
    MembershipFactory(team=team, user=UserFactory(username="target"), role=Role.ENGINEER)
    MembershipFactory(team=team, user=UserFactory(username="keeper"), role=Role.MAINTAINER)
    if role == "anonymous":
        return None
    if role == "platform_admin":
        return AdminFactory(username="platform")
    user = UserFactory(username=role)
    if role != "outsider":
        MembershipFactory(team=team, user=user, role=Role(role))
    return user


@pytest.mark.parametrize(("method", "path", "body", "role", "expected"), CASES)
def test_role_matrix(method, path, body, role, expected):
    client = bearer_client(_user_for(role))
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == expected, response.content
