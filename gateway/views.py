"""The gateway's Django path: ``/serve/<deployment>/invocations`` and ``/serve/<deployment>/v2/…``
for installs that run gunicorn alone (with the edge in front, the edge answers them itself, the
same way: same caches, refusals, counters and shadowing — ``gateway.routes``, ``gateway.v2``).
"""

from __future__ import annotations

import time

import urllib3
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions

from core import replica_keys
from serving.sockets import is_unix_url

from . import consumers, routes, shadowing, v2, waking
from .ejection import Ejections
from .replica_http import ReplicaClient
from .routes import Refusal, Route
from .upstream import LOCAL, reason_of

_pool = ReplicaClient(maxsize=32)
_ejected = Ejections(float(settings.MODELPORT_GATEWAY_EJECT_S))


def _error(refusal: Refusal, v2_form: bool = False) -> JsonResponse:
    doc = (v2.refusal_body(refusal) if v2_form
           else {"detail": refusal.detail, "code": refusal.code})
    response = JsonResponse(doc, status=refusal.status)
    for key, value in refusal.headers.items():
        response[key] = value
    return response


@csrf_exempt
def invocations(request: HttpRequest, name: str) -> HttpResponse:
    """``POST /serve/<name>/invocations``."""
    if request.method != "POST":
        return _error(routes.method_not_allowed(request.method or ""))
    return _serve(request, name, None)


@csrf_exempt
def serve_v2(request: HttpRequest, name: str, path: str) -> HttpResponse:
    """``/serve/<name>/v2…`` (``path`` starts at ``/v2``)."""
    found = v2.target(path, request.method or "")
    if isinstance(found, Refusal):
        return _error(found, True)
    return _serve(request, name, found)


def _serve(request: HttpRequest, name: str, found: v2.Target | None) -> HttpResponse:
    v2_form = found is not None
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw:
        return _error(routes.not_authenticated(), v2_form)
    keyed = None
    try:
        if raw.startswith(consumers.PREFIX):  # a consumer key: /serve/ of its deployments only
            keyed = routes.consumer(raw)
        else:
            admin, teams = routes.caller(raw)
    except exceptions.AuthenticationFailed as exc:
        return _error(routes.token_refused(exc), v2_form)
    route = routes.route_for(name)
    if keyed is not None:
        refusal = routes.key_refusal(keyed, route, name)
        if refusal is not None:
            routes.maybe_flush()  # nothing proxied: the counts would wait for the next request
            return _error(refusal, v2_form)
        response = _admitted(request, name, route, found)  # type: ignore[arg-type]  # key_refusal refused None
        if keyed.bucket is not None:
            response["X-RateLimit-Limit"] = keyed.limit.decode()
            response["X-RateLimit-Remaining"] = consumers.remaining(keyed).decode()
        return response
    if route is None or not (admin or route.team_id in teams):
        return _error(routes.not_found(name), v2_form)
    return _admitted(request, name, route, found)


def _admitted(request: HttpRequest, name: str, route: Route,
              found: v2.Target | None) -> HttpResponse:
    """On to a replica for an admitted caller (token or consumer key)."""
    v2_form = found is not None
    if waking.holds(route, found is None or found.traffic):  # asleep or waking: wait for it
        woken = waking.hold(route)
        if isinstance(woken, Refusal):
            routes.refused(route, None, woken.status)
            return _error(woken, v2_form)
        route = woken
    path, pinned = "/invocations", 0
    if found is not None:
        where = v2.upstream(route, name, found)
        if isinstance(where, Refusal):
            return _error(where, True)
        path, pinned = where.path.decode(), where.revision
    return _relay(request, name, route, path, pinned, found)


def _relay(request: HttpRequest, name: str, route: Route, path: str, pinned: int,
           found: v2.Target | None) -> HttpResponse:
    """The request to a replica (at most two attempts) and its answer back."""
    v2_form = found is not None
    traffic = found is None or found.traffic
    method = "POST" if traffic else "GET"
    key = request.headers.get("X-Modelport-Route-Key")
    headers = {h: request.headers[h] for h in routes.FORWARD_HEADERS if h in request.headers}
    headers["X-Request-ID"] = getattr(request, "request_id", headers.get("X-Request-ID", ""))
    body = request.body if traffic else None
    tried: set[str] = set()
    last_error = ""
    revision = 0
    for _attempt in range(2):
        exclude = _ejected.exclude(tried)
        picked = route.pick_in(pinned, exclude) if pinned else route.pick(key, exclude)
        if picked is None and exclude is not tried:  # all left are ejected: a try beats a 503
            picked = route.pick_in(pinned, tried) if pinned else route.pick(key, tried)
        if picked is None:
            break
        revision, url = picked
        tried.add(url)
        started = time.monotonic()
        if route.keys.get(revision):
            headers[replica_keys.HEADER] = route.keys[revision].decode()
        try:
            upstream = _pool.post(
                url, path, body, headers,
                urllib3.Timeout(connect=2.0, read=settings.MODELPORT_GATEWAY_TIMEOUT_S),
                method=method)
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                urllib3.exceptions.ProtocolError) as exc:
            if not isinstance(exc, urllib3.exceptions.ProtocolError) and not is_unix_url(url):
                # its host is likely gone: stop picking it (gateway/ejection.py), and drop its
                # idle connections. Requests other threads sent there before wait their read
                # timeout: a blocked thread cannot be failed early cheaply (the edge does).
                # (NewConnectionError is a ConnectTimeoutError subclass: its cause says which)
                reason = reason_of(exc.__cause__) if isinstance(
                    exc, urllib3.exceptions.NewConnectionError) and exc.__cause__ is not None \
                    else "timeout"
                if reason != LOCAL:  # EMFILE and the like are this process's, not the replica's
                    _ejected.eject(url, reason)
                    _pool.drop_idle(url)
            last_error = f"{exc.__class__.__name__}"
            if traffic:
                routes.record(route.version[0], revision, 502,
                              (time.monotonic() - started) * 1000, answered=False)
            continue  # the replica went away: once more on another one
        except urllib3.exceptions.ReadTimeoutError:
            if traffic:
                routes.record(route.version[0], revision, 504,
                              (time.monotonic() - started) * 1000, answered=False)
                routes.refused(route, revision, 504)
            return _error(routes.timed_out(name), v2_form)
        except urllib3.exceptions.HTTPError as exc:
            last_error = f"{exc.__class__.__name__}"
            continue
        if traffic:
            routes.record(route.version[0], revision, upstream.status,
                          (time.monotonic() - started) * 1000)
        response = HttpResponse(upstream.data, status=upstream.status,
                                content_type=upstream.headers.get("Content-Type",
                                                                  "application/json"))
        response["X-Modelport-Revision"] = str(revision)
        length = upstream.headers.get(routes.HEADER_LENGTH)
        if length:
            response[routes.HEADER_LENGTH] = length
        if route.shadow is not None and traffic and not pinned:
            shadowing.mirror(route.version[0], route.shadow, body or b"", headers,
                             upstream.status, upstream.data,
                             path=path if found is None else v2.shadow_path(route))
        return response
    if not tried:
        if traffic:
            routes.refused(route, None, 503)
        return _error(routes.no_ready_replica(name), v2_form)
    if traffic:
        routes.refused(route, revision, 502)
    return _error(routes.unavailable(name, last_error), v2_form)
