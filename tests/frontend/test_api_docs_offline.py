"""The API docs work on a machine without internet (issue 18): Swagger UI at /api/v1/docs/ and
ReDoc at /api/v1/redoc/ load every asset from the platform itself. Real Chromium: any request to
another host is aborted and fails the test, as does a console error or a failed request."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

SUMMARY = "What a client or the CLI needs to know about this platform"  # GET /api/v1/info/


def _watch(page, live_server) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"off_host": [], "errors": [], "failed": []}

    def route(r):
        if r.request.url.startswith(live_server.url + "/") or r.request.url.startswith("data:"):
            r.continue_()
        else:
            seen["off_host"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("requestfailed", lambda r: seen["failed"].append(r.url))
    page.on("response", lambda r: seen["failed"].append(f"{r.status} {r.url}")
            if r.status >= 400 else None)
    return seen


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_api_docs_render_their_operations_from_the_host_alone(live_server, page, path):
    seen = _watch(page, live_server)
    page.goto(f"{live_server.url}{path}")
    page.locator(f"text={SUMMARY} >> visible=true").first.wait_for(timeout=30000)
    assert seen == {"off_host": [], "errors": [], "failed": []}


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_every_asset_the_pages_name_is_served_by_whitenoise(path):
    """Through the middleware stack (WhiteNoise, as gunicorn serves it), not the live server's
    own static handler."""
    from django.test import Client

    page = Client().get(path).content.decode()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert len(assets) >= 2, page
    for asset in assets:
        response = Client().get(asset)
        assert response.status_code == 200, asset
        assert response.__class__.__name__ == "WhiteNoiseFileResponse", asset
