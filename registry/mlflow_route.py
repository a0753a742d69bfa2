"""MLflow's tracking API and UI at the portal's ``/mlflow``, behind the platform's sign-in.

Stock clients log with ``MLFLOW_TRACKING_URI`` (``GET /api/v1/info/``) and
``MLFLOW_TRACKING_TOKEN=<Modelport API token>``, which MLflow sends as ``Authorization: Bearer``;
the portal's session opens the UI, read-only. Nothing is forwarded before ``mlflow_policy`` has
judged the request; refusals come in MLflow's error format (``{"error_code", "message"}``), so the
client raises them as they are. Requests and answers stream (artifact uploads and downloads never
sit whole in memory); only the small JSON bodies a rule reads are buffered, up to ``MAX_JSON``.

A plain Django view rather than a DRF one: bodies stream through untouched, errors keep MLflow's
format, and CSRF does not apply because a session only reads (``Caller.via_token``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions

from teams.authentication import BearerTokenAuthentication

from . import mlflow_registry_api, mlflow_upstream
from .mlflow_calls import (
    INVALID_PARAMETER_VALUE,
    UNAUTHENTICATED,
    Call,
    Caller,
    Plan,
    Refusal,
    denied,
    parse_json,
)
from .mlflow_policy import classify

log = logging.getLogger(__name__)

MAX_JSON = 16 * 1048576
CHUNK = 1048576
# Request headers MLflow needs; never the caller's credentials, cookies or origin.
PASS_REQUEST = ("content-type", "accept", "accept-encoding", "range", "if-none-match",
                "if-modified-since", "user-agent")
DROP_ANSWER = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "set-cookie", "server", "date"}


def _error(status: int, error_code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error_code": error_code, "message": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="mlflow"'
    return response


def _caller(request: HttpRequest) -> Caller:
    try:
        found = BearerTokenAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        raise Refusal(401, UNAUTHENTICATED, f"{exc.detail} Log with MLFLOW_TRACKING_TOKEN="
                                            "<a Modelport API token>.") from None
    if found is not None:
        return Caller(user=found[0], via_token=True)
    if request.user.is_authenticated:
        return Caller(user=request.user, via_token=False)
    raise Refusal(401, UNAUTHENTICATED, "Modelport's MLflow needs an API token: set "
                                        "MLFLOW_TRACKING_TOKEN=<a Modelport API token> (create "
                                        "one with POST /api/v1/tokens/ or on the Tokens page).")


def _is_page(request: HttpRequest, rest: str) -> bool:
    return (request.method == "GET" and not rest.startswith(("api/", "ajax-api/", "graphql"))
            and "text/html" in request.headers.get("Accept", ""))


def _declared_length(request: HttpRequest) -> int | None:
    declared = request.META.get("CONTENT_LENGTH")
    if not declared:
        return None
    try:
        return int(declared)
    except ValueError:
        raise Refusal(400, INVALID_PARAMETER_VALUE, "Content-Length is not a number.") from None


def _read_json(request: HttpRequest) -> bytes:
    length = _declared_length(request) or 0
    if length > MAX_JSON:
        raise Refusal(413, INVALID_PARAMETER_VALUE,
                      f"The request body is over {MAX_JSON // 1048576} MB.")
    return request.read(MAX_JSON + 1)


def _body_chunks(request: HttpRequest) -> Iterator[bytes]:
    while chunk := request.read(CHUNK):
        yield chunk


def _headers(request: HttpRequest, length: int | None) -> dict[str, str]:
    headers = {name: request.headers[name] for name in PASS_REQUEST if name in request.headers}
    headers["X-Request-ID"] = getattr(request, "request_id", "")
    if length is not None:
        headers["Content-Length"] = str(length)
    return headers


def _target(call: Call, request: HttpRequest) -> str:
    query = request.META.get("QUERY_STRING", "")
    return f"{call.upstream}?{query}" if query and not call.write else call.upstream


def _answer(call: Call, upstream: httpx.Response, body: Any) -> HttpResponseBase:
    response: HttpResponseBase = (
        StreamingHttpResponse(body, status=upstream.status_code)
        if not isinstance(body, bytes) else HttpResponse(body, status=upstream.status_code))
    for name, value in upstream.headers.multi_items():
        lowered = name.lower()
        if lowered in DROP_ANSWER or lowered.startswith("access-control-"):
            continue
        if isinstance(body, bytes) and lowered in ("content-length", "content-encoding"):
            continue
        response[name] = value
    if call.endpoint == "ui":
        # MLflow's UI styles itself with inline <style> (CSS-in-JS) and its run page's icon
        # font is a data: URL: the portal's policy (django-csp) with those two directives
        # relaxed; scripts stay 'self' only.
        # django-csp reads this attribute; the HttpResponse stubs do not declare it.
        response._csp_replace = {  # type: ignore[attr-defined]
            "style-src": ["'self'", "'unsafe-inline'"], "font-src": ["'self'", "data:"]}
    elif not call.endpoint.startswith("static-files/"):
        # Answers are served from the portal's origin: whatever MLflow returns (an artifact
        # someone logged, above all) must never run as a page there, with the portal's session.
        response["Content-Security-Policy"] = "sandbox"
        response["X-Content-Type-Options"] = "nosniff"
    return response


def _relay(upstream: httpx.Response) -> Iterator[bytes]:
    try:
        yield from upstream.iter_raw(CHUNK)
    finally:
        upstream.close()


@csrf_exempt
def mlflow_route(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    """``/mlflow/<rest>``: authenticate, judge, then forward to the tracking server."""
    try:
        try:
            caller = _caller(request)
        except Refusal:
            if _is_page(request, rest):
                return redirect_to_login(request.get_full_path())
            raise
        if not caller.member:
            raise denied(f"'{caller.name}' is in no team; MLflow is open to team members.")
        call = classify(request.method or "GET", rest, request.GET.get("path", ""))
        if call.write and request.META.get("QUERY_STRING"):
            raise Refusal(400, INVALID_PARAMETER_VALUE,
                          "Writes take their parameters in the body, not the query string.")
        if call.write and not caller.via_token:
            raise denied("The MLflow UI is read-only through Modelport: change runs and models "
                         "with the MLflow client and an API token.")
        if call.local:  # the model registry: Modelport's own
            body = _read_json(request) if call.json_body else b""
            if len(body) > MAX_JSON:
                raise Refusal(413, INVALID_PARAMETER_VALUE,
                              f"The request body is over {MAX_JSON // 1048576} MB.")
            return mlflow_registry_api.answer(request, caller, call, body)
        return _forward(request, caller, call)
    except Refusal as refusal:
        return _error(refusal.status, refusal.error_code, refusal.message)
    except mlflow_upstream.Unavailable as exc:  # a rule had to ask MLflow (a model's tags)
        log.warning("%s", exc)
        return _unavailable()


def _unavailable() -> JsonResponse:
    return _error(503, "TEMPORARILY_UNAVAILABLE", "Modelport's MLflow tracking server is not "
                                                  "answering; try again shortly.")


def _forward(request: HttpRequest, caller: Caller, call: Call) -> HttpResponseBase:
    plan = Plan()
    content: Any = None
    length: int | None = None
    if call.json_body:
        raw = _read_json(request)
        if len(raw) > MAX_JSON:
            raise Refusal(413, INVALID_PARAMETER_VALUE,
                          f"The request body is over {MAX_JSON // 1048576} MB.")
        if call.rule is not None:
            plan = call.rule(caller, parse_json(raw), call.args)
        content = json.dumps(plan.body).encode() if plan.body is not None else raw
        length = len(content)
    else:
        if call.rule is not None:  # artifact uploads (path) and GraphQL over GET (query)
            params = request.GET.dict() if call.endpoint == "graphql" else {}
            if call.endpoint == "graphql" and len(request.GET.getlist("query")) != 1:
                raise Refusal(400, INVALID_PARAMETER_VALUE, "Give exactly one GraphQL query.")
            plan = call.rule(caller, params, call.args)
        if request.method not in ("GET", "HEAD"):
            # A chunked upload has no length: it streams on chunked (the server reads to EOF).
            length = _declared_length(request)
            content = _body_chunks(request) if length != 0 else b""
    client = mlflow_upstream.client()
    try:
        upstream = client.send(client.build_request(
            request.method or "GET", _target(call, request), content=content,
            headers=_headers(request, length)), stream=True)
    except httpx.HTTPError as exc:
        log.warning("MLflow at %s did not answer: %s", mlflow_upstream.describe(), exc)
        return _unavailable()
    if plan.after is None:
        return _answer(call, upstream, _relay(upstream))
    try:
        body = upstream.read()
    finally:
        upstream.close()
    if upstream.status_code == 200:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        plan.after(answer if isinstance(answer, dict) else {})
    return _answer(call, upstream, body)
