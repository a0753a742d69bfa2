"""Batch scoring jobs on Kubernetes: one Indexed ``batch/v1`` Job per submission (``whole_job``
mode of ``batch.BatchRuntime``), fenced in by a deny-all NetworkPolicy.

What is sent (``build_job``, ``build_job_policy``; plain dicts, validated by the schema tests):

* **the Job**: ``completionMode: Indexed``, ``completions`` = the chunks submitted,
  ``parallelism``, ``backoffLimitPerIndex = max_retries`` (Kubernetes retries a failed index
  itself, up to that many times, independently of the others), ``maxFailedIndexes`` =
  ``completions`` (an index that gives up does not stop the others: the chunks that can be done
  are done and kept; the platform fails the job with the failed indices' reasons and can resume
  it with only those), ``restartPolicy: Never`` (which per-index back-off requires). A submission
  may be a subset of the chunks (a resume), so completion index ``k`` runs chunk
  ``MODELPORT_CHUNKS[k]``: the container's command sets ``MODELPORT_CHUNK`` from
  ``JOB_COMPLETION_INDEX`` and that list, then runs ``python -m serving.batch`` (the same entry
  point as on Docker). The list is also the Job's annotation ``modelport.job-chunks``, which
  ``chunk_states`` reads back.
* **the pods**: hardened as the replicas' pods are (``kube_manifests``: uid/gid 10001,
  ``runAsNonRoot``, read-only root, every capability dropped, no privilege escalation,
  RuntimeDefault seccomp, no service-account token, no service links, requests = limits), a
  64 MiB memory ``/tmp``, labelled with the installation id and ``modelport.job``.
* **the model** travels as it does for replicas: baked into a thin content-addressed image
  layer on the serving image and pushed to the registry the nodes pull from
  (``kube_images.KubeImages.model_image``), so a pod needs nothing from the platform to start.
* **input and output**: a ReadWriteMany PersistentVolumeClaim in the models' namespace
  (``data_claim``) bound to the same storage as the platform's data volume
  (``platform/kubernetes/pvc.yaml``, mounted at ``data_root`` in the platform's pods). The job's
  staged input directory is mounted from it read-only at ``/job/input`` and its output directory
  read-write at ``/job/output`` (``subPath``), so the platform reads the chunks' files back
  exactly as on Docker. Why not upload the output to the platform over HTTP: the pod would need
  a network path to the platform and a credential, and a chunk has neither (the deny-all
  NetworkPolicy below); why not bake the input into an image like the model: outputs cannot
  travel that way anyway, and a dataset is not worth an image push.
* **the NetworkPolicy** selects the job's pods and allows nothing in and nothing out (not even
  DNS: a chunk reads and writes files only). It is created *before* the Job, so no pod of it
  ever runs unfenced, then made owned by the Job (``ownerReferences``), so the garbage collector
  removes it with the Job; ``remove_job`` deletes the Jobs with ``propagationPolicy:
  Foreground`` (the Job object goes only after its pods), any pod left by label, and the policy
  once no pod is left.

Reading back (``chunk_states``): per Job, ``status.completedIndexes`` / ``failedIndexes``
(interval lists such as ``"0,2-4"``), and for the other indices the Job's pods by their
``batch.kubernetes.io/job-completion-index`` label (newest pod per index: running, pending, or
failed and about to be retried). A later submission's Job wins for the chunks it covers.

Submitting: the runner passes every chunk still to do at each tick; only those no earlier Job
runs, retries or finished are submitted (the first tick: one Job for all; a resume: one for the
failed ones). ``start_chunk`` is a per-chunk bridge: a one-chunk Job per attempt with
``backoffLimitPerIndex: 0`` (the caller retries), deleted by ``remove_chunk``.

No Django import; the SDK is imported at module level (imported only with a kubernetes target).
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .base import LogFn, ReplicaRuntimeError
from .batch import BatchRuntime, BatchSpec, ChunkPhase, ChunkState
from .kube_api import KubeApi, load_client
from .kube_batch_manifests import (
    ANN_ATTEMPT,
    ANN_CHUNKS,
    ANN_JOB,
    ANN_SUBMITTED,
    CHUNK_COMMAND,
    CONTAINER_NAME,
    INDEX_LABEL,
    build_job,
    build_job_policy,
    job_object_name,
    job_selector_labels,
    parse_intervals,
    pod_chunk_state,
)
from .kube_images import KubeImages

__all__ = ["ANN_CHUNKS", "CHUNK_COMMAND", "KubeBatchRuntime", "build_job", "build_job_policy",
           "job_object_name", "parse_intervals"]


def _created(obj: Any) -> tuple[int, datetime, str]:
    submitted = (obj.metadata.annotations or {}).get(ANN_SUBMITTED, "")
    return (int(submitted) if submitted.isdigit() else 0,
            obj.metadata.creation_timestamp or datetime.min, obj.metadata.name)


class KubeBatchRuntime(KubeApi, KubeImages, BatchRuntime):
    """Runs a batch job's chunks as one Indexed Job per submission in one namespace.

    Credentials, images and pod placement as ``KubernetesRuntime`` (``for_runtime`` shares a
    kubernetes target's runtime's client and settings). ``data_claim``: the ReadWriteMany PVC in
    ``namespace`` holding the platform's data volume; ``data_root``: where the platform's pods
    mount that volume (the ``input_dir``/``output_dir`` of a spec must lie under it)."""

    mode = "whole_job"

    def __init__(self, *, namespace: str = "default", data_claim: str = "",
                 data_root: str = "/data", context: str | None = None,
                 in_cluster: bool = False, api_client: Any = None,
                 config_file: str | None = None, image_pull_secrets: Iterable[str] = (),
                 registry: str | None = None, image_builder: Any = None,
                 extra_labels: dict[str, str] | None = None,
                 node_selector: dict[str, str] | None = None,
                 tolerations: list[dict[str, Any]] | None = None,
                 service_account: str | None = None, gpu_resource: str = "nvidia.com/gpu",
                 request_timeout_s: float = 30.0, installation: str = "") -> None:
        self.namespace = namespace
        self.installation = installation
        self.data_claim = data_claim
        self.data_root = posixpath.normpath(data_root)
        self.api_client = api_client or load_client(in_cluster, config_file, context)
        self.image_pull_secrets = [s for s in image_pull_secrets if s]
        self.registry = registry.rstrip("/") if registry else None
        self.image_builder = image_builder
        self.extra_labels = dict(extra_labels or {})
        self.node_selector = dict(node_selector or {})
        self.tolerations = list(tolerations or [])
        self.service_account = service_account
        self.gpu_resource = gpu_resource
        self.request_timeout_s = request_timeout_s
        self._pushed: set[str] = set()
        self._model_digests: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)

    @classmethod
    def for_runtime(cls, runtime: Any, *, data_claim: str,
                    data_root: str = "/data") -> KubeBatchRuntime:
        """The batch side of a ``KubernetesRuntime`` (same client, namespace, installation,
        registry, image builder and pod placement)."""
        return cls(namespace=runtime.namespace, data_claim=data_claim, data_root=data_root,
                   api_client=runtime.api_client, image_pull_secrets=runtime.image_pull_secrets,
                   registry=runtime.registry, image_builder=runtime.image_builder,
                   extra_labels=runtime.extra_labels, node_selector=runtime.node_selector,
                   tolerations=runtime.tolerations, service_account=runtime.service_account,
                   gpu_resource=runtime.gpu_resource,
                   request_timeout_s=runtime.request_timeout_s,
                   installation=runtime.installation)

    # --- images -----------------------------------------------------------------------------
    def ensure_batch_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        return self.ensure_image(requirements, on_log)

    # --- submitting -------------------------------------------------------------------------
    def _claim_path(self, path: str, what: str) -> str:
        rel = posixpath.relpath(posixpath.normpath(path), self.data_root)
        if rel == "." or rel.startswith(".."):
            raise ReplicaRuntimeError(
                f"the job's {what} directory {path} is not under the shared data volume "
                f"{self.data_root} (claim {self.data_claim}): the pods could not see it")
        return rel

    def build(self, spec: BatchSpec, indices: list[int], image: str,
              attempt: int = 0) -> dict[str, Any]:
        """The Job for ``indices`` (what ``submit_job`` sends)."""
        if not self.data_claim:
            raise ReplicaRuntimeError(
                "the kubernetes target has no data_claim: batch jobs need a ReadWriteMany "
                "PersistentVolumeClaim in the models' namespace on the platform's data volume")
        return build_job(spec, image, indices, namespace=self.namespace,
                         data_claim=self.data_claim,
                         input_path=self._claim_path(spec.input_dir, "input"),
                         output_path=self._claim_path(spec.output_dir, "output"),
                         image_pull_secrets=self.image_pull_secrets,
                         extra_labels=self.extra_labels, node_selector=self.node_selector,
                         tolerations=self.tolerations, service_account=self.service_account,
                         gpu_resource=self.gpu_resource, attempt=attempt)

    def submit_job(self, spec: BatchSpec, indices: list[int]) -> None:
        """Submit the chunks among ``indices`` that no Job of the job runs, retries or finished
        (the runner passes every chunk still to do at each tick: idempotent). The first call
        creates one Job for all of them; a resume after failed chunks, one for those only;
        earlier Jobs are kept for their states."""
        self._submit(spec, indices)

    def start_chunk(self, spec: BatchSpec, index: int, attempt: int) -> ChunkState:
        """The per-chunk bridge, for a runner that drives chunks itself (``per_chunk``, as the
        jobs runner does today): a one-chunk Indexed Job per attempt with
        ``backoffLimitPerIndex: 0`` (the runner retries). Idempotent per (chunk, attempt)."""
        one = replace(spec, max_retries=0, parallelism=1)
        name = self._submit(one, [index], attempt=attempt)
        kjob = next((j for j in self._jobs(spec.job) if j.metadata.name == name), None)
        if kjob is None:
            return ChunkState(index=index, phase=ChunkPhase.PENDING, attempt=attempt)
        pods = self._pods_by_owner(spec.job).get(kjob.metadata.uid, [])
        return self._states_of(kjob, [index], pods)[index]

    def _submit(self, spec: BatchSpec, indices: list[int], *, attempt: int = 0) -> str:
        """Create the Job (and its policy first) unless it exists; its name ("": nothing to
        submit)."""
        if spec.installation != self.installation:
            spec = replace(spec, installation=self.installation)
        if not spec.image:
            raise ReplicaRuntimeError("the kubernetes runtime needs spec.image "
                                      "(see ensure_batch_image)")
        chunks = sorted({int(i) for i in indices})
        others = self._jobs(spec.job)
        if not attempt and others:  # only the chunks no earlier Job still runs or finished
            live = {i for i, st in self.chunk_states(spec.job).items() if st.phase in
                    (ChunkPhase.PENDING, ChunkPhase.RUNNING, ChunkPhase.SUCCEEDED)}
            chunks = [i for i in chunks if i not in live]
            if not chunks:
                return ""  # every one of them is submitted already
        name = job_object_name(spec.job, chunks, spec.installation, attempt)
        if any(other.metadata.name == name for other in others):
            return name  # submitted already
        image = self.model_image(spec.image, spec.model_dir) if spec.model_dir else spec.image
        body = self.build(spec, chunks, image, attempt)
        body["metadata"]["annotations"][ANN_SUBMITTED] = str(time.time_ns())
        policy = build_job_policy(spec, name, namespace=self.namespace,
                                  extra_labels=self.extra_labels)
        self._create_if_missing(self.networking.create_namespaced_network_policy, policy)
        try:
            created = self.batch.create_namespaced_job(self.namespace, body,
                                                       _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status == 409:  # another worker submitted it a moment ago
                return name
            self._delete(self.networking.delete_namespaced_network_policy, name)
            raise self._error(f"creating job {name}", exc) from exc
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name,
                 "uid": created.metadata.uid}
        try:  # the garbage collector removes the policy with the Job (after its pods)
            self.networking.patch_namespaced_network_policy(
                name, self.namespace, {"metadata": {"ownerReferences": [owner]}},
                _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"linking network policy {name} to its job", exc) from exc
        return name

    # --- reading ----------------------------------------------------------------------------
    def _jobs(self, job: str) -> list[Any]:
        selector = ",".join(f"{k}={v}" for k, v in
                            job_selector_labels(job, self.installation).items())
        try:
            items = self.batch.list_namespaced_job(self.namespace, label_selector=selector,
                                                   _request_timeout=self.request_timeout_s).items
        except ApiException as exc:
            raise self._error("listing jobs", exc) from exc
        return sorted((j for j in items
                       if (j.metadata.annotations or {}).get(ANN_JOB, job) == job), key=_created)

    def _job_pods(self, job: str) -> list[Any]:
        selector = ",".join(f"{k}={v}" for k, v in
                            job_selector_labels(job, self.installation).items())
        return [p for p in self._list_pods(selector)
                if (p.metadata.annotations or {}).get(ANN_JOB, job) == job]

    def _pods_by_owner(self, job: str) -> dict[str, list[Any]]:
        pods_by_owner: dict[str, list[Any]] = {}
        for pod in self._job_pods(job):
            for ref in pod.metadata.owner_references or []:
                if ref.kind == "Job":
                    pods_by_owner.setdefault(ref.uid, []).append(pod)
        return pods_by_owner

    def chunk_states(self, job: str) -> dict[int, ChunkState]:
        states: dict[int, ChunkState] = {}
        pods_by_owner = self._pods_by_owner(job)
        for kjob in self._jobs(job):  # oldest first: a later submission wins
            chunks = sorted(parse_intervals((kjob.metadata.annotations or {}).get(ANN_CHUNKS)))
            states.update(self._states_of(kjob, chunks, pods_by_owner.get(kjob.metadata.uid,
                                                                           [])))
        return states

    def _states_of(self, kjob: Any, chunks: list[int], pods: list[Any]) -> dict[int, ChunkState]:
        status = kjob.status
        completed = parse_intervals(status.completed_indexes if status else None)
        failed = parse_intervals(status.failed_indexes if status else None)
        gave_up = _condition(kjob, "Failed")
        newest: dict[int, Any] = {}
        tries: dict[int, int] = {}
        last_failure: dict[int, str] = {}
        for pod in sorted(pods, key=_created):
            index = (pod.metadata.labels or {}).get(INDEX_LABEL) or \
                (pod.metadata.annotations or {}).get(INDEX_LABEL, "")
            if index.isdigit():
                newest[int(index)] = pod
                if pod.status and pod.status.phase == "Failed":
                    tries[int(index)] = tries.get(int(index), 0) + 1
                    last_failure[int(index)] = pod_chunk_state(pod, 0).message or "failed"
        out: dict[int, ChunkState] = {}
        for k, chunk in enumerate(chunks):
            pod = newest.get(k)
            state = pod_chunk_state(pod, chunk) if pod is not None else \
                ChunkState(index=chunk, phase=ChunkPhase.PENDING)
            if k in completed:
                state.phase, state.message = ChunkPhase.SUCCEEDED, ""
            elif k in failed:
                state.phase = ChunkPhase.FAILED
                state.message = (f"gave up after {tries.get(k, 1)} failed attempt(s)"
                                 + (f": {state.message}" if state.message else ""))
            elif state.phase in (ChunkPhase.FAILED, ChunkPhase.SUCCEEDED):
                if gave_up is not None:  # the Job stopped: this index will not run again
                    state.phase = ChunkPhase.FAILED
                    state.message = gave_up
                else:  # the Job controller has not counted it yet, or retries it
                    retried = state.phase is ChunkPhase.FAILED
                    state.phase = ChunkPhase.PENDING if retried else ChunkPhase.RUNNING
                    if retried:
                        state.message = f"retrying: {state.message or 'failed'}"
            elif gave_up is not None:
                state.phase, state.message = ChunkPhase.FAILED, gave_up
            elif k in tries:  # a new pod after failed ones: say why it is being retried
                state.message = (f"retry {tries[k]}: the last attempt failed: "
                                 f"{last_failure[k]}; {state.message}").rstrip("; ")
            attempt = (kjob.metadata.annotations or {}).get(ANN_ATTEMPT, "")
            state.attempt = int(attempt) if attempt.isdigit() else 0
            out[chunk] = state
        return out

    def chunk_logs(self, job: str, index: int, tail: int = 200) -> str:
        state = self.chunk_states(job).get(index)
        if state is None or not state.runtime_id:
            return ""
        try:
            resp = self.core.read_namespaced_pod_log(
                state.runtime_id, self.namespace, container=CONTAINER_NAME, tail_lines=tail,
                _preload_content=False, _request_timeout=self.request_timeout_s)
        except ApiException as exc:  # 400: not started yet; 404: gone
            if exc.status in (400, 404):
                return ""
            raise self._error(f"reading logs of {state.runtime_id}", exc) from exc
        return str(resp.data.decode("utf-8", "replace"))

    # --- removing ---------------------------------------------------------------------------
    def remove_chunk(self, job: str, index: int) -> None:
        """Delete the chunk's one-chunk Jobs (``start_chunk``'s, Foreground: pods first), and
        its pods in a Job of several chunks — there the Job controller starts an unfinished
        index again (counted against its retries): only ``remove_job`` stops it for good."""
        for kjob in self._jobs(job):
            chunks = sorted(parse_intervals((kjob.metadata.annotations or {}).get(ANN_CHUNKS)))
            if chunks == [index]:
                self._delete_job(kjob.metadata.name)
            if index not in chunks:
                continue
            k = str(chunks.index(index))
            for pod in self._job_pods(job):
                owners = {r.uid for r in pod.metadata.owner_references or []}
                if kjob.metadata.uid in owners and \
                        (pod.metadata.labels or {}).get(INDEX_LABEL) == k:
                    self._delete(self.core.delete_namespaced_pod, pod.metadata.name)

    def remove_job(self, job: str) -> None:
        """Delete every Job of it (Foreground: each Job goes after its pods), any pod of it
        left (one a human orphaned), and its NetworkPolicies once no pod of it is left."""
        for kjob in self._jobs(job):
            self._delete_job(kjob.metadata.name)
        for pod in self._job_pods(job):
            if pod.metadata.deletion_timestamp is None:
                self._delete(self.core.delete_namespaced_pod, pod.metadata.name)
        if self._job_pods(job):
            return  # terminating pods still run model code: the GC, or the next call, retires
        selector = ",".join(f"{k}={v}" for k, v in
                            job_selector_labels(job, self.installation).items())
        try:
            policies = self.networking.list_namespaced_network_policy(
                self.namespace, label_selector=selector,
                _request_timeout=self.request_timeout_s).items
        except ApiException as exc:
            raise self._error("listing network policies", exc) from exc
        for policy in policies:
            self._delete(self.networking.delete_namespaced_network_policy, policy.metadata.name)

    def _delete_job(self, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, self.namespace,
                                             propagation_policy="Foreground",
                                             _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"deleting job {name}", exc) from exc


def _condition(kjob: Any, kind: str) -> str | None:
    """The message of the Job's true condition ``kind`` (None when it has none)."""
    for cond in (kjob.status.conditions if kjob.status else None) or []:
        if cond.type == kind and cond.status == "True":
            return " ".join(p for p in (cond.reason, cond.message) if p) or kind
    return None
