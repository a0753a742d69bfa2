"""Realistic demo traffic through the gateway, with the Python client (``modelport.Client``).

For ``duration_s`` seconds: single-row predictions at a rate that swings between about half and
one and a half times ``rate`` (so the requests chart is not a flat line); during the middle third
the second half of the features is shifted and widened (a drifted segment that the drift table
and the PSI alert rule pick up); a small share of malformed requests (missing a column: the
server answers 400, which the error-rate chart counts); and ground truth for a share of requests,
posted to ``/api/v1/deployments/{name}/feedback/`` once the replica has shipped its prediction
log (labels that find no logged prediction yet are retried a few seconds later).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .training import TrainedModel, sample_rows

FEEDBACK_DELAY_S = 5.0  # replicas ship their log every second; give them some slack
FEEDBACK_GIVE_UP_S = 90.0
PROGRESS_EVERY_S = 2.0
# When the first this-many well-formed requests all failed, the run stops early: the deployment
# is down, and minutes more of 503s would only hide that.
GIVE_UP_AFTER = 20

Progress = Callable[[dict[str, int], float, str], None]


@dataclass
class TrafficPlan:
    deployment: str
    duration_s: int
    model: TrainedModel
    base_url: str
    token: str
    rate: float = 4.0  # mean requests per second
    feedback_share: float = 0.3
    error_share: float = 0.02
    drift_shift: float = 2.0  # standard deviations
    seed: int | None = None


class TrafficFailed(RuntimeError):
    """Most requests failed (the deployment is down or broken): the run is a failure, and the
    message says how many failed with which status and the gateway's own words."""

    def __init__(self, message: str, stats: dict[str, int]) -> None:
        super().__init__(message)
        self.stats = stats


class _Failures:
    """Well-formed requests that did not get a prediction, by status, and the last answer."""

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.last = ""

    def add(self, status: int, code: str, message: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.last = f"{status} {code}: {message}" if code else f"{status}: {message}"

    def summary(self) -> str:
        return ", ".join(f"{n} got {status}" for status, n in sorted(self.by_status.items()))


class _Feedback:
    """Labels waiting until their predictions are in the log, then posted in batches."""

    def __init__(self, client: Any, deployment: str) -> None:
        self.client, self.deployment = client, deployment
        self.waiting: list[tuple[float, str, Any]] = []  # (sent at, request id, label)
        self.matched = 0

    def add(self, request_id: str, label: Any) -> None:
        self.waiting.append((time.monotonic(), request_id, label))

    def flush(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        due = [w for w in self.waiting if everything or now - w[0] >= FEEDBACK_DELAY_S]
        if not due:
            return
        result = self.client.request(
            "POST", f"/deployments/{self.deployment}/feedback/",
            json=[{"request_id": rid, "label": label} for _, rid, label in due])
        unmatched = set(result.get("unmatched") or [])
        self.matched += result.get("matched", 0)
        due_ids = {rid for _, rid, _ in due}
        self.waiting = [w for w in self.waiting if w[1] not in due_ids
                        or (w[1] in unmatched and now - w[0] < FEEDBACK_GIVE_UP_S)]


def _client(plan: TrafficPlan) -> Any:
    try:
        from modelport import Client  # noqa: PLC0415 - optional: the client is not in base.txt
    except ImportError as exc:  # the platform image installs only requirements/base.txt
        raise RuntimeError("Demo traffic needs the Modelport client: pip install ./client "
                           "(make run installs it).") from exc
    return Client(plan.base_url, plan.token, timeout=30)


def send(plan: TrafficPlan, progress: Progress) -> dict[str, int]:
    """Send the plan's traffic; returns counts: sent, errors, drifted, labelled.

    Raises TrafficFailed when more than half of the well-formed requests failed (or the first
    ``GIVE_UP_AFTER`` all did): a demo whose every request got a 503 is not a success."""
    from modelport.errors import ModelportError  # noqa: PLC0415 - optional (see _client)

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    rng = np.random.default_rng(plan.seed)
    columns = list(plan.model.features.columns)
    stats = {"sent": 0, "errors": 0, "drifted": 0, "labelled": 0}
    failures = _Failures()
    well_formed = 0
    path = f"/serve/{plan.deployment}/invocations"
    drift_from, drift_to = plan.duration_s / 3, 2 * plan.duration_s / 3
    with _client(plan) as client:
        feedback = _Feedback(client, plan.deployment)
        started = last_report = time.monotonic()
        while (elapsed := time.monotonic() - started) < plan.duration_s:
            drifted = drift_from <= elapsed < drift_to
            rows, labels = sample_rows(plan.model, 1, rng,
                                       shift=plan.drift_shift if drifted else 0.0)
            malformed = rng.random() < plan.error_share
            body = ({"dataframe_split": {"columns": columns[1:], "data": [rows[0][1:]]}}
                    if malformed else {"dataframe_split": {"columns": columns, "data": rows}})
            request_id = f"demo-{uuid.uuid4().hex[:20]}"
            try:
                client.request("POST", path, content=json.dumps(body), headers={
                    "Content-Type": "application/json", "X-Request-ID": request_id})
            except ModelportError as exc:
                if exc.status == 0 or exc.status in (401, 403, 404):
                    raise  # unreachable, or the token/deployment is wrong: stop, say why
                stats["errors"] += 1
                if not malformed or exc.status >= 500:
                    failures.add(exc.status, exc.code, exc.message)
            else:
                if rng.random() < plan.feedback_share:
                    feedback.add(request_id, labels[0])
            stats["sent"] += 1
            stats["drifted"] += drifted
            well_formed += not malformed
            failed = sum(failures.by_status.values())
            if well_formed >= GIVE_UP_AFTER and failed >= well_formed:
                raise TrafficFailed(
                    f"Stopped: the first {failed} requests all failed ({failures.summary()}); "
                    f"last answer {failures.last}", dict(stats))
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                feedback.flush()
                stats["labelled"] = feedback.matched
                phase = "drifted segment" if drifted else (
                    "normal traffic" if elapsed < drift_from else "back to normal")
                trouble = f", {failed} failed ({failures.summary()})" if failed else ""
                progress(dict(stats), elapsed / plan.duration_s,
                         f"{stats['sent']} requests, {phase}, {stats['labelled']} "
                         f"labelled{trouble}")
                last_report = now
            # A rate that swings over a minute, with exponential gaps (a Poisson process).
            rate = plan.rate * (1 + 0.5 * math.sin(2 * math.pi * elapsed / 60))
            time.sleep(float(rng.exponential(1 / max(rate, 0.1))))
        deadline = time.monotonic() + 3 * FEEDBACK_DELAY_S
        while feedback.waiting and time.monotonic() < deadline:
            time.sleep(FEEDBACK_DELAY_S / 2)
            feedback.flush(everything=True)
        stats["labelled"] = feedback.matched
    failed = sum(failures.by_status.values())
    if failed * 2 > max(well_formed, 1):
        raise TrafficFailed(f"{failed} of {stats['sent']} requests failed "
                            f"({failures.summary()}); last answer {failures.last}", dict(stats))
    progress(dict(stats), 1.0, f"{stats['sent']} requests sent, {stats['labelled']} labelled")
    return stats
