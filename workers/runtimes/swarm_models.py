"""The model baked into a thin image layer for a multi-node swarm: a node has no share of the
platform's disk, so a bind mount of ``MODELPORT_DATA_DIR`` would name a directory that is not
there (or, worse, a stale one). As for Kubernetes (``kube_images``): ``FROM <serving image>``
plus ``COPY model/ /model/``, tagged by the digest of the serving image and the model files,
pushed to the target's registry; whichever node Swarm picks pulls it (the serving image's
layers once per node, the model's layer per model). Without a registry (one node) the runtime
keeps the read-only bind mount. No Django.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from docker.errors import ImageNotFound

from .base import LogFn, ReplicaRuntimeError
from .images import ImageBuilder, tree_digest
from .registry_push import RegistryPublisher, pull_image


class ModelImages:
    """Bake (once per serving image x model files) and push; remembers what it pushed."""

    def __init__(self, builder: ImageBuilder, publisher: RegistryPublisher) -> None:
        self.builder = builder
        self.publisher = publisher
        self._lock = threading.Lock()
        self._pushed: dict[str, str] = {}  # tag -> the reference pinned to its digest
        self._digests: dict[tuple[str, int], str] = {}

    def image_for(self, serving_image: str, model_dir: str, on_log: LogFn | None = None) -> str:
        client = self.builder.client
        try:  # by id: a serving image rebuilt under its tag re-bakes the model
            serving_id = client.images.get(serving_image).id
        except ImageNotFound:
            # A revision's registry image a restarted worker no longer has tagged: fetch it.
            pull_image(client, serving_image, on_log, auth_config=self.publisher.auth_config)
            serving_id = client.images.get(serving_image).id
        digest = hashlib.sha256(f"{serving_image}@{serving_id}\n"
                                f"{self._model_digest(model_dir)}".encode()).hexdigest()[:16]
        ref = f"{self.publisher.registry}/model:{digest}"
        with self._lock:
            if ref in self._pushed:
                return self._pushed[ref]
            try:
                client.images.get(ref)
            except ImageNotFound:
                if not Path(model_dir).is_dir():
                    raise ReplicaRuntimeError(
                        f"model directory {model_dir} does not exist") from None
                self.builder.bake_model(serving_image, model_dir, ref, on_log)
            # Pinned to the pushed manifest's digest, like the serving image: a node runs
            # exactly what was baked here.
            self._pushed[ref] = self.publisher.push(ref, on_log)
        return self._pushed[ref]

    def _model_digest(self, model_dir: str) -> str:
        path = Path(model_dir)
        # Hashing reads every file; a listing of (name, size, mtime) says whether we must.
        listing = sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                         for p in path.rglob("*") if p.is_file() for st in [p.stat()])
        key = (str(path.resolve()), hash(tuple(listing)))
        if key not in self._digests:
            self._digests[key] = tree_digest([path], path)
        return self._digests[key]

