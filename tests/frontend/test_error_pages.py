"""`make run` is production-safe by default (issue 24): DEBUG is an explicit opt-in, failed
requests get the portal's own 400/403/404/500 pages (JSON under /api/), an oversized form field
is a 400 page — never Django's debug page — and static files are still served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, RequestFactory

from config import error_views
from registry.models import RegisteredModel

ROOT = Path(__file__).resolve().parents[2]
DEBUG_PAGE_MARKERS = ("Traceback", "DJANGO_SETTINGS_MODULE", "You're seeing this error because")


def _dev_debug(tmp_path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev",
                "MODELPORT_DATA_DIR": str(tmp_path / "var"), **extra})
    done = subprocess.run([sys.executable, "-c", "import django; django.setup(); "
                           "from django.conf import settings; print(settings.DEBUG)"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_make_run_settings_keep_debug_off_unless_asked_for(tmp_path):
    assert _dev_debug(tmp_path) == "False"
    assert _dev_debug(tmp_path, DJANGO_DEBUG="0") == "False"
    assert _dev_debug(tmp_path, DJANGO_DEBUG="1") == "True"


def _assert_portal_error_page(response, status: int, title: str) -> str:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert f"<title>{title} · Modelport</title>" in html
    assert 'class="error-page"' in html and "Back to the dashboard" in html
    assert not any(marker in html for marker in DEBUG_PAGE_MARKERS)
    return html


@pytest.mark.django_db
def test_an_oversized_form_field_gets_the_400_page(settings):
    too_big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = Client().post("/login/", {"username": too_big, "password": "p"})
    html = _assert_portal_error_page(response, 400, "Bad request")
    assert "larger than the 2.5 MB the server accepts" in html


@pytest.mark.django_db
def test_too_many_form_fields_get_the_400_page(settings):
    fields = {f"f{n}": "1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = Client().post("/login/", fields)
    html = _assert_portal_error_page(response, 400, "Bad request")
    assert "more than 1000 form fields" in html


@pytest.mark.django_db
def test_an_oversized_form_body_on_the_api_is_a_json_400(admin_user, team, settings):
    """On an upload route (the API's only multipart ones): a form field over Django's limit."""
    from registry.models import RegisteredModel
    from tests.fixtures import bearer_client

    RegisteredModel.objects.create(name="big-form", team=team)
    too_big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = bearer_client(admin_user).post("/api/v1/models/big-form/versions/",
                                              {"description": too_big}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert "2.5 MB" in response.json()["detail"]


@pytest.mark.django_db
def test_an_unknown_page_gets_the_404_page_with_the_portal_layout(engineer):
    client = Client()
    client.force_login(engineer)
    html = _assert_portal_error_page(client.get("/models/no-such-model/"), 404, "Page not found")
    assert "Log out" in html  # the base layout, with the signed-in navigation
    html = _assert_portal_error_page(client.get("/no/such/page/"), 404, "Page not found")


@pytest.mark.django_db
def test_a_form_without_its_csrf_token_gets_the_403_page(engineer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(engineer)
    response = client.post("/tokens/", {"name": "x", "days": "30"})
    html = _assert_portal_error_page(response, 403, "Not allowed")
    assert "Reload the page" in html


@pytest.mark.django_db
def test_the_500_page_asks_the_database_nothing(django_assert_num_queries):
    request = RequestFactory().get("/models/")
    request.request_id = "req-123"
    with django_assert_num_queries(0):
        response = error_views.server_error(request)
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in html and "req-123" in html
    assert "Log out" not in html  # no user, no context processors


def test_a_server_error_on_the_api_is_json():
    request = RequestFactory().get("/api/v1/models/")
    request.request_id = "req-456"
    response = error_views.server_error(request)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert b'"code": "server_error"' in response.content


@pytest.mark.django_db
@pytest.mark.urls("tests.frontend.failing_urls")
def test_an_exception_in_a_view_gives_the_500_page_not_a_debug_page(engineer):
    client = Client(raise_request_exception=False)
    client.force_login(engineer)
    _assert_portal_error_page(client.get("/boom/"), 500, "Something went wrong")
    api = client.get("/api/v1/boom/")
    assert api.status_code == 500 and api.json()["code"] == "server_error"


@pytest.mark.django_db
def test_the_404_page_says_what_was_not_found(engineer, team, outsider):
    RegisteredModel.objects.create(name="hidden", team=team)
    client = Client()
    client.force_login(outsider)  # not in the model's team: the same answer as for no model
    html = _assert_portal_error_page(client.get("/models/hidden/"), 404, "Page not found")
    assert "No model &#x27;hidden&#x27;." in html
    html = _assert_portal_error_page(client.get("/models/none-at-all/"), 404, "Page not found")
    assert "No model &#x27;none-at-all&#x27;." in html


def test_static_files_are_served_with_debug_off(settings):
    assert settings.DEBUG is False
    for path in ("/static/frontend/portal.css", "/static/frontend/portal.js",
                 "/static/frontend/vendor/pico.min.css"):
        response = Client().get(path)
        assert response.status_code == 200, path
