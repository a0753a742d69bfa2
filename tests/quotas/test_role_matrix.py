"""Each role x each quota endpoint: the expected HTTP status, and nothing leaks across teams.

Roles: anonymous, outsider (in no team), viewer / engineer / maintainer of ``ml-search``, and a
platform admin who is in no team. Only platform admins approve, deny, set quotas and edit
capacity; members request and read; other teams see nothing (404).
"""

from __future__ import annotations

import pytest

from compute import inventory
from quotas import requests, services
from quotas.models import ResourceRequest
from teams.roles import Role
from tests.factories import AdminFactory, MembershipFactory, TeamFactory, UserFactory
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "viewer", "engineer", "maintainer", "platform_admin"]
Q = "/api/v1/teams/ml-search/quota/"
R = "/api/v1/resource-requests"
QUOTA = {"cpu": 16, "memory_mb": 32768, "gpus": 0, "deployments": 10}
ASK = {"team": "ml-search", "cpu": 2, "justification": "more traffic"}

#          method, path, body, expected status per role in ROLES order
MATRIX = [
    ("get", Q, None, [401, 404, 200, 200, 200, 200]),
    ("put", Q, QUOTA, [401, 404, 403, 403, 403, 200]),
    ("get", f"{R}/", None, [401, 200, 200, 200, 200, 200]),
    ("post", f"{R}/", ASK, [401, 404, 201, 201, 201, 201]),
    ("get", f"{R}/{{id}}/", None, [401, 404, 200, 200, 200, 200]),
    ("post", f"{R}/{{id}}/approve/", {"comment": "ok"}, [401, 404, 403, 403, 403, 200]),
    ("post", f"{R}/{{id}}/deny/", {"comment": "no"}, [401, 404, 403, 403, 403, 200]),
    ("get", "/api/v1/capacity/", None, [401, 200, 200, 200, 200, 200]),
]

CASES = [
    pytest.param(method, path, body, role, statuses[i], id=f"{role}-{method}-{path}")
    for method, path, body, statuses in MATRIX
    for i, role in enumerate(ROLES)
]


def _setup(role: str):
    team = TeamFactory(slug="ml-search")
    keeper = UserFactory(username="keeper")
    MembershipFactory(team=team, user=keeper, role=Role.MAINTAINER)
    request = requests.file_request(actor=keeper, team=team, cpu=1, justification="seed")
    if role == "anonymous":
        return None, request
    if role == "platform_admin":
        return AdminFactory(username="platform"), request
    user = UserFactory(username=role)
    if role != "outsider":
        MembershipFactory(team=team, user=user, role=Role(role))
    return user, request


@pytest.mark.parametrize(("method", "path", "body", "role", "expected"), CASES)
def test_role_matrix(method, path, body, role, expected):
    user, request = _setup(role)
    before = ResourceRequest.objects.get(pk=request.pk).status
    response = getattr(bearer_client(user), method)(path.format(id=request.pk), body,
                                                    format="json")
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert ResourceRequest.objects.get(pk=request.pk).status == before


def test_outsiders_see_no_requests_and_no_gpu_holders_of_other_teams(admin_user):
    team = TeamFactory(slug="ml-search")
    keeper = UserFactory(username="keeper")
    MembershipFactory(team=team, user=keeper, role=Role.ENGINEER)
    requests.file_request(actor=keeper, team=team, cpu=1, justification="seed")
    inventory.register_host(actor=admin_user, name="h", cpu=8, memory_mb=1024,
                           gpus=[("0", "T4")])
    services.set_quota(actor=admin_user, team=team, cpu=1, memory_mb=1, gpus=1, deployments=1)
    services.admit(team=team, owner="deployment:x", gpus=1)
    inventory.allocate_gpus(team=team, count=1, owner="deployment:x/r0")
    outsider = bearer_client(UserFactory(username="otto"))
    assert outsider.get(f"{R}/").json()["results"] == []
    assert outsider.get(f"{R}/", {"team": "ml-search"}).json()["results"] == []
    holder = outsider.get("/api/v1/capacity/").json()["hosts"][0]["gpus"][0]["allocated_to"]
    assert holder["team"] == "(another team)" and holder["owner"] == ""
    mine = bearer_client(keeper).get("/api/v1/capacity/").json()
    assert mine["hosts"][0]["gpus"][0]["allocated_to"]["owner"] == "deployment:x/r0"
