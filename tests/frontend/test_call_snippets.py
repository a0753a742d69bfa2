"""The portal's call snippets (issue 18): one token variable, ``MODELPORT_TOKEN``; an Open
Inference Protocol (v2) curl next to /invocations, with a body the model server parses; the
Python client's install command pointing at this platform's own wheel."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client

from core.client_dist import client_wheel
from frontend.templatetags.portal import v2_request
from serving import v2
from serving.schema import Columnar

from .conftest import EXAMPLE, make_deployment, make_model

pytestmark = pytest.mark.django_db


def _page(user, path: str) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200, path
    return html.unescape(response.content.decode())


def test_deployment_page_snippets(team, engineer, settings):
    settings.MODELPORT_BASE_URL = "https://models.example.com/"
    make_deployment(make_model(team, "churn"), "churn-prod")
    page = _page(engineer, "/deployments/churn-prod/")
    v2_curl = ("curl -X POST https://models.example.com/serve/churn-prod/v2/models/churn/infer")
    assert v2_curl in page
    assert '"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": [1.5]}' in page
    assert 'data-copy="deployment-call-v2"' in page
    assert (f"pip install https://models.example.com/client/{client_wheel().filename}"
            in page)
    assert "./client" not in page
    # One token variable: every Authorization header in the snippets reads $MODELPORT_TOKEN.
    headers = re.findall(r'Authorization: Bearer ([^"]+)"', page)
    assert len(headers) == 2 and set(headers) == {"$MODELPORT_TOKEN"}


def test_model_page_before_a_deployment_uses_placeholders(team, engineer):
    make_model(team, "churn")
    page = _page(engineer, "/models/churn/")
    assert "/serve/<deployment>/v2/models/churn/infer" in page


def test_the_v2_body_is_one_input_per_column_and_the_model_server_parses_it():
    body = v2_request(json.dumps({"dataframe_split": {
        "columns": ["age", "plan", "active", "spend"],
        "data": [[31, "pro", True, 12.5], [40, "free", False, 3]]}}))
    doc = json.loads(body)
    assert [(i["name"], i["datatype"], i["shape"]) for i in doc["inputs"]] == [
        ("age", "INT64", [2]), ("plan", "BYTES", [2]), ("active", "BOOL", [2]),
        ("spend", "FP64", [2])]
    parsed = v2.parse(body.encode(), None, {"age", "plan", "active", "spend"})
    assert isinstance(parsed.table, Columnar)
    assert set(parsed.table.data) == {"age", "plan", "active", "spend"}
    assert v2.parse(v2_request(EXAMPLE).encode(), None, {"x1", "x2"}).table.data


@pytest.mark.parametrize("example", [None, "", "not json", '{"instances": [[1, 2]]}',
                                     '{"dataframe_split": {"columns": ["a"], "data": [[null]]}}',
                                     '{"dataframe_split": {"columns": ["a"], "data": []}}'])
def test_examples_without_a_v2_form_give_an_empty_body(example):
    assert v2_request(example) == ""


def test_the_tokens_page_uses_the_same_variable(engineer):
    page = _page(engineer, "/tokens/")
    assert "Bearer $MODELPORT_TOKEN" in page and "$TOKEN" not in page
    client = Client()
    client.force_login(engineer)
    created = html.unescape(client.post("/tokens/", {"name": "laptop", "expires_in_days": 30},
                                        follow=True).content.decode())
    assert "export MODELPORT_TOKEN=" in created
    assert 'curl -H "Authorization: Bearer $MODELPORT_TOKEN"' in created
