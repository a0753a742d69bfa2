"""Prediction logs: a bounded in-memory buffer and a background task that ships it.

The request path does no logging work beyond appending one tuple of references to a deque
(``PredictionLog.add``, well under a microsecond): the request id as received, the time, the
latency, the status, the request body, the response body (or the predictions) and the error.
Nothing is decoded, built, copied or encoded there, and there is no I/O.

Everything else happens in a background asyncio task, once a second: it takes what is
buffered, turns it into the batch document and POSTs that from a worker thread, retrying with
exponential backoff. Records are built as dicts in one comprehension and encoded with one
``orjson.dumps`` call per chunk, and the payloads are never re-encoded: a JSON request body
(which parsed, so it is valid JSON) goes into the batch verbatim as an ``orjson.Fragment``, and
so do the predictions, sliced out of the ``{"predictions": …}`` response already sent. Encoding
1,000 records at once would hold the event loop for milliseconds (10-30 ms when every record
re-encoded 100 input rows), so chunks are sized to about a millisecond each and the task yields
to the loop between them. When the buffer is full the oldest record is dropped and counted;
inference never waits on shipping.

Nothing a client sends can make the ingest endpoint refuse a batch for good: a logged request
or response body over ``max_payload`` bytes, or nested deeper than ``MAX_LOG_DEPTH``, is logged
as null (the record itself — time, latency, status — still ships; counted in
``modelport_prediction_log_payloads_omitted_total``), error messages are cut to
``MAX_ERROR_CHARS``, a batch is cut to ``max_bytes`` before it is sent, and a ``413`` answer
halves it. Any other refusal (``PERMANENT_STATUSES``) drops that batch, counted, and shipping
moves on; server errors and network failures are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import random
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from serving import metrics, sockets
from serving.config import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_PAYLOAD_BYTES
from serving.protocol import jsonable

log = logging.getLogger("serving.shipping")

# (request id (str, or the header's ASCII bytes), unix time, latency ms, status, endpoint,
#  inputs, outputs, error message). ``inputs`` as bytes: a JSON document, logged verbatim (the
#  request body; it parsed, so it is valid JSON). ``outputs`` as bytes: the response body
#  ``{"predictions": …}``, logged as its predictions. Anything else is encoded with orjson.
LogRecord = tuple[str | bytes, float, float, int, str, Any, Any, str | None]
Poster = Callable[[bytes], bytes | None]  # the ingest endpoint's answer, if any

PERMANENT_STATUSES = frozenset({400, 404, 413, 422})
MAX_LOG_DEPTH = 128  # the ingest endpoint stores JSON nested up to 254 levels
MAX_ERROR_CHARS = 2000  # what the ingest endpoint keeps of an error message
MAX_REQUEST_ID = 100  # the ingest endpoint's limit
MAX_BACKOFF_S = 30.0
PREDICTIONS_PREFIX = b'{"predictions":'
CHUNK_BUDGET_S = 0.001  # event-loop time per encoding chunk before yielding
MIN_CHUNK, FIRST_CHUNK = 16, 128
RATE_REFRESH_S = 10.0  # with sampling on and nothing to ship, ask for the rate this often


def keeps(request_id: str | bytes, rate: float) -> bool:
    """Whether a request is kept at sampling ``rate``: the same hash of the request id as the
    ingest endpoint (``monitoring.ingest``), so a request is kept by both or by neither."""
    if rate >= 1.0:
        return True
    # `type() is` for speed (per request); mypy cannot narrow on it (a subclass could remain).
    key = request_id if type(request_id) is bytes else request_id.encode()  # type: ignore[union-attr]
    return zlib.crc32(key) / 4294967296.0 < rate


class PredictionLog:
    """Bounded buffer of prediction records (``LogRecord`` tuples, encoded only when shipped);
    when full, the oldest record is dropped and counted. Records the deployment's sampling rate
    (learnt from the ingest endpoint's answers) leaves out are not kept at all."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = max(1, maxlen)
        self.records: deque[LogRecord] = deque()
        self.dropped = 0
        self.sampling_rate = 1.0
        self.sampled_out = 0

    def add(self, record: LogRecord) -> None:
        if self.sampling_rate < 1.0 and not keeps(record[0], self.sampling_rate):
            self.sampled_out += 1  # published by the shipper: a Prometheus inc costs more
            return
        records = self.records
        if len(records) >= self.maxlen:
            records.popleft()
            self.dropped += 1
            metrics.LOG_DROPPED.inc()
        records.append(record)

    def put_back(self, records: Sequence[LogRecord]) -> None:
        """Return taken records to the front of the buffer (oldest first), within ``maxlen``."""
        buffered = self.records
        buffered.extendleft(reversed(records))
        while len(buffered) > self.maxlen:
            buffered.pop()  # the newest: what was taken first stays first
            self.dropped += 1
            metrics.LOG_DROPPED.inc()

    def take(self, n: int) -> list[LogRecord]:
        records = self.records
        n = min(n, len(records))
        if n == len(records):
            taken = list(records)
            records.clear()
            return taken
        return [records.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self.records)


# ".000+00:00" … ".999+00:00": the millisecond suffixes, so a timestamp is one concatenation.
_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1000))
_second: tuple[int, str] = (-1, "")


