"""Serving images through a registry the platform's operators run: built on the worker's own
Docker Engine, pushed there, pulled by every engine that runs a replica (the hosts of several
plain Docker hosts, the nodes of a Swarm, a Kubernetes cluster). One mechanism for every
multi-host target: layers are shared between images and pulled once per host, and the hosts
need no way out to a package index — the platform builds, hosts only pull.

``RegistryPublisher`` tags a local image as ``<registry>/<name>:<tag>`` and pushes it;
``pull_image`` fetches a reference onto an engine. Progress goes to ``on_log`` line by line
(one line per layer state change, not one per progress tick). Credentials: the Docker SDK sends
what ``docker login`` stored in the worker's Docker config (``~/.docker/config.json`` or
``$DOCKER_CONFIG``, credential helpers included) by itself; ``auth_config`` (a dict with
``username`` and ``password``) overrides it. No Django import.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any

from docker.errors import ImageNotFound

from .base import LogFn, ReplicaRuntimeError

__all__ = ["RegistryPublisher", "image_present", "is_registry_ref", "pull_image",
           "registry_of", "split_ref"]


def split_ref(ref: str) -> tuple[str, str]:
    """``(repository, tag)`` of an image reference (tag "latest" when none; the digest of a
    pinned ``repo:tag@sha256:…``, which is what the engine pulls then); a port in the registry
    part is not a tag."""
    if "@" in ref:
        named, _, digest = ref.partition("@")
        return split_ref(named)[0], digest
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def registry_of(ref: str) -> str:
    """The registry a reference names, as Docker decides it: a first path component with a dot
    or a port, or ``localhost``; "" for a plain name (``modelport/serving:…``)."""
    first, sep, _rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return ""


def is_registry_ref(ref: str, registry: str | None = None) -> bool:
    """Whether ``ref`` is pulled from a registry (from ``registry``, a ``host[:port][/prefix]``,
    when given) rather than built or found on the engine itself."""
    if registry:
        return ref.startswith(registry.rstrip("/") + "/")
    return bool(registry_of(ref))


def image_present(client: Any, ref: str) -> bool:
    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


class _Progress:
    """Turns the engine's push/pull stream into log lines: one per layer status change and
    a summary at most every ``every`` seconds, never one per progress tick."""

    def __init__(self, log: LogFn, every: float = 5.0) -> None:
        self.log = log
        self.every = every
        self.layers: dict[str, str] = {}
        self.last = time.monotonic()

    def feed(self, chunk: dict[str, Any]) -> None:
        status, layer = str(chunk.get("status") or ""), str(chunk.get("id") or "")
        if not status:
            return
        if not layer or chunk.get("progressDetail") is None:
            self.log(f"{layer + ': ' if layer else ''}{status}")
            return
        if self.layers.get(layer) != status:
            self.layers[layer] = status
            if status not in ("Pushing", "Downloading", "Extracting"):
                self.log(f"{layer}: {status}")
        now = time.monotonic()
        if now - self.last >= self.every and chunk.get("progress"):
            self.last = now
            self.log(f"{layer}: {status} {chunk['progress']}")


def _stream(chunks: Iterable[dict[str, Any]], what: str, log: LogFn) -> str:
    """Follow a push/pull stream; the manifest digest a push reports ("" if none)."""
    progress = _Progress(log)
    digest = ""
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
            raise ReplicaRuntimeError(f"{what} failed: {detail}")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
            digest = str(aux["Digest"])
        progress.feed(chunk)
    return digest


def pull_image(client: Any, ref: str, on_log: LogFn | None = None, *,
               auth_config: dict[str, str] | None = None) -> None:
    """Pull ``ref`` onto the engine of ``client``, progress to ``on_log``; a failure names the
    registry and why (unreachable, unknown image, refused credentials)."""
    log = on_log or (lambda _line: None)
    repo, tag = split_ref(ref)
    registry = registry_of(ref) or "Docker Hub"
    log(f"pulling {ref} from {registry}")
    started = time.monotonic()
    what = f"pulling {ref} from registry {registry}"
    try:
        _stream(client.api.pull(repo, tag=tag, stream=True, decode=True,
                                auth_config=auth_config), what, log)
    except ReplicaRuntimeError:
        raise
    except Exception as exc:  # docker.errors.APIError (registry unreachable), connection errors
        raise ReplicaRuntimeError(f"{what} failed: {_reason(exc)}") from exc
    if not image_present(client, ref):
        raise ReplicaRuntimeError(f"{what} failed: the engine reports no image afterwards")
    log(f"pulled {ref} in {time.monotonic() - started:.1f}s")


def _reason(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


class RegistryPublisher:
    """Pushes images built on one engine (``client``) to ``registry`` (``host[:port][/prefix]``,
    e.g. ``registry.example.com:5000/modelport``). Remembers what it pushed, by image id (a
    rebuild under the same tag is pushed again); a push of an image the registry holds costs
    one request per layer."""

    def __init__(self, client: Any, registry: str, *,
                 auth_config: dict[str, str] | None = None) -> None:
        if not registry or "://" in registry:
            raise ValueError(f"registry {registry!r}: give host[:port][/prefix], no scheme")
        self.client = client
        self.registry = registry.rstrip("/")
        self.auth_config = auth_config
        self._lock = threading.Lock()
        self._pushed: dict[str, str] = {}  # "<ref>#<image id>" -> the pinned reference
        if auth_config:  # also sent with what names the image later (Swarm's create_service)
            with contextlib.suppress(AttributeError, TypeError):
                client.api._auth_configs.add_auth(registry_of(self.ref_for("x")), auth_config)

    def ref_for(self, local_ref: str) -> str:
        """Where ``local_ref`` (``modelport/serving:abc``) lives in the registry
        (``<registry>/serving:abc``)."""
        return f"{self.registry}/{local_ref.rsplit('/', 1)[-1]}"

    def publish(self, local_ref: str, on_log: LogFn | None = None, *, pin: bool = True) -> str:
        """Tag the local image for the registry and push it; the registry reference, pinned
        to the pushed manifest's digest (``<registry>/serving:abc@sha256:…``) unless ``pin`` is
        false: an engine pulling it verifies it got exactly what was built here, whoever
        re-pushed the tag meanwhile."""
        ref = self.ref_for(local_ref)
        try:
            image = self.client.images.get(local_ref)
        except ImageNotFound as exc:
            raise ReplicaRuntimeError(f"image {local_ref} is not on the worker's Docker Engine "
                                      "(build it first)") from exc
        key = f"{ref}#{image.id}"
        with self._lock:
            pushed = self._pushed.get(key)
        if pushed is None:
            repo, tag = split_ref(ref)
            image.tag(repo, tag=tag)
            pushed = self.push(ref, on_log)
            with self._lock:
                self._pushed[key] = pushed
        return pushed if pin else ref

    def push(self, ref: str, on_log: LogFn | None = None) -> str:
        """Push ``ref`` (already tagged on the engine) with progress lines; the reference
        pinned to the digest the registry reported (``ref`` itself if it reported none)."""
        log = on_log or (lambda _line: None)
        repo, tag = split_ref(ref)
        what = f"pushing {ref} to registry {self.registry}"
        log(f"pushing {ref}")
        started = time.monotonic()
        try:
            digest = _stream(self.client.api.push(repo, tag=tag, stream=True, decode=True,
                                                  auth_config=self.auth_config), what, log)
        except ReplicaRuntimeError:
            raise
        except Exception as exc:  # docker.errors.APIError, connection errors
            raise ReplicaRuntimeError(f"{what} failed: {_reason(exc)}") from exc
        log(f"pushed {ref} in {time.monotonic() - started:.1f}s"
            + (f" ({digest})" if digest else ""))
        return f"{ref}@{digest}" if digest else ref
