"""Swagger UI at ``/api/v1/docs/`` under the Content-Security-Policy.

drf-spectacular's split view serves its start-up script as a file (``?script``), so no inline
script is needed. The page keeps one inline ``<style>`` block, allowed by its SHA-256 hash (read
from the installed template, so an upgrade cannot silently break it), and loads Swagger UI's
assets from ``SWAGGER_UI_DIST``: when that is a URL (a CDN), its origin is added to this route's
policy only; when the assets are served from this site, ``'self'`` already covers them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import drf_spectacular
from csp.decorators import csp_update
from django.utils.decorators import method_decorator
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView


@cache
def _inline_style_hashes() -> tuple[str, ...]:
    template = (Path(drf_spectacular.__file__).parent / "templates" / "drf_spectacular"
                / "swagger_ui.html").read_text()
    return tuple(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in re.findall(r"<style>(.*?)</style>", template, flags=re.S))


def _asset_origins() -> list[str]:
    parts = urlsplit(str(spectacular_settings.SWAGGER_UI_DIST))
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme in ("http", "https") else []


def docs_policy() -> dict[str, list[str]]:
    origins = _asset_origins()
    return {"script-src": origins, "style-src": [*origins, *_inline_style_hashes()],
            "img-src": origins}


class SwaggerUIView(SpectacularSwaggerSplitView):
    # The page is HTML only: OPTIONS would be rendered by its template renderer without a
    # template (a 500); GET and HEAD are all a browser needs.
    http_method_names = ["get", "head"]

    @extend_schema(exclude=True)
    @method_decorator(csp_update(docs_policy()))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
