"""What a client sees when a request fails outside a view's own error handling.

API paths (``/api/``, ``/serve/``) always get ``{"detail", "code"}`` JSON, never HTML; portal
pages get the portal's own 400/403/404/500 pages (``frontend/templates/4xx.html``), never
Django's debug page — DEBUG is an explicit opt-in (``DJANGO_DEBUG=1``).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader

log = logging.getLogger(__name__)

_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Page not found",
           500: "Something went wrong"}
_CODES = {400: "bad_request", 403: "permission_denied", 404: "not_found", 500: "server_error"}
_DEFAULT_DETAIL = {
    400: "The request could not be understood.",
    403: "You do not have permission to do this.",
    404: "Not found.",
    500: "Internal error: the request failed on the server. It was logged; try again or tell "
         "a platform admin, quoting the request id.",
}


def is_api_path(path: str) -> bool:
    return path.startswith(("/api/", "/serve/"))


def _message(exception: BaseException | None) -> str:
    """A plain message carried by the exception (``Http404("No model 'x'")``); URL resolver
    404s carry a dict of tried patterns, which is not shown."""
    if exception is None:
        return ""
    if isinstance(exception, RequestDataTooBig):
        limit_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024)
        return (f"The request body is larger than the {limit_mb:.1f} MB the server accepts for "
                "form fields; upload large content as a file.")
    if isinstance(exception, TooManyFieldsSent):
        return (f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form "
                "fields.")
    args = getattr(exception, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return ""


def _respond(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    request_id = getattr(request, "request_id", "")
    if is_api_path(request.path):
        return JsonResponse({"detail": detail or _DEFAULT_DETAIL[status], "code": _CODES[status]},
                            status=status)
    context = {"status": status, "title": _TITLES[status], "detail": detail,
               "request_id": request_id}
    return render(request, f"{status}.html", context, status=status)


def bad_request(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return _respond(request, 400, _message(exception))


def permission_denied(request: HttpRequest,
                      exception: BaseException | None = None) -> HttpResponse:
    return _respond(request, 403, _message(exception))


def page_not_found(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return _respond(request, 404, _message(exception))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """The portal's 403 page instead of Django's: a form older than the session (or sent
    without the page's cookie) is the usual cause, and reloading the page fixes it."""
    return _respond(request, 403, "The form expired or was sent without its security token "
                                  "(CSRF). Reload the page and submit it again.")


def server_error(request: HttpRequest) -> HttpResponse:
    """Rendered without context processors: the database that failed must not be asked for
    the page that reports the failure."""
    request_id = getattr(request, "request_id", "")
    if is_api_path(request.path):
        return JsonResponse({"detail": _DEFAULT_DETAIL[500], "code": _CODES[500],
                             "request_id": request_id}, status=500)
    body = loader.get_template("500.html").render({
        "status": 500, "title": _TITLES[500], "request_id": request_id})
    return HttpResponse(body, status=500)
