"""The ASGI application: a minimal raw-ASGI router over one loaded model.

Raw ASGI (no framework) because the request path is a handful of dict lookups, one orjson
parse, the signature check, ``predict`` and one orjson dump; a framework's request/response
objects and middleware stack would cost more than the model itself for small models.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from serving import __version__, metrics, protocol, v2
from serving.batching import Batcher
from serving.config import Settings
from serving.errors import MalformedRequest, ServingError
from serving.loader import LoadedModel, load
from serving.schema import validate
from serving.shipping import MAX_REQUEST_ID, PredictionLog, Shipper

log = logging.getLogger("serving.app")

Scope = dict[str, Any]
Receive = Any
Send = Any

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
PREDICT_THREAD_AUTO_S = 0.002
KEY_HEADER = b"x-modelport-replica-key"
# Answered without the replica key: liveness and readiness probes, which reveal nothing.
PUBLIC_PATHS = frozenset({"/ping", "/health", "/ready", "/v2/health/ready", "/v2/health/live"})


class ModelServer:
    """ASGI callable. Loads the model in a background thread at startup."""

    def __init__(self, settings: Settings, *, load_in_background: bool = True) -> None:
        self.settings = settings
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        self.load_in_background = load_in_background
        self.name = settings.model_name
        self.version = settings.model_version
        self.max_body = settings.max_body_bytes
        self.key = settings.replica_key.encode() if settings.replica_key else None
        self.buffer: PredictionLog | None = None
        self.shipper: Shipper | None = None
        if settings.ingest_url:
            self.buffer = PredictionLog(settings.log_buffer_size)
        self.predict_in_thread = False
        self.batcher: Batcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._load_task: asyncio.Future[None] | None = None
        self.get_routes = {
            "/ping": self.ping,
            "/health": self.health,
            "/ready": self.ready,
            "/version": self.version_info,
            "/metrics": self.metrics,
            "/v2/health/ready": self.v2_ready,
            "/v2/health/live": self.health,
            "/v2": self.v2_server,
        }

    # --- ASGI entry point ---
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            method = scope["method"]
            if self.key is not None and path not in PUBLIC_PATHS and not self.keyed(scope):
                await self.error(send, 403, "PERMISSION_DENIED",
                                 "this model server answers only the platform; call the "
                                 "deployment through the gateway (/serve/<deployment>/…)",
                                 path.startswith("/v2"))
                return
            if method == "POST":
                if path == "/invocations":
                    await self.invocations(scope, receive, send)
                    return
                if path.startswith("/v2/models/") and path.endswith("/infer"):
                    await self.v2_infer(scope, receive, send)
                    return
            elif method == "GET":
                handler = self.get_routes.get(path)
                if handler is not None:
                    await handler(send)
                    return
                if path.startswith("/v2/models/"):
                    await self.v2_model_get(path, send)
                    return
            await self.error(send, 404, "ENDPOINT_NOT_FOUND", f"no route for {method} {path}",
                             path.startswith("/v2"))
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    def keyed(self, scope: Scope) -> bool:
        """Whether the request carries this replica's key (only the platform knows it)."""
        for key, value in scope["headers"]:
            if key == KEY_HEADER:
                return hmac.compare_digest(value, self.key or b"")
        return False

    # --- lifecycle ---
    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        if self.buffer is not None:
            s = self.settings
            self.shipper = Shipper(
                self.buffer,
                s.ingest_url,
                s.ingest_token,
                envelope={"deployment": s.deployment, "revision": s.revision, "replica": s.replica},
                batch_size=s.ship_batch_size,
                interval=s.ship_interval_s,
                max_bytes=s.ship_max_bytes,
                max_payload=s.log_max_payload_bytes,
            )
            self.shipper.start()
        if self.load_in_background:
            self._load_task = loop.run_in_executor(None, self._load)
        else:
            self._load()

    def _load(self) -> None:
        try:
            model = load(self.settings.model_dir)
        except BaseException as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load from %s", self.settings.model_dir)
            return
        mode = os.environ.get("MODELPORT_PREDICT_THREAD", "auto").lower()
        if mode == "auto":
            self.predict_in_thread = model.probe_seconds > PREDICT_THREAD_AUTO_S
        else:
            self.predict_in_thread = mode in ("1", "true", "always", "yes")
        if self.predict_in_thread:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="predict")
        batching = os.environ.get("MODELPORT_BATCHING", "auto").lower()
        if model.input_mode == "ndarray" and batching not in ("0", "off", "false", "no"):
            max_rows = int(os.environ.get("MODELPORT_MAX_BATCH_ROWS") or 1024)
            self.batcher = Batcher(model.predict, self._executor, max_rows=max_rows)
        if not self.version:
            self.version = str(model.mlmodel.get("model_uuid") or "")
        metrics.MODEL_LOAD_SECONDS.set(model.load_seconds)
        metrics.MODEL_READY.set(1)
        self.model = model
        log.warning(
            "model loaded in %.2fs: flavor=%s input=%s predict_in_thread=%s batching=%s",
            model.load_seconds, model.flavor, model.input_mode, self.predict_in_thread,
            self.batcher is not None,
        )

    async def shutdown(self) -> None:
        if self.shipper is not None:
            await self.shipper.stop(flush_timeout=2.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    # --- health and info ---
    async def ping(self, send: Send) -> None:
        # MLflow's contract: 200 once the model is loaded.
        if self.model is None:
            await self.not_ready(send)
        else:
            await respond(send, 200, b"\n", JSON)

    async def health(self, send: Send) -> None:
        await respond(send, 200, b'{"status":"alive"}', JSON)

    async def ready(self, send: Send) -> None:
        if self.model is None:
            await self.not_ready(send)
        else:
            await respond(send, 200, b'{"ready":true}', JSON)

    async def v2_ready(self, send: Send) -> None:
        if self.model is None:
            await self.not_ready(send, v2_form=True)
        else:
            await respond(send, 200, b'{"ready":true}', JSON)

    async def not_ready(self, send: Send, v2_form: bool = False) -> None:
        if self.load_error:
            message = f"model failed to load: {self.load_error}"
            await self.error(send, 503, "INTERNAL_ERROR", message, v2_form)
        else:
            await self.error(send, 503, "TEMPORARILY_UNAVAILABLE", "model is loading", v2_form)

    async def version_info(self, send: Send) -> None:
        doc: dict[str, Any] = {
            "server": "modelport-serving",
            "server_version": __version__,
            "model_name": self.name,
            "model_version": self.version,
            "ready": self.model is not None,
        }
        if self.model is not None:
            m = self.model
            doc.update(
                flavor=m.flavor,
                input_mode=m.input_mode,
                batching=self.batcher is not None,
                mlflow_version=m.mlmodel.get("mlflow_version"),
                signature=m.signature.describe(),
                **m.info,
            )
        await respond(send, 200, orjson.dumps(doc), JSON)

    async def metrics(self, send: Send) -> None:
        body, ctype = metrics.exposition()
        await respond(send, 200, body, ctype.encode())

    async def v2_server(self, send: Send) -> None:
        doc = {"name": "modelport-serving", "version": __version__,
               "extensions": v2.EXTENSIONS}
        await respond(send, 200, orjson.dumps(doc), JSON)

    async def v2_model_get(self, path: str, send: Send) -> None:
        """``/v2/models/<model>[/versions/<v>]`` (metadata) and ``…/ready``."""
        target = v2_target(path)
        if target is None or target[2] not in ("", "ready"):
            await self.error(send, 404, "ENDPOINT_NOT_FOUND", f"no route for GET {path}", True)
            return
        model, version, action = target
        if model != self.name or (version is not None and version != self.version):
            exc = v2.not_served(model, version or "", self.name, self.version)
            await self.error(send, exc.status, exc.error_code, exc.message, True)
            return
        if self.model is None:
            await self.not_ready(send, v2_form=True)
            return
        if action == "ready":
            await respond(send, 200, b'{"ready":true}', JSON)
            return
        m = self.model
        doc = v2.metadata(self.name, self.version, m.flavor, m.signature, m.mlmodel)
        await respond(send, 200, orjson.dumps(doc), JSON)

    # --- prediction ---
    async def invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.predict_request(scope, receive, send, "invocations")

    async def v2_infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = v2_target(scope["path"])
        if target is None or target[2] != "infer":
            await self.error(send, 404, "ENDPOINT_NOT_FOUND",
                             f"no route for POST {scope['path']}", True)
            return
        model, version, _ = target
        if model != self.name or (version is not None and version != self.version):
            exc = v2.not_served(model, version or "", self.name, self.version)
            await self.error(send, exc.status, exc.error_code, exc.message, True)
            return
        await self.predict_request(scope, receive, send, "v2_infer")

    async def predict_request(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str
    ) -> None:
        """Read, validate, predict, answer, then hand the request to the prediction log."""
        started = time.perf_counter()
        content_type, request_id, content_length = request_headers(scope["headers"])
        body = b""
        mime = b""
        raw: Any = None
        predictions: Any = None
        error: str | None = None
        ctype = JSON
        extra: list[tuple[bytes, bytes]] = []
        verbatim = False  # the body is JSON the log may keep as it came
        metrics.IN_FLIGHT.inc()
        try:
            model = self.model
            if model is None:
                if self.load_error:
                    raise ServingError(
                        f"model failed to load: {self.load_error}", "INTERNAL_ERROR", 503
                    )
                raise ServingError("model is loading", "TEMPORARILY_UNAVAILABLE", 503)
            body = await self.read_body(receive, content_length)
            if endpoint == "v2_infer":
                request = parse_v2_request(model, scope["headers"], body)
                raw, verbatim = request.logged, request.verbatim
                batch = validate(request.table, model.signature,
                                 request.maybe_bools and protocol.may_contain_bools(body))
                predictions = await self.predict(model, batch, None)
                metrics.ROWS.inc(batch.n_rows)
                out, json_length = v2.encode(predictions, request, self.name, self.version,
                                             request.request_id or request_id.decode())
                if json_length is not None:
                    ctype = v2.OCTET_STREAM
                    extra = [(b"inference-header-content-length", b"%d" % json_length)]
            else:
                mime = content_type.split(b";", 1)[0].strip().lower()
                table, params, raw = parse_body(mime, content_type, body)
                verbatim = mime != b"text/csv"
                batch = validate(table, model.signature, protocol.may_contain_bools(body))
                predictions = await self.predict(model, batch, params)
                metrics.ROWS.inc(batch.n_rows)
                out = protocol.encode_predictions(predictions)
            status = 200
        except ServingError as exc:
            status = exc.status
            error = exc.message
            out = (v2.error_body(exc.message) if endpoint == "v2_infer"
                   else protocol.error_body(exc.error_code, exc.message))
        except Exception as exc:
            log.exception("unexpected error")
            status = 500
            error = f"{type(exc).__name__}: {exc}"
            out = (v2.error_body(error) if endpoint == "v2_infer"
                   else protocol.error_body("INTERNAL_ERROR", error))
        finally:
            metrics.IN_FLIGHT.dec()
        headers = [(b"content-type", ctype if status == 200 else JSON),
                   (b"content-length", str(len(out)).encode()), (b"x-request-id", request_id)]
        if extra and status == 200:
            headers += extra
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})
        elapsed = time.perf_counter() - started
        metrics.observe(endpoint, status, elapsed)
        if self.buffer is not None:
            self.buffer.add(
                (
                    request_id,
                    time.time(),
                    elapsed * 1000.0,
                    status,
                    endpoint,
                    body if verbatim and raw is not None and not _lenient(body) else raw,
                    out if status == 200 and endpoint == "invocations" else predictions,
                    error,
                )
            )

    async def predict(self, model: Any, batch: Any, params: Any) -> Any:
        """The model's predictions: batched, in the executor or inline as the model was
        loaded; the model's own failure is a 500 naming it."""
        try:
            if self.batcher is not None:
                return await self.batcher.submit(batch)
            if self.predict_in_thread:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, model.predict, batch, params)
            return model.predict(batch, params)
        except Exception as exc:  # noqa: BLE001 - the model's own failure → 500
            log.warning("prediction failed: %s: %s", type(exc).__name__, exc)
            raise ServingError(
                f"prediction failed: {type(exc).__name__}: {exc}", "INTERNAL_ERROR", 500
            ) from None

    async def read_body(self, receive: Receive, content_length: int) -> bytes:
        limit = self.max_body
        if content_length > limit:
            raise ServingError(
                f"request body of {content_length} bytes exceeds the limit of {limit} bytes",
                "REQUEST_LIMIT_EXCEEDED",
                413,
            )
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise MalformedRequest("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ServingError(
                    f"request body exceeds the limit of {limit} bytes",
                    "REQUEST_LIMIT_EXCEEDED",
                    413,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def error(self, send: Send, status: int, code: str, message: str,
                    v2_form: bool = False) -> None:
        """An error in MLflow's form, or in the v2 form ``{"error": message}``."""
        body = v2.error_body(message) if v2_form else protocol.error_body(code, message)
        await respond(send, status, body, JSON)


async def respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def request_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes, int]:
    """Content-Type, the request id (ours when the client's is missing, too long or not
    ASCII) and Content-Length (-1: none or unreadable) from the ASGI headers."""
    request_id = b""
    content_type = b""
    content_length = -1
    for key, value in headers:
        if key == b"content-type":
            content_type = value
        elif key == b"x-request-id":
            request_id = value
        elif key == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = -1
    if not request_id or len(request_id) > MAX_REQUEST_ID or not request_id.isascii():
        request_id = os.urandom(16).hex().encode()
    return content_type, request_id, content_length


