"""The Python client served by the platform itself (``core/client_dist.py`` builds the wheel):
a page with the install command, a PEP 503 "simple" index for ``pip install --index-url`` and
the wheel file. Public, no sign-in: it is the platform's own open code with no secret in it, and
a CI job or a fresh laptop installs it before it has a token (docs/security.md)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from packaging.utils import canonicalize_name

from core.client_dist import client_wheel


@require_safe
def client_page(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/client.html", {"wheel": client_wheel()})


@require_safe
def simple_index(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/client_simple.html", {
        "title": "Simple index", "links": [(f"{canonicalize_name(client_wheel().project)}/",
                                            canonicalize_name(client_wheel().project), "")]})


@require_safe
def simple_project(request: HttpRequest, project: str) -> HttpResponse:
    wheel = client_wheel()
    if canonicalize_name(project) != canonicalize_name(wheel.project):
        raise Http404(f"No project '{project}' here; this index has {wheel.project} only.")
    return render(request, "frontend/client_simple.html", {
        "title": f"Links for {wheel.project}",
        "links": [(f"../../{wheel.filename}#sha256={wheel.sha256}", wheel.filename,
                   wheel.requires_python)]})


@require_safe
def wheel_file(request: HttpRequest, filename: str) -> HttpResponse:
    wheel = client_wheel()
    if filename != wheel.filename:
        raise Http404(f"No file '{filename}'; the client is {wheel.filename}.")
    response = HttpResponse(wheel.content, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{wheel.filename}"'
    response["ETag"] = f'"{wheel.sha256}"'
    return response
