"""Shadow traffic: the gateway mirrors a share of requests to a shadow revision.

The caller's answer always comes from the stable revision and is returned before the mirror is
even sent: ``mirror`` only queues the request (never blocks; when the shadow falls more than
``MAX_PENDING`` requests behind, the request is counted as dropped instead). A small thread pool
per gateway process sends the copies, times them, compares the shadow's predictions with the
stable answer and writes one ``ShadowSample`` per revision at most once a second.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import urllib3
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import replica_keys
from deployments.models import ShadowSample

from .replica_http import ReplicaClient

log = logging.getLogger(__name__)

WORKERS = 4
MAX_PENDING = 64
FLUSH_S = 1.0
SHADOW_HEADER = "X-Modelport-Shadow"
_V2_NUMPY = {"BOOL": "?", "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
             "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2",
             "FP32": "<f4", "FP64": "<f8"}

_pool = ReplicaClient(maxsize=WORKERS)
_lock = threading.Lock()
_idle = threading.Condition(_lock)
_executor: list[ThreadPoolExecutor] = []
_pending = [0]
_last_flush = [time.monotonic()]
_flush_lock = threading.Lock()  # one writer at a time: drain() returns after a running flush


@dataclass(frozen=True)
class Shadow:
    """Where and how much to mirror: the shadow revision's ready replicas."""

    revision: int
    percent: int
    tolerance: float
    urls: tuple[str, ...]
    key: str = ""  # the shadow revision's replica key


@dataclass
class _Counts:
    requests: int = 0
    errors: int = 0
    compared: int = 0
    agreed: int = 0
    dropped: int = 0
    times: list[float] = field(default_factory=list)


_stats: dict[tuple[int, int], _Counts] = {}  # (deployment pk, shadow revision) -> counts


def mirror(deployment_id: int, shadow: Shadow, body: bytes, headers: dict[str, str],
           stable_status: int, stable_body: bytes, path: str = "/invocations") -> bool:
    """Queue a copy of one request for the shadow (its share of requests only); True if
    queued. Returns at once. ``path``: the replica path (``/invocations`` or a v2 infer)."""
    if shadow.percent < 100 and random.randrange(100) >= shadow.percent:  # noqa: S311
        return False
    with _lock:
        if _pending[0] >= MAX_PENDING:
            _stats.setdefault((deployment_id, shadow.revision), _Counts()).dropped += 1
            return False
        _pending[0] += 1
        if not _executor:
            _executor.append(ThreadPoolExecutor(max_workers=WORKERS,
                                                thread_name_prefix="modelport-shadow"))
    _executor[0].submit(_call, deployment_id, shadow, body, dict(headers), stable_status,
                        stable_body, path)
    return True


def _call(deployment_id: int, shadow: Shadow, body: bytes, headers: dict[str, str],
          stable_status: int, stable_body: bytes, path: str) -> None:
    try:
        url = random.choice(shadow.urls)  # noqa: S311
        headers[SHADOW_HEADER] = "1"
        if shadow.key:
            headers[replica_keys.HEADER] = shadow.key
        else:
            headers.pop(replica_keys.HEADER, None)
        started = time.monotonic()
        try:
            answer = _pool.post(
                url, path, body, headers,
                urllib3.Timeout(connect=2.0, read=settings.MODELPORT_GATEWAY_TIMEOUT_S))
            status, data = answer.status, answer.data
        except urllib3.exceptions.HTTPError:
            status, data = 0, b""
        elapsed_ms = (time.monotonic() - started) * 1000
        compared = stable_status == 200 and 0 < status < 500
        agreed = compared and status == 200 and (
            agree(stable_body, data, shadow.tolerance) if path == "/invocations"
            else agree_v2(stable_body, data, shadow.tolerance))
        with _lock:
            counts = _stats.setdefault((deployment_id, shadow.revision), _Counts())
            counts.requests += 1
            counts.errors += status == 0 or status >= 500
            counts.compared += compared
            counts.agreed += agreed
            if len(counts.times) < 5000:
                counts.times.append(elapsed_ms)
    except Exception:  # a mirror must never take the pool down
        log.warning("shadow request failed", exc_info=True)
    finally:
        with _lock:
            _pending[0] -= 1
            _idle.notify_all()
    if time.monotonic() - _last_flush[0] >= FLUSH_S:
        flush()
        connection.close()  # this pool thread is not a request: do not keep a connection open


def agree(stable: bytes, shadow: bytes, tolerance: float) -> bool:
    """Whether two scoring answers carry the same predictions (numbers within ``tolerance``,
    absolute or relative)."""
    if stable == shadow:
        return True
    try:
        a, b = json.loads(stable), json.loads(shadow)
    except ValueError:
        return False
    if isinstance(a, dict) and isinstance(b, dict) and "predictions" in a and "predictions" in b:
        a, b = a["predictions"], b["predictions"]
    return _same(a, b, tolerance)


def v2_outputs(body: bytes) -> dict[str, Any] | None:
    """An Open Inference Protocol answer's outputs by name (binary outputs decoded), None when
    ``body`` is not one."""
    try:
        doc, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        return None
    found: dict[str, Any] = {}
    offset = end  # latin-1: one character per byte
    for out in doc["outputs"]:
        if not isinstance(out, dict):
            return None
        size = (out.get("parameters") or {}).get("binary_data_size")
        if not isinstance(size, int):
            found[str(out.get("name"))] = out.get("data")
            continue
        raw = body[offset:offset + size]
        offset += size
        dtype = _V2_NUMPY.get(str(out.get("datatype")))
        found[str(out.get("name"))] = raw if dtype is None else np.frombuffer(raw, dtype).tolist()
    return found


def agree_v2(stable: bytes, shadow: bytes, tolerance: float) -> bool:
    """Whether two v2 answers carry the same outputs (ids and versions aside)."""
    a, b = v2_outputs(stable), v2_outputs(shadow)
    return (a is not None and b is not None and a.keys() == b.keys()
            and all(_same(a[k], b[k], tolerance) for k in a))


def _same(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b,
                                                                                 strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tolerance) for k in a)
    return a == b


def _percentile(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, int(q * len(times)))] if times else 0.0


def flush() -> None:
    """Write what was counted since the last flush (one INSERT)."""
    with _flush_lock:
        with _lock:
            taken = dict(_stats)
            _stats.clear()
            _last_flush[0] = time.monotonic()
        if not taken:
            return
        now = timezone.now()
        rows = []
        for (deployment_id, revision), c in taken.items():
            times = sorted(c.times)
            rows.append(ShadowSample(
                deployment_id=deployment_id, revision=revision, at=now, requests=c.requests,
                errors=c.errors, compared=c.compared, agreed=c.agreed, dropped=c.dropped,
                p50_ms=_percentile(times, 0.5), p95_ms=_percentile(times, 0.95)))
        try:
            ShadowSample.objects.bulk_create(rows)
        except Exception:
            log.warning("could not store shadow samples", exc_info=True)


def drain(timeout: float = 30.0) -> bool:
    """Wait until every queued mirror was sent, then write the counts (tests, shutdown)."""
    deadline = time.monotonic() + timeout
    with _lock:
        while _pending[0] > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _idle.wait(left)
    flush()
    return True


def reset() -> None:
    with _lock:
        _stats.clear()