def parse_body(mime: bytes, content_type: bytes, body: bytes) -> tuple[Any, Any, Any]:
    """An ``/invocations`` body as (table, params, raw) by media type; 415 for a media type
    other than JSON or CSV."""
    if mime in (b"application/json", b""):
        return protocol.parse_mlflow_json(body)
    if mime == b"text/csv":
        table, raw = protocol.parse_csv(body)
        return table, None, raw
    raise ServingError(
        "unsupported Content-Type "
        f"'{content_type.decode(errors='replace')}': use application/json or text/csv",
        "BAD_REQUEST",
        415,
    )


def parse_v2_request(model: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> v2.Request:
    """A v2 inference body, JSON or with the binary tensor extension."""
    sig = model.signature
    names = sig.name_set if sig.kind == "columns" else None
    return v2.parse(body, v2.header_length(headers), names,
                    sig.tensors if sig.kind == "tensor" else None)


def _lenient(body: bytes) -> bool:
    """A body maybe read leniently (``protocol.load_json``: NaN, Infinity): not for orjson."""
    return b"NaN" in body or b"Infinity" in body


def v2_target(path: str) -> tuple[str, str | None, str] | None:
    """``/v2/models/<model>[/versions/<v>][/<action>]`` → (model, version, action)."""
    parts = path[len("/v2/models/"):].rstrip("/").split("/")
    if not parts[0]:
        return None
    model, rest = parts[0], parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    if len(rest) > 1:
        return None
    return model, version, rest[0] if rest else ""


def create_app() -> ModelServer:
    """uvicorn factory: settings come from the environment (set by ``python -m serving``)."""
    return ModelServer(Settings.from_env())
