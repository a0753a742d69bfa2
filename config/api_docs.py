"""Swagger UI at ``/api/v1/docs/`` and ReDoc at ``/api/v1/redoc/`` under the
Content-Security-Policy, both served from this site (drf-spectacular-sidecar's static files, so
the pages work without internet and no page requests anything off the host).

drf-spectacular's split view serves Swagger UI's start-up script as a file (``?script``), so no
inline script is needed; the page is the portal's own template (``frontend/api_swagger_ui.html``):
the stock one has no ``lang`` (axe's html-has-lang) and an inline ``<style>`` block, here a file,
so the page runs under the portal's policy unchanged. ReDoc uses the
portal's own template (``frontend/api_redoc.html``): the stock one loads Google Fonts and starts
ReDoc from an inline script; ours lets the standalone bundle start itself from ``<redoc>``.
ReDoc styles itself with CSS-in-JS (styled-components writes ``<style>`` elements, some when the
bundle loads, before any nonce option is read), so that route allows inline styles, as the
MLflow UI route does, and its search runs in a worker made from a ``blob:`` URL
(``worker-src``); its scripts stay ``'self'`` only. ``frontend/api_redoc.js`` keeps its one
off-host request (Redocly's logo from a CDN) from being made.

The asset location is a code setting (``SWAGGER_UI_DIST``/``REDOC_DIST`` = ``"SIDECAR"``), not
an operator's: there is no CDN code path to allow another origin.
"""

from __future__ import annotations

from csp.decorators import csp_replace
from django.utils.decorators import method_decorator
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView


class SwaggerUIView(SpectacularSwaggerSplitView):
    # The page is HTML only: OPTIONS would be rendered by its template renderer without a
    # template (a 500); GET and HEAD are all a browser needs.
    http_method_names = ["get", "head"]
    template_name = "frontend/api_swagger_ui.html"


class RedocView(SpectacularRedocView):
    http_method_names = ["get", "head"]
    template_name = "frontend/api_redoc.html"

    @extend_schema(exclude=True)
    @method_decorator(csp_replace({"style-src": ["'self'", "'unsafe-inline'"],
                                         "worker-src": ["'self'", "blob:"]}))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
