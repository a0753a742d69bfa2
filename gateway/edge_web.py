"""The edge's other half: everything that is not ``/serve/`` streamed to the Django web server
(gunicorn) on its unix socket or internal address, unchanged (``gateway.edge``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from django.conf import settings
from yarl import URL

if TYPE_CHECKING:
    from .edge import Edge, Receive, Scope, Send

log = logging.getLogger("modelport.edge")
JSON = [(b"content-type", b"application/json")]
# Not passed on either way (RFC 9110 §7.6.1), plus Expect: the edge already answered it.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"expect", b"proxy-connection"})
SKIP_ANSWER = HOP_BY_HOP | {b"date"}  # uvicorn writes its own Date


async def forward(edge: Edge, scope: Scope, receive: Receive, send: Send) -> None:
    """Stream the request to Django and its answer back. The client's address goes along
    as the last ``X-Forwarded-For`` entry (``core.middleware`` trusts it only from a
    unix-socket peer, i.e. this process)."""
    headers: list[tuple[str, str]] = []
    forwarded_for = ""
    chunked = False
    declared = 0
    for key, value in scope["headers"]:
        if key == b"x-forwarded-for":
            forwarded_for = value.decode("latin-1")
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key not in HOP_BY_HOP:
            headers.append((key.decode("latin-1"), value.decode("latin-1")))
            if key == b"content-length" and value.isdigit():
                declared = int(value)
    # No request to Django may be larger than an upload (MODELPORT_MAX_UPLOAD_MB, plus the
    # multipart envelope core.uploads allows): refused here before any of it is read,
    # or once a chunked body, which must be buffered for WSGI, grows past it.
    limit = (settings.MODELPORT_MAX_UPLOAD_MB + 1) * 1048576

    async def too_large() -> None:
        body = orjson.dumps({"detail": "Request body over the upload limit of "
                                       f"{settings.MODELPORT_MAX_UPLOAD_MB} MB "
                                       "(MODELPORT_MAX_UPLOAD_MB).", "code": "too_large"})
        await send({"type": "http.response.start", "status": 413, "headers": [
            *JSON, (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    if declared > limit:
        await too_large()
        return
    client = scope.get("client")
    if client:
        forwarded_for = f"{forwarded_for}, {client[0]}" if forwarded_for else client[0]
    if forwarded_for:
        headers.append(("X-Forwarded-For", forwarded_for))
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    data: Any
    if chunked:  # WSGI needs a length: read the body first, up to the limit
        parts = []
        size = 0
        while True:
            message = await receive()
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                await too_large()
                return
            parts.append(part)
            if not message.get("more_body"):
                break
        data = b"".join(parts)
    else:
        data = _stream(receive) if scope["method"] not in ("GET", "HEAD") else None
    try:
        async with edge.web.request(  # type: ignore[union-attr]  # opened at startup
                scope["method"], URL(edge.web_base + target.decode("latin-1"), encoded=True),
                headers=headers, data=data, allow_redirects=False) as upstream:
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": [(k, v) for k, v in upstream.raw_headers
                                    if k.lower() not in SKIP_ANSWER]})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
            FileNotFoundError) as exc:
        log.warning("web server not answering: %s", exc)
        body = orjson.dumps({"detail": "Modelport's web server is not answering; try "
                                       "again in a few seconds.", "code": "web_unavailable"})
        await send({"type": "http.response.start", "status": 502, "headers": [
            *JSON, (b"content-length", str(len(body)).encode()), (b"retry-after", b"2")]})
        await send({"type": "http.response.body", "body": body})


async def _stream(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return