def _second_prefix(second: int) -> str:
    global _second
    if _second[0] != second:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return _second[1]


def iso_timestamp(ts: float) -> str:
    """``ts`` (Unix seconds) as ISO 8601 UTC with milliseconds, like
    ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`` (truncated, not
    rounded) at a fraction of the cost: the part up to the second is formatted once per second.
    """
    second = int(ts // 1)
    # ts - second < 1 - ulp(ts), so the index is at most 999.
    return _second_prefix(second) + _MILLIS[int((ts - second) * 1000)]


# bytes.translate table and deletions that keep a JSON text's skeleton: quotes, and brackets
# with "{" and "}" written as "[" and "]" (only the depth matters).
_SKELETON = bytes.maketrans(b"{}", b"[]")
_NOT_SKELETON = bytes(b for b in range(256) if b not in b'"[]{}')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` (valid: the server parsed it) nests arrays and objects
    more than ``limit`` levels deep, without parsing it: escapes and all but quotes and brackets
    are dropped, all C-speed byte operations; only a skeleton still long enough to be that deep
    once its leaves are gone gets its running depth, outside strings, summed (numpy). A few µs
    for a 100-row request, nothing for a small one."""
    if len(body) <= 2 * limit:  # every level costs two bytes
        return False
    if b"\\" in body:
        body = _ESCAPE.sub(b"", body)
    # Adjacent quotes close one string and open the next, or hold an empty one: dropping them
    # keeps what is inside strings inside. Then an empty pair is a leaf (one level less), or
    # sits inside a string (no level at all).
    skeleton = body.translate(_SKELETON, _NOT_SKELETON).replace(b'""', b"")
    if len(skeleton) - 2 * skeleton.count(b"[]") <= 2 * (limit - 1):
        return False
    chars = np.frombuffer(skeleton, np.uint8)
    # "[" is 0x5B, "]" 0x5D: bit 1 tells them apart (+1, -1); a quote (0x22) counts 0 ...
    steps = (chars & 2).astype(np.int32) - 1
    quotes = chars == 0x22
    steps[quotes] = 0
    # ... and so does a bracket after an odd number of quotes: inside a string.
    steps[(np.cumsum(quotes) & 1).astype(bool)] = 0
    return int(np.cumsum(steps).max()) > limit


def _payload(value: bytes, max_payload: int) -> bytes | None:
    """``value`` (a JSON body logged verbatim), or None when the ingest endpoint could not take
    it: too large, or nested too deep. Counted by reason."""
    if len(value) > max_payload:
        metrics.LOG_PAYLOADS_OMITTED.labels("too_large").inc()
        return None
    if nested_deeper_than(value, MAX_LOG_DEPTH):
        metrics.LOG_PAYLOADS_OMITTED.labels("too_deep").inc()
        return None
    return value


def record_to_dict(r: LogRecord) -> dict[str, Any]:
    """One record as the ingest endpoint's JSON object (payloads as ``orjson.Fragment``)."""
    return _dicts([r])[0]


def _dicts(records: Sequence[LogRecord],
           max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES) -> list[dict[str, Any]]:
    """The records as the ingest endpoint's JSON objects; the hot loop of shipping, so
    everything is inlined (a couple of µs a record). Bodies logged verbatim that the ingest
    endpoint could not store are left out (``_payload``)."""
    docs: list[dict[str, Any]] = []
    # Bodies this short can be neither too large nor too deep: no call for them.
    short = min(max_payload, 2 * MAX_LOG_DEPTH)
    append = docs.append
    fragment = orjson.Fragment
    millis = _MILLIS
    prefix_len = len(PREDICTIONS_PREFIX)
    second, prefix = -1, ""
    for request_id, ts, latency_ms, status, endpoint, inputs, outputs, error in records:
        if not second <= ts < second + 1:
            second = int(ts // 1)
            prefix = _second_prefix(second)
        if type(outputs) is bytes:
            if len(outputs) > short:
                outputs = _payload(outputs, max_payload)
            if outputs is not None:
                outputs = fragment(outputs[prefix_len:-1]
                                   if outputs.startswith(PREDICTIONS_PREFIX) else outputs)
        elif outputs is not None:
            outputs = jsonable(outputs)
        if type(inputs) is bytes:
            if len(inputs) > short:
                inputs = _payload(inputs, max_payload)
            if inputs is not None:
                inputs = fragment(inputs)
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS]
        append({
            # `type() is` for speed; mypy cannot narrow on it (a subclass could remain).
            "request_id": (request_id if type(request_id) is str
                           else request_id.decode()),  # type: ignore[union-attr]
            "timestamp": prefix + millis[int((ts - second) * 1000)],
            # round(x, 3) goes through a decimal string; this costs a fraction of it.
            "latency_ms": int(latency_ms * 1000.0 + 0.5) / 1000.0,
            "status": status,
            "endpoint": endpoint,
            "inputs": inputs,
            "outputs": outputs,
            "error": error,
        })
    return docs


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def encode_record(r: LogRecord, max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """One record as a JSON object. Inputs or outputs JSON cannot express are logged as their
    text (truncated) rather than failing the batch they would travel in."""
    try:
        return orjson.dumps(_dicts([r], max_payload)[0], option=_DUMPS_OPTIONS, default=str)
    except Exception:  # noqa: BLE001 - whatever the model returned, the record still ships
        return orjson.dumps(_dicts([(*r[:5], _as_text(r[5]), _as_text(r[6]), r[7])],
                                   max_payload)[0])


def _as_text(value: Any) -> Any:
    if value is None or type(value) is bytes:
        return value
    try:
        return str(value)[:10_000]
    except Exception:  # noqa: BLE001 - e.g. RecursionError: too deep even to print
        return None


def encode_records(records: Sequence[LogRecord],
                   max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """The records as the members of a JSON array, comma-separated, without the brackets: one
    ``orjson.dumps`` call for all of them (record by record only if one cannot be encoded)."""
    if not records:
        return b""
    try:
        body = orjson.dumps(_dicts(records, max_payload), option=_DUMPS_OPTIONS, default=str)
    except Exception:  # noqa: BLE001 - find and fix the record(s) at fault
        return b",".join([encode_record(r, max_payload) for r in records])
    return body[1:-1]


class ShipError(Exception):
    def __init__(self, message: str, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


class Shipper:
    """Background task: every ``interval`` seconds encode and send buffered records in batches."""

    def __init__(
        self,
        buffer: PredictionLog,
        url: str,
        token: str = "",
        envelope: dict[str, str] | None = None,
        batch_size: int = 500,
        interval: float = 1.0,
        timeout: float = 5.0,
        poster: Poster | None = None,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.buffer = buffer
        self.url = url
        self.token = token
        self.envelope = envelope or {}
        self.batch_size = max(1, batch_size)
        self.interval = interval
        self.timeout = timeout
        self.poster = poster or self._post
        # A batch body stays within max_bytes (the ingest endpoint's limit); a logged body within
        # a quarter of it, so that any one record fits in a batch with room to spare.
        self.max_bytes = max(4096, max_bytes)
        self.max_payload = max(1, min(max_payload, self.max_bytes // 4))
        self.pending: list[LogRecord] = []
        self._pending_body: bytes | None = None  # the pending batch, encoded (kept for retries)
        head = orjson.dumps(self.envelope)[:-1]  # the envelope object without its closing brace
        self._head = head + (b',"records":[' if len(head) > 1 else b'"records":[')
        self._chunk = FIRST_CHUNK
        self._sampled_out_published = 0
        self._last_answer = time.monotonic()
        self.failures = 0
        self.shipped = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle ---
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-shipper")

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Stop the loop and try to deliver what is left within ``flush_timeout`` seconds."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self.flush(), timeout=flush_timeout)
        except TimeoutError:
            left = len(self.buffer) + len(self.pending)
            log.warning("shutdown: %d log records not shipped", left)

    async def flush(self) -> None:
        """Ship everything once, no backoff (used at shutdown)."""
        while self.pending or len(self.buffer):
            if not await self.ship_batch():
                return

    async def _run(self) -> None:
        delay = self.interval
        while not self._stopping.is_set():
            await asyncio.sleep(delay)
            delay = self.interval
            metrics.LOG_BUFFERED.set(len(self.buffer))
            self._publish_sampled_out()
            # Ship what is buffered now, in full batches; records that arrive meanwhile wait
            # for the next tick. (Shipping "until the buffer is empty" never ended under steady
            # traffic: it posted a batch of a few records per request or two, which cost the
            # server ~200 µs of CPU per request.)
            batches = -(-len(self.buffer) // self.batch_size) + (1 if self.pending else 0)
            for _ in range(batches):
                try:
                    ok = await self.ship_batch()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("unexpected error while shipping prediction logs")
                    ok = False
                if not ok:
                    delay = self.backoff()
                    break
            if not batches and self.buffer.sampling_rate < 1.0 \
                    and time.monotonic() - self._last_answer > RATE_REFRESH_S:
                await self.ask_sampling_rate()

    def _publish_sampled_out(self) -> None:
        count = self.buffer.sampled_out
        if count != self._sampled_out_published:
            metrics.LOG_SAMPLED_OUT.inc(count - self._sampled_out_published)
            self._sampled_out_published = count

    def learn(self, answer: bytes | None) -> None:
        """Adopt the sampling rate the ingest endpoint answers with (``{"sampling_rate": r}``);
        anything else (an older platform, a test sink) leaves it as it is."""
        self._last_answer = time.monotonic()
        if not answer or not answer.startswith(b"{"):
            return
        try:
            doc = orjson.loads(answer)
            rate = doc.get("sampling_rate")
        except (orjson.JSONDecodeError, AttributeError):
            return
        rejected = doc.get("rejected")
        if type(rejected) is int and rejected > 0:  # records it dropped one by one
            metrics.LOG_REJECTED.inc(rejected)
            log.warning("ingest dropped %d log records it could not store: %s", rejected,
                        str(doc.get("rejections"))[:500])
        if type(rate) in (int, float) and 0.0 <= rate <= 1.0:
            self.buffer.sampling_rate = float(rate)

    async def ask_sampling_rate(self) -> None:
        """POST an empty batch, for the rate: at a rate of 0 (or a low one and little traffic)
        there is nothing else to ship, and the rate may have been raised meanwhile."""
        try:
            self.learn(await asyncio.to_thread(self.poster, self.encode([])))
        except Exception as exc:  # noqa: BLE001 - asked again at the next refresh
            self._last_answer = time.monotonic()
            log.info("asking the ingest endpoint for the sampling rate failed: %r", exc)

    def backoff(self) -> float:
        base = min(MAX_BACKOFF_S, self.interval * (2 ** min(self.failures, 10)))
        return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto

    # --- one batch ---
    async def ship_batch(self) -> bool:
        """Send the pending batch (or the next one). Returns False when it must be retried."""
        if not self.pending:
            self.pending = self.buffer.take(self.batch_size)
            self._pending_body = None
            if not self.pending:
                return True
        try:
            if self._pending_body is None:
                self._pending_body = await self._encode_within_limit()
            batch = self.pending
            answer = await asyncio.to_thread(self.poster, self._pending_body)
        except ShipError as exc:
            batch = self.pending
            self.failures += 1
            metrics.SHIP_FAILURES.inc()
            if exc.status == 413 and len(batch) > 1:
                # The ingest endpoint takes fewer records at once than we send: halve the batch
                # (from now on) and send the rest after it.
                self.batch_size = max(1, len(batch) // 2)
                self._requeue(self.batch_size)
                log.warning("ingest refused %d log records as too large; sending batches of %d",
                            len(batch), self.batch_size)
                return True
            if exc.permanent:
                log.error("ingest rejected %d log records for good: %s", len(batch), exc)
                metrics.LOG_REJECTED.inc(len(batch))
                self.pending, self._pending_body = [], None
                return True
            log.warning("shipping %d log records failed (will retry): %s", len(batch), exc)
            return False
        except Exception as exc:  # noqa: BLE001
            self.failures += 1
            metrics.SHIP_FAILURES.inc()
            log.warning("shipping %d log records failed (will retry): %r", len(self.pending), exc)
            return False
        self.learn(answer)
        self.failures = 0
        self.shipped += len(batch)
        metrics.LOG_SHIPPED.inc(len(batch))
        self.pending, self._pending_body = [], None
        return True

    def _requeue(self, keep: int) -> None:
        """Keep the first ``keep`` pending records as the batch; the others go back to the
        front of the buffer, to be sent next."""
        self.buffer.put_back(self.pending[keep:])
        self.pending, self._pending_body = self.pending[:keep], None

    async def _encode_within_limit(self) -> bytes:
        """The pending batch, encoded, cut (the rest goes back to the buffer) until its body is
        within ``max_bytes``; a record too large alone is sent without its bodies."""
        while True:
            body = await self.encode_in_chunks(self.pending)
            if len(body) <= self.max_bytes:
                return body
            if len(self.pending) > 1:
                self._requeue(len(self.pending) // 2)
                continue
            r = self.pending[0]
            metrics.LOG_PAYLOADS_OMITTED.labels("too_large").inc()
            self.pending = [(*r[:5], None, None, r[7])]
            body = self.encode(self.pending)
            if len(body) <= self.max_bytes:
                return body
            raise ShipError(f"a log record of {len(body)} bytes exceeds the batch limit of "
                            f"{self.max_bytes}", permanent=True)

    def encode(self, batch: Sequence[LogRecord]) -> bytes:
        """The batch document: the envelope plus ``records``."""
        return b"".join((self._head, encode_records(batch, self.max_payload), b"]}"))

    async def encode_in_chunks(self, batch: Sequence[LogRecord]) -> bytes:
        """``encode(batch)``, in chunks of about ``CHUNK_BUDGET_S`` of CPU each, yielding to the
        event loop between them so that requests are not held up for a whole batch."""
        parts = []
        i, n = 0, len(batch)
        while i < n:
            size = self._chunk
            started = time.perf_counter()
            parts.append(encode_records(batch[i:i + size], self.max_payload))
            took = time.perf_counter() - started
            i += size
            if took > 0:  # next chunk: about CHUNK_BUDGET_S, growing at most twofold
                fit = int(size * CHUNK_BUDGET_S / took)
                self._chunk = max(MIN_CHUNK, min(fit, 2 * size, self.batch_size))
            if i < n:
                await asyncio.sleep(0)
        return b"".join((self._head, b",".join(parts), b"]}"))

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        started = time.perf_counter()
        try:  # http(s):// or, from a replica without a network, the platform's ingest socket
            status, answer = sockets.request(self.url, "POST", body, headers, self.timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ShipError(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise ShipError(f"HTTP {status} from ingest", permanent=status in PERMANENT_STATUSES,
                            status=status)
        log.debug("shipped %d bytes in %.1f ms", len(body), (time.perf_counter() - started) * 1e3)
        return answer[:64 * 1024]
