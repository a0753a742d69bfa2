"""Images for the Kubernetes runtime: the serving image built on the worker's Docker Engine and
pushed to the registry the cluster pulls from, and the model baked into a thin,
content-addressed layer on top of it (see ``kubernetes.py`` for why the model travels that way).

A mixin of ``KubernetesRuntime``: it uses the runtime's ``image_builder`` (the Docker runtime's
``ImageBuilder``), ``registry``, ``_lock`` and the caches ``_pushed`` and ``_model_digests``;
tagging and pushing is ``registry_push.RegistryPublisher``'s, shared with Swarm and several
plain Docker hosts.
No Django import.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from docker.errors import ImageNotFound

from .base import LogFn, ReplicaRuntimeError
from .images import tree_digest
from .registry_push import RegistryPublisher


class KubeImages:
    """Build, bake and push the images a revision's pods run."""

    image_builder: Any
    registry: str | None
    registry_auth: dict[str, str] | None
    _lock: threading.Lock
    _pushed: set[str]
    _model_digests: dict[tuple[str, int], str]
    _registry_publisher: RegistryPublisher | None

    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        if self.image_builder is None:
            raise ReplicaRuntimeError(
                "the kubernetes runtime builds serving images on the worker's Docker Engine: "
                "configure an image builder (and a registry the cluster pulls from)")
        local = self.image_builder.ensure_image(requirements, on_log)
        return self._publish(local, on_log)

    def model_image(self, serving_image: str, model_dir: str, on_log: LogFn | None = None) -> str:
        """The serving image plus the model at /model: built once per (serving image, model
        files) and pushed. The tag is content-addressed, so a re-run reuses it."""
        if self.image_builder is None:
            raise ReplicaRuntimeError(
                "the kubernetes runtime bakes the model into an image layer: it needs an image "
                "builder (a Docker Engine on the worker) and a registry the cluster pulls from")
        client = self.image_builder.client
        try:  # the id, not the tag: a serving image rebuilt under its tag re-bakes the model
            serving_id = client.images.get(serving_image).id
        except ImageNotFound as exc:
            raise ReplicaRuntimeError(f"serving image {serving_image} is not on the worker's "
                                      "Docker Engine (see ensure_image)") from exc
        digest = hashlib.sha256(f"{serving_image}@{serving_id}\n"
                                f"{self._model_digest(model_dir)}".encode()).hexdigest()[:16]
        repo = f"{self.registry}/model" if self.registry else "modelport/model"
        ref = f"{repo}:{digest}"
        with self._lock:
            if ref in self._pushed:
                return ref
        try:
            client.images.get(ref)
        except ImageNotFound:
            self.image_builder.bake_model(serving_image, model_dir, ref, on_log)
        return self._push(ref, on_log)

    def _model_digest(self, model_dir: str) -> str:
        path = Path(model_dir)
        # Hashing reads every file; a listing of (name, size, mtime) says whether we must.
        listing = sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                         for p in path.rglob("*") if p.is_file() for st in [p.stat()])
        key = (str(path.resolve()), hash(tuple(listing)))
        if key not in self._model_digests:
            self._model_digests[key] = tree_digest([path], path)
        return self._model_digests[key]

    def _publisher(self) -> RegistryPublisher:
        publisher: RegistryPublisher | None = getattr(self, "_registry_publisher", None)
        if publisher is None:
            publisher = RegistryPublisher(self.image_builder.client, self.registry or "",
                                          auth_config=self.registry_auth)
            self._registry_publisher = publisher
        return publisher

    def _publish(self, local_ref: str, on_log: LogFn | None) -> str:
        if not self.registry:
            return local_ref
        # Unpinned: the model layer is baked FROM this name (and pods name the model image).
        return self._publisher().publish(local_ref, on_log, pin=False)

    def _push(self, ref: str, on_log: LogFn | None) -> str:
        if not self.registry:
            return ref
        self._publisher().push(ref, on_log)
        with self._lock:
            self._pushed.add(ref)
        return ref
