"""``kube_fake.FakeKubeAPI`` plus ``batch/v1`` Jobs and a minimal Indexed Job controller.

NOT a cluster (see kube_fake.py). The controller does what the real one does for the fields the
batch runtime sets, as the Kubernetes documentation describes them: an Indexed Job has one pod
per completion index (labelled and annotated ``batch.kubernetes.io/job-completion-index``, env
``JOB_COMPLETION_INDEX``, owned by the Job), at most ``parallelism`` active; an index is
completed by a Succeeded pod and failed after more than ``backoffLimitPerIndex`` Failed pods;
``status.completedIndexes``/``failedIndexes`` are interval lists; the Job is Complete when
every index completed, Failed when every index is finished with some failed or when more than
``maxFailedIndexes`` failed. Deleting a Job deletes its pods (the propagation policy the
client sent is recorded in the request's query). Tests move pods along with ``set_phase``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.workers import kube_fake
from tests.workers.kube_fake import FakeKubeAPI, now

kube_fake._KINDS.setdefault("jobs", ("batch/v1", "Job"))  # so every fake has a jobs store
JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
INDEX = "batch.kubernetes.io/job-completion-index"


def intervals(indices: set[int]) -> str:
    """{0, 2, 3, 4} -> "0,2-4" (the API server's format)."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


class FakeBatchKubeAPI(FakeKubeAPI):
    def __init__(self) -> None:
        super().__init__()
        self.objects.setdefault("jobs", {})
        self._job_pod_seq = 0

    # --- test helpers ---------------------------------------------------------------------------
    def job_pods(self, job_name: str, namespace: str = "models") -> list[dict[str, Any]]:
        return [p for p in self.pods(namespace)
                if p["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name")
                == job_name]

    def pod_of(self, job_name: str, index: int) -> dict[str, Any]:
        """The newest pod of one completion index."""
        pods = [p for p in self.job_pods(job_name)
                if p["metadata"]["labels"].get(INDEX) == str(index)]
        return pods[-1]

    def set_phase(self, pod: str, phase: str, *, exit_code: int | None = None,
                  reason: str = "", node: str = "node-1", namespace: str = "models") -> None:
        """Move a pod along (Running, Succeeded, Failed) and let the controller react."""
        state: dict[str, Any] = {"running": {"startedAt": now()}}
        if phase in ("Succeeded", "Failed"):
            state = {"terminated": {"exitCode": 0 if exit_code is None else exit_code,
                                    "reason": reason or ("Completed" if phase == "Succeeded"
                                                         else "Error"),
                                    "startedAt": now(), "finishedAt": now()}}
        with self.lock:
            obj = self.objects["pods"][(namespace, pod)]
            obj["spec"]["nodeName"] = node
            obj["status"] = {"phase": phase, "podIP": "192.0.2.50", "startTime": now(),
                             "containerStatuses": [{
                                 "name": "chunk", "ready": phase == "Running",
                                 "restartCount": 0, "image": "img", "imageID": "",
                                 "state": state}]}
            self.reconcile()

    # --- the Job controller ---------------------------------------------------------------------
    def reconcile(self) -> None:
        with self.lock:
            super().reconcile()
            for (ns, _name), job in list(self.objects.get("jobs", {}).items()):
                self._sync_job(ns, job)

    def _sync_job(self, ns: str, job: dict[str, Any]) -> None:
        spec = job["spec"]
        uid = job["metadata"]["uid"]
        completions = int(spec["completions"])
        pods = [p for (pns, _), p in sorted(self.objects["pods"].items())
                if pns == ns and any(r.get("uid") == uid for r in
                                     p["metadata"].get("ownerReferences") or [])]
        by_index: dict[int, list[dict[str, Any]]] = {}
        for pod in pods:
            by_index.setdefault(int(pod["metadata"]["labels"][INDEX]), []).append(pod)
        completed, failed = set(), set()
        active = 0
        failures = 0
        for index, its in by_index.items():
            phases = [p["status"].get("phase") for p in its]
            failures += phases.count("Failed")
            if "Succeeded" in phases:
                completed.add(index)
            elif phases.count("Failed") > int(spec.get("backoffLimitPerIndex", 6)):
                failed.add(index)
            active += sum(ph not in ("Succeeded", "Failed") for ph in phases)
        status = job.setdefault("status", {})
        stopped = any(c["type"] in ("Complete", "Failed") for c in status.get("conditions", []))
        too_many = len(failed) > int(spec.get("maxFailedIndexes", completions))
        if not stopped and not too_many:
            for index in range(completions):
                if active >= int(spec.get("parallelism", 1)):
                    break
                its = by_index.get(index, [])
                busy = any(p["status"].get("phase") not in ("Succeeded", "Failed") for p in its)
                if index in completed or index in failed or busy:
                    continue
                self._new_job_pod(ns, job, index)
                active += 1
        status.update(completedIndexes=intervals(completed), succeeded=len(completed),
                      failed=failures, active=active)
        if failed:
            status["failedIndexes"] = intervals(failed)
        if not stopped:
            if too_many:
                status["conditions"] = [{"type": "Failed", "status": "True",
                                         "reason": "MaxFailedIndexesExceeded",
                                         "message": "Job has exceeded maxFailedIndexes"}]
            elif len(completed | failed) == completions:
                status["conditions"] = [
                    {"type": "Failed", "status": "True", "reason": "FailedIndexes",
                     "message": "Job has failed indexes"} if failed else
                    {"type": "Complete", "status": "True"}]

    def _new_job_pod(self, ns: str, job: dict[str, Any], index: int) -> None:
        self._job_pod_seq += 1
        name = f"{job['metadata']['name']}-{index}-{self._job_pod_seq:05d}"
        template = copy.deepcopy(job["spec"]["template"])
        meta = template["metadata"]
        labels = {**meta.get("labels", {}), INDEX: str(index),
                  "batch.kubernetes.io/job-name": job["metadata"]["name"],
                  "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
        for container in template["spec"]["containers"]:
            container.setdefault("env", []).append(
                {"name": "JOB_COMPLETION_INDEX",
                 "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{INDEX}']"}}})
        self.objects["pods"][(ns, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": {**meta.get("annotations", {}), INDEX: str(index)},
                         "uid": f"uid-{name}", "resourceVersion": str(next(self._rv)),
                         "creationTimestamp": now(),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": job["metadata"]["name"],
                                              "uid": job["metadata"]["uid"],
                                              "controller": True}]},
            "spec": template["spec"],
            "status": {"phase": "Pending",
                       "conditions": [{"type": "PodScheduled", "status": "True"}]}}

    # --- HTTP -----------------------------------------------------------------------------------
    def dispatch(self, h: Any, method: str) -> None:
        self.reconcile()  # the controllers run between any two requests
        parts = urlsplit(h.path)
        m = JOBS.match(parts.path)
        if m is None:
            return super().dispatch(h, method)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        ctype = h.headers.get("Content-Type", "")
        with self.lock:
            self.requests.append({"method": method, "path": parts.path, "query": query,
                                  "body": body, "content_type": ctype, "kind": "jobs",
                                  "authorization": h.headers.get("Authorization", "")})
            if method == "DELETE" and m.group(2):
                job = self.objects["jobs"].get((m.group(1), m.group(2)))
                if job is not None:
                    uid = job["metadata"]["uid"]
                    for key in [k for k, p in self.objects["pods"].items() if any(
                            r.get("uid") == uid for r in p["metadata"].get("ownerReferences")
                            or [])]:
                        del self.objects["pods"][key]
                    # The garbage collector: objects the Job owns go with it.
                    for key in [k for k, p in self.objects["networkpolicies"].items() if any(
                            r.get("uid") == uid for r in p["metadata"].get("ownerReferences")
                            or [])]:
                        del self.objects["networkpolicies"][key]
        return self._crud(h, method, "jobs", m.group(1), m.group(2), query, body, ctype)
