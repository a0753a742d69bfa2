"""A Content-Security-Policy on every portal and API response (issue 24): scripts and styles
from this origin only, no inline ones (a nonce is the only exception), no framing.

The templates are scanned for inline scripts, ``style=`` and ``on*=`` attributes; the browser
tests (``tests/frontend``, ``tests/e2e``) fail on any violation Chromium reports (the shared
``page`` fixture), which shows the pages work under the policy.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client

from tests.fixtures import bearer_client

from .conftest import make_deployment, make_model

ROOT = Path(__file__).resolve().parents[2]


def _directives(header: str) -> dict[str, list[str]]:
    parts = [p.strip().split() for p in header.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def _assert_strict(response) -> dict[str, list[str]]:
    policy = _directives(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    for directive in ("script-src", "style-src"):
        assert "'unsafe-inline'" not in policy[directive]
        assert "'unsafe-eval'" not in policy[directive]
        assert all(s == "'self'" or s.startswith("'nonce-") for s in policy[directive]), policy
    return policy


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/models/", "/models/churn/", "/deployments/",
                                  "/deployments/churn-prod/", "/monitoring/",
                                  "/monitoring/deployments/churn-prod/", "/tokens/", "/teams/",
                                  "/capacity/", "/audit/", "/admin/", "/admin/teams/team/",
                                  "/no-such-page/"])
def test_portal_and_console_pages_carry_the_strict_policy(path, team, admin_user):
    make_deployment(make_model(team, "churn"), "churn-prod")
    client = Client()
    client.force_login(admin_user)
    response = client.get(path)
    assert response.status_code in (200, 404)
    _assert_strict(response)


@pytest.mark.django_db
def test_login_page_and_api_responses_carry_it_too(admin_user):
    assert _assert_strict(Client().get("/login/"))
    assert _assert_strict(bearer_client(admin_user).get("/api/v1/models/"))
    assert _assert_strict(Client().get("/api/v1/info/"))
    assert _assert_strict(Client().get("/healthz"))


class _InlineCode(HTMLParser):
    """Inline <script> bodies (JSON data blocks excepted), style attributes, <style> elements and
    on*= event handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self._script = a
        if tag == "style":
            self.found.append("<style>")
        for name, _value in attrs:
            if name == "style" or re.fullmatch(r"on[a-z]+", name):
                self.found.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action") and (_value or "").startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")

    def handle_data(self, data: str) -> None:
        if self._script is not None and data.strip() and "src" not in self._script \
                and self._script.get("type") != "application/json" \
                and "nonce" not in self._script:
            self.found.append("inline <script>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def _templates() -> list[Path]:
    return sorted(p for p in ROOT.glob("*/templates/**/*.html") if ".venv" not in p.parts)


def test_no_template_has_inline_scripts_styles_or_event_handlers():
    templates = _templates()
    assert len(templates) > 40
    offenders = {}
    for path in templates:
        parser = _InlineCode()
        parser.feed(path.read_text())
        if parser.found:
            offenders[str(path.relative_to(ROOT))] = parser.found
    assert offenders == {}


def test_the_scanner_finds_what_the_policy_would_block():
    parser = _InlineCode()
    parser.feed('<p style="x"><button onclick="go()"></button><script>alert(1)</script>'
                '<script type="application/json">{"ok": 1}</script>'
                '<script src="/static/a.js"></script><style>p{}</style>')
    assert parser.found == ["<p style=…>", "<button onclick=…>", "inline <script>", "<style>"]


def test_htmx_is_configured_not_to_inject_styles_or_evaluate_code():
    base = (ROOT / "frontend" / "templates" / "frontend" / "base.html").read_text()
    assert '"includeIndicatorStyles": false' in base and '"allowEval": false' in base


@pytest.mark.django_db
def test_the_api_docs_page_runs_under_the_portals_policy_unchanged():
    response = Client().get("/api/v1/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"<script>(?!\s*</script>)", html)  # the start-up script is a file
    assert "/api/v1/docs/?script=" in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', html))  # nothing off-host
    policy = _directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'", *[s for s in policy["script-src"]
                                                if s.startswith("'nonce-")]]
    assert "'unsafe-inline'" not in policy["style-src"] + policy["script-src"]
    assert not any(s.startswith("'sha256-") for s in policy["style-src"])  # no inline style
    assert not re.search(r"<style", html) and '<html lang="en">' in html
    script = Client().get("/api/v1/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


@pytest.mark.django_db
def test_redoc_gets_inline_styles_and_a_blob_worker_but_no_inline_script():
    response = Client().get("/api/v1/redoc/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in html
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', html))
    policy = _directives(response["Content-Security-Policy"])
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["worker-src"] == ["'self'", "blob:"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in \
        policy["script-src"]
    # Elsewhere neither is allowed.
    login = _directives(Client().get("/login/")["Content-Security-Policy"])
    assert "'unsafe-inline'" not in login["style-src"] and "worker-src" not in login


@pytest.mark.django_db
def test_options_on_the_docs_pages_is_refused_not_a_500():
    assert Client().options("/api/v1/docs/").status_code == 405
    assert Client().options("/api/v1/redoc/").status_code == 405
