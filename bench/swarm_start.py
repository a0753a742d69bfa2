"""Swarm vs plain Docker on one node: time from `start_replica` to `/ready`, and how fast a
killed replica serves again (Swarm restarts its task itself; plain Docker's restart policy
restarts the container) — the figures behind the service-per-replica design
(docs/beyond-one-host.md).

    .venv/bin/python bench/swarm_start.py [--runs 3] [--replicas 2]

Joins a single-node swarm (127.0.0.1) when the engine is not in one, and leaves it at the
end; services and containers are labelled modelport.test=1 and removed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from bench.container_cold_start import save_iris
from workers.runtimes.base import ReplicaSpec, wait_ready
from workers.runtimes.docker import DockerRuntime
from workers.runtimes.images import ImageBuilder
from workers.runtimes.swarm import SwarmRuntime


def start_all(rt, specs: list[ReplicaSpec]) -> tuple[float, float, list]:
    """(seconds until every create call returned, seconds until every replica is ready)."""
    t0 = time.perf_counter()
    states = [rt.start_replica(spec) for spec in specs]
    created = time.perf_counter() - t0
    for state in states:
        if not wait_ready(state.url or "", timeout=300, interval=0.05):
            raise SystemExit(f"{state.id} not ready: {rt.logs(state.id, 40)}")
    return created, time.perf_counter() - t0, states


def kill_and_wait(client, rt, spec: ReplicaSpec, state, filters: list[str]) -> float:
    """docker kill the replica's container; seconds until /ready answers again. Swarm
    restarts the task by itself. `docker kill` is a manual stop to plain Docker (its restart
    policy does not apply), so there the reconciler's replacement is timed: remove + start,
    without the wait for its next beat (MODELPORT_RECONCILE_SECONDS, 10 s by default)."""
    [container] = client.containers.list(filters={"label": filters})
    t0 = time.perf_counter()
    container.kill()
    if isinstance(rt, DockerRuntime):
        rt.remove_replica(state.id)
        state = rt.start_replica(spec)
    else:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and wait_ready(state.url, timeout=0.05):
            time.sleep(0.05)  # until the killed process stops answering
    if not wait_ready(state.url, timeout=300, interval=0.05):
        raise SystemExit(f"{state.id} did not come back: {rt.logs(state.id, 40)}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--base-image", default="modelport/base:bookworm")
    args = ap.parse_args()

    client = docker.from_env(timeout=300)
    joined = False
    if (client.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        joined = True
    reqs = [f"{n}=={md.version(n)}" for n in
            ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")]
    image = ImageBuilder(client, args.base_image).ensure_image(reqs, lambda line: None)
    labels = {"modelport.test": "1"}
    runtimes = {
        "docker": DockerRuntime(client, port_range=(23500, 23599), extra_labels=labels),
        "swarm": SwarmRuntime(client, port_range=(23600, 23699), extra_labels=labels),
    }
    results: dict[str, dict[str, list[float]]] = {
        m: {"create": [], "ready": [], "healed": []} for m in runtimes}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "model"
            save_iris(model_dir, reqs)
            for _ in range(args.runs):
                for mode, rt in runtimes.items():
                    specs = [ReplicaSpec(f"bench-{mode}", 1, i, image=image,
                                         model_dir=str(model_dir), cpu=0.5, memory_mb=768)
                             for i in range(args.replicas)]
                    created, ready, states = start_all(rt, specs)
                    filters = [f"modelport.deployment=bench-{mode}", "modelport.replica=0"]
                    healed = kill_and_wait(client, rt, specs[0], states[0], filters)
                    for state in states:
                        rt.remove_replica(state.id)
                    results[mode]["create"].append(created)
                    results[mode]["ready"].append(ready)
                    results[mode]["healed"].append(healed)
    finally:
        for service in client.services.list(filters={"label": "modelport.test=1"}):
            service.remove()
        for container in client.containers.list(all=True,
                                                filters={"label": "modelport.test=1"}):
            container.remove(force=True)
        if joined:
            client.swarm.leave(force=True)
    print(f"\n{args.replicas} replicas, {args.runs} runs, medians (min-max), seconds")
    print(f"{'runtime':<8} {'create calls':>16} {'all /ready':>18} {'killed → /ready':>18}")
    for mode, r in results.items():
        cells = [f"{statistics.median(v):.2f} ({min(v):.1f}-{max(v):.1f})"
                 for v in (r["create"], r["ready"], r["healed"])]
        print(f"{mode:<8} {cells[0]:>16} {cells[1]:>18} {cells[2]:>18}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
