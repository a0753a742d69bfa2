"""The replicas' own Prometheus metrics, served by the platform (``GET /metrics/replicas``).

A model server counts its requests, latency and log shipping on its own ``/metrics``
(serving/metrics.py), but since replicas have no network and answer only the platform's key on
a socket file (docs/security.md), Prometheus cannot scrape them. The platform can: at scrape
time it asks every ready replica for its ``/metrics`` (a few at once, a short timeout each) and
serves the samples with ``deployment``, ``revision`` and ``replica`` labels added, plus
``modelport_replica_up`` (1: answered, 0: did not). A replica that does not answer costs at
most ``TIMEOUT_S`` and is reported down, never an error of the whole scrape.

A replica runs model code, so what it answers is not trusted: only the model server's metric
families pass (``SERVER_PREFIXES``: never the platform's own names, which a hostile model could
otherwise inflate on the dashboard), the labels that say whose samples they are are the
platform's, and a body is read up to ``MAX_BYTES`` within ``DEADLINE_S`` (a replica that sends
more, or drips, is reported down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from core.replica_keys import HEADER
from deployments.models import Replica, Revision
from serving import sockets

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
DEADLINE_S = 4.0
MAX_BYTES = 1 << 20
AT_ONCE = 8
# serving/metrics.py's families; the platform's own (ingest, rollup, alerts, gateway) never.
SERVER_PREFIXES = ("modelport_request", "modelport_prediction", "modelport_model_")


@dataclass(frozen=True)
class Target:
    deployment: str
    revision: int
    index: int
    url: str
    key: str

    @property
    def labels(self) -> dict[str, str]:
        return {"deployment": self.deployment, "revision": str(self.revision),
                "replica": str(self.index)}


def targets() -> list[Target]:
    """Every ready replica with an address, and the key its revision demands."""
    rows = list(Replica.objects.filter(ready=True).exclude(url="")
                .values_list("deployment_id", "deployment__name", "revision", "index", "url"))
    keys = {(d, n): k for d, n, k in Revision.objects.filter(
        deployment_id__in={r[0] for r in rows}).values_list("deployment_id", "number",
                                                            "replica_key")}
    return [Target(name, revision, index, url, keys.get((dep, revision), ""))
            for dep, name, revision, index, url in rows]


def _read(target: Target) -> bytes:
    """The body of the replica's ``/metrics``: at most ``MAX_BYTES``, within ``DEADLINE_S``."""
    connection, path = sockets.http_connection(target.url.rstrip("/") + "/metrics", TIMEOUT_S)
    deadline = time.monotonic() + DEADLINE_S
    try:
        connection.request("GET", path, headers={HEADER: target.key} if target.key else {})
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        body = b""
        while chunk := response.read1(65536):
            body += chunk
            if len(body) > MAX_BYTES:
                raise OSError(f"more than {MAX_BYTES} bytes")
            if time.monotonic() > deadline:
                raise OSError(f"not done within {DEADLINE_S:g} s")
        return body
    finally:
        connection.close()


def _scrape(target: Target) -> list[Metric] | None:
    try:
        families = text_string_to_metric_families(_read(target).decode("utf-8", "replace"))
        return [f for f in families if f.name.startswith(SERVER_PREFIXES)]
    except (OSError, ValueError) as exc:  # http.client's errors are OSError or ValueError
        log.info("replica %s/%s/%s did not give its metrics: %s", target.deployment,
                 target.revision, target.index, exc)
        return None


def _owned(family: Metric, target: Target, seen: set[tuple]) -> Iterable:
    """``family``'s samples as the platform serves them: its labels saying whose they are,
    no timestamp or exemplar of the replica's (this scrape's time is the sample's), each series
    once (a repeated series would be Prometheus's duplicate-sample error)."""
    for sample in family.samples:
        labels = {**sample.labels, **target.labels}
        series = (sample.name, tuple(sorted(labels.items())))
        if series in seen:
            continue
        seen.add(series)
        yield sample._replace(labels=labels, timestamp=None, exemplar=None)


class ReplicaCollector:
    """Collects the replicas' metrics at scrape time."""

    def collect(self) -> Iterable[Metric]:
        found = targets()
        with ThreadPoolExecutor(max_workers=max(1, min(AT_ONCE, len(found)))) as pool:
            results = list(pool.map(_scrape, found))
        up = GaugeMetricFamily("modelport_replica_up",
                               "1 when a ready replica gave its metrics to this scrape",
                               labels=["deployment", "revision", "replica"])
        merged: dict[str, Metric] = {}
        for target, families in zip(found, results, strict=True):
            up.add_metric(list(target.labels.values()), 0 if families is None else 1)
            seen: set[tuple] = set()
            for family in families or []:
                into = merged.setdefault(family.name, Metric(family.name,
                                                             family.documentation,
                                                             family.type, family.unit))
                into.samples.extend(_owned(family, target, seen))
        yield up
        yield from merged.values()


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplicaCollector())
    return generate_latest(registry)
