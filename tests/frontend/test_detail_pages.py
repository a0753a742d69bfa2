"""Detail pages: breadcrumbs back to the dashboard, and copy-paste snippets (curl and the
Python client) filled in with the deployment's name and the version's input example."""

from __future__ import annotations

import html

import pytest
from django.test import Client

from .conftest import make_deployment, make_model

pytestmark = pytest.mark.django_db


def _page(user, path: str) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200, path
    return response.content.decode()


def test_deployment_page_has_curl_and_python_snippets_with_the_real_example(team, engineer,
                                                                            settings):
    settings.MODELPORT_BASE_URL = "https://models.example.com/"
    make_deployment(make_model(team, "churn"), "churn-prod")
    page = html.unescape(_page(engineer, "/deployments/churn-prod/"))
    assert "curl -X POST https://models.example.com/serve/churn-prod/invocations" in page
    assert '"columns": ["x1", "x2"]' in page
    assert 'client = Client("https://models.example.com", token=os.environ["MODELPORT_TOKEN"])' \
        in page
    assert 'print(client.predict("churn-prod", payload))' in page
    assert 'data-copy="deployment-call-curl"' in page and 'data-copy="deployment-call-python"' \
        in page


def test_model_page_names_its_deployment_in_the_snippets(team, engineer):
    model = make_model(team, "churn")
    page = html.unescape(_page(engineer, "/models/churn/"))
    assert "/serve/<deployment>/invocations" in page and "deploy it" in page
    make_deployment(model, "churn-prod")
    page = html.unescape(_page(engineer, "/models/churn/"))
    assert "/serve/churn-prod/invocations" in page
    assert 'client.predict("churn-prod", payload)' in page


@pytest.mark.parametrize(("path", "trail"), [
    ("/models/churn/", ["Dashboard", "Models", "churn"]),
    ("/models/churn/versions/1/", ["Dashboard", "Models", "churn", "v1"]),
    ("/deployments/churn-prod/", ["Dashboard", "Deployments", "churn-prod"]),
    ("/teams/ml-search/", ["Teams", "ml-search"]),
    ("/teams/ml-search/quota/", ["Teams", "ml-search", "Quota"]),
    ("/monitoring/deployments/churn-prod/", ["Models", "churn"]),
])
def test_detail_pages_have_breadcrumbs(path, trail, team, engineer):
    make_deployment(make_model(team, "churn"), "churn-prod")
    page = _page(engineer, path)
    start = page.index('<nav aria-label="breadcrumb"')
    crumbs = page[start:page.index("</nav>", start)]
    positions = [crumbs.index(f">{label}<") for label in trail]
    assert positions == sorted(positions), crumbs
