"""The replicas' own Prometheus metrics, served by the platform (``GET /metrics/replicas``).

A model server counts its requests, latency and log shipping on its own ``/metrics``
(serving/metrics.py), but since replicas have no network and answer only the platform's key on
a socket file (docs/security.md), Prometheus cannot scrape them. The platform can: at scrape
time it asks every ready replica for its ``/metrics`` (a few at once, a short timeout each) and
serves the samples with ``deployment``, ``revision`` and ``replica`` labels added, plus
``modelport_replica_up`` (1: answered, 0: did not). A replica that does not answer costs at
most ``TIMEOUT_S`` and is reported down, never an error of the whole scrape.
"""

from __future__ import annotations

import logging
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
AT_ONCE = 8


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


def _scrape(target: Target) -> list[Metric] | None:
    headers = {HEADER: target.key} if target.key else {}
    try:
        status, body = sockets.request(target.url.rstrip("/") + "/metrics", headers=headers,
                                       timeout=TIMEOUT_S)
        if status != 200:
            raise OSError(f"HTTP {status}")
        return list(text_string_to_metric_families(body.decode("utf-8", "replace")))
    except (OSError, ValueError) as exc:  # http.client's errors are OSError or ValueError
        log.info("replica %s/%s/%s did not give its metrics: %s", target.deployment,
                 target.revision, target.index, exc)
        return None


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
            for family in families or []:
                into = merged.setdefault(family.name, Metric(family.name,
                                                             family.documentation,
                                                             family.type, family.unit))
                for sample in family.samples:
                    into.samples.append(sample._replace(labels={**sample.labels,
                                                                **target.labels}))
        yield up
        yield from merged.values()


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplicaCollector())
    return generate_latest(registry)
