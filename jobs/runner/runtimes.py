"""The ``BatchRuntime`` a job runs on: the Docker engine's (per chunk) for a Docker target;
chunks placed like replicas on a docker target with several plain Docker hosts
(``"placement": "hosts"``, ``jobs.hosts_batch``); for other targets, the runtime's own
``batch_runtime()`` (Kubernetes and Swarm add it: whole job)."""

from __future__ import annotations

from compute import targets
from compute.runtime_choice import choose_runtime, runtime_on
from workers.runtimes.base import ReplicaRuntimeError
from workers.runtimes.batch import BatchRuntime
from workers.runtimes.docker import DockerRuntime
from workers.runtimes.docker_batch import DockerBatchRuntime

from ..hosts_batch import HostsBatchRuntime
from ..models import BatchJob


def batch_runtime(job: BatchJob) -> BatchRuntime:
    target = job.target or targets.default_target()
    if target is not None and target.kind == "docker" \
            and (target.settings or {}).get("placement") == "hosts":
        return HostsBatchRuntime(target)
    kind = job.runtime or choose_runtime(target)
    base = runtime_on(target, kind)
    if isinstance(base, DockerRuntime):
        return DockerBatchRuntime(base)
    own = getattr(base, "batch_runtime", None)
    if callable(own):
        runtime = own()
        if isinstance(runtime, BatchRuntime):
            return runtime
    # Local processes are not a sandbox: model code never runs outside one.
    raise ReplicaRuntimeError(f"the {kind} runtime cannot run batch jobs: they need Docker, "
                              "Kubernetes or Swarm (a sandboxed runtime).")
