"""Holding requests while a deployment scaled to zero wakes: the request path of scale to zero.

A request for an autoscaled deployment that finds no ready replica — asleep (``replicas`` 0) or
waking (the count raised, nothing ready yet, perhaps woken by another edge process a moment
ago) — is held here instead of the 503: the first held request of the deployment in this
process calls ``deployments.autoscale.wake`` (in a worker thread; concurrent callers anywhere
find the count raised, so one replica starts, not many), then one small query every
``POLL_S`` looks for a ready replica *only while requests are held* (the route cache itself
checks once a second), and every held request is relayed as soon as one is ready. Bounded:
``MODELPORT_WAKE_QUEUE`` requests per deployment and process, each at most
``MODELPORT_WAKE_TIMEOUT_S``; beyond either, 503 with ``Retry-After``. Only callers admitted
to the deployment (token and team checked first) are held, so a stranger never wakes it.

``Wakes`` serves the edge's event loop; ``hold`` serves the Django path (a thread per request).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db import DatabaseError

from core.errors import Conflict
from deployments import autoscale
from deployments.models import Replica

from . import routes
from .routes import Refusal, Route

log = logging.getLogger("modelport.edge")
POLL_S = 0.05  # how often a held deployment is asked for a ready replica
T = TypeVar("T")


def holds(route: Route, traffic: bool) -> bool:
    """Whether a request (inference: ``traffic``) waits for this route to wake rather than
    being refused: autoscaled, not stopped or failed, and no ready replica to pick."""
    return traffic and route.wakes and not route.revisions


def ready(deployment_id: int) -> bool:
    """Any ready replica with an address (the small query repeated while requests wait)."""
    return Replica.objects.filter(deployment_id=deployment_id, ready=True).exclude(
        url="").exists()


def fresh_route(name: str) -> Route | None:
    """The routing table re-read now (not the once-a-second cache): the woken replica in it."""
    routes.invalidate(name)
    return routes.route_for(name)


def wake_refused(name: str, exc: Exception) -> Refusal:
    return Refusal(503, f"Deployment '{name}' is scaled to zero and cannot wake now: its "
                        f"team's quota or target has no room for a replica ({exc}). Ask for "
                        "more quota or stop another deployment.",
                   "wake_refused", {"Retry-After": "30"})


def _refused_by(exc: Exception, name: str) -> Refusal:
    return wake_refused(name, exc)


def queue_full(name: str) -> Refusal:
    return Refusal(503, f"Deployment '{name}' is waking from zero and already holds "
                        f"{settings.MODELPORT_WAKE_QUEUE} waiting requests "
                        "(MODELPORT_WAKE_QUEUE); try again in a moment.",
                   "waking_queue_full", {"Retry-After": "2"})


def wake_timeout(name: str) -> Refusal:
    return Refusal(503, f"Deployment '{name}' is waking from zero but no replica was ready "
                        f"within {settings.MODELPORT_WAKE_TIMEOUT_S:g} s "
                        "(MODELPORT_WAKE_TIMEOUT_S); try again shortly and check its events.",
                   "wake_timeout", {"Retry-After": "5"})


def unavailable(name: str) -> Refusal:
    return Refusal(503, f"Deployment '{name}' is scaled to zero and Modelport cannot wake it "
                        "right now (its database is not answering); try again shortly.",
                   "control_plane_unavailable", {"Retry-After": "5"})


# --- the edge -----------------------------------------------------------------------------------
class Waiter(Protocol):
    """What the edge holds: an admitted request (``gateway.edge.Exchange``)."""

    def refuse(self, refusal: Refusal) -> None: ...

    def resume(self, route: Route) -> None: ...


@dataclass
class _Held:
    name: str
    waiting: list[tuple[float, Waiter]] = field(default_factory=list)  # (deadline, request)


class Wakes:
    """The edge's held requests, per deployment, and one wake-and-watch task per deployment."""

    def __init__(self, sync: Callable[..., Awaitable[Any]]) -> None:
        self.sync = sync  # the edge's worker-thread runner: never a query on the loop
        self.held: dict[int, _Held] = {}
        self.tasks: set[asyncio.Task] = set()

    def hold(self, waiter: Waiter, route: Route) -> None:
        pk = route.version[0]
        held = self.held.get(pk)
        if held is None:
            held = self.held[pk] = _Held(route.name)
            task = asyncio.get_running_loop().create_task(self._wake(pk, held))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if len(held.waiting) >= settings.MODELPORT_WAKE_QUEUE:
            waiter.refuse(queue_full(route.name))
            return
        held.waiting.append((time.monotonic() + settings.MODELPORT_WAKE_TIMEOUT_S, waiter))

    def release(self, pk: int, refusal: Callable[[str], Refusal]) -> None:
        held = self.held.pop(pk, None)
        for _, waiter in held.waiting if held else ():
            waiter.refuse(refusal(held.name))  # type: ignore[union-attr]  # held is set here

    async def _wake(self, pk: int, held: _Held) -> None:
        try:
            await self._wake_and_watch(pk, held)
        except Exception:  # every held request must get an answer, whatever broke
            log.exception("waking deployment %s failed", pk)
            self.release(pk, unavailable)
        finally:
            if self.held.get(pk) is held:
                self.release(pk, wake_timeout)

    async def _wake_and_watch(self, pk: int, held: _Held) -> None:
        try:
            await self.sync(autoscale.wake, pk)
        except Conflict as exc:
            self.release(pk, functools.partial(_refused_by, exc))
            return
        except DatabaseError:
            log.exception("database unavailable to wake deployment %s", pk)
            self.release(pk, unavailable)
            return
        while True:
            now = time.monotonic()
            late = [w for deadline, w in held.waiting if deadline <= now]
            if late:
                held.waiting = [(t, w) for t, w in held.waiting if t > now]
                for waiter in late:
                    waiter.refuse(wake_timeout(held.name))
            if not held.waiting:
                return
            if await self.sync(ready, pk):
                route = await self.sync(fresh_route, held.name)
                if route is not None and route.revisions:
                    self.held.pop(pk, None)
                    for _, waiter in held.waiting:
                        waiter.resume(route)
                    return
            await asyncio.sleep(POLL_S)

    def close(self) -> None:
        for pk in list(self.held):
            self.release(pk, wake_timeout)
        for task in self.tasks:
            task.cancel()


# --- the Django path ----------------------------------------------------------------------------
@dataclass
class _SyncWake:
    count: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    refusal: Exception | None = None
    called: bool = False


_lock = threading.Lock()
_sync_held: dict[int, _SyncWake] = {}


def hold(route: Route) -> Route | Refusal:
    """The Django path's hold (blocks this request's thread): the woken route, or the 503."""
    pk, name = route.version[0], route.name
    with _lock:
        state = _sync_held.setdefault(pk, _SyncWake())
        if state.count >= settings.MODELPORT_WAKE_QUEUE:
            return queue_full(name)
        state.count += 1
        first, state.called = not state.called, True
    deadline = time.monotonic() + settings.MODELPORT_WAKE_TIMEOUT_S
    try:
        if first:
            try:
                autoscale.wake(pk)
            except (Conflict, DatabaseError) as exc:
                state.refusal = exc
            finally:
                state.done.set()
        else:
            state.done.wait(settings.MODELPORT_WAKE_TIMEOUT_S)
        if isinstance(state.refusal, Conflict):
            return wake_refused(name, state.refusal)
        if state.refusal is not None:
            return unavailable(name)
        while time.monotonic() < deadline:
            if ready(pk):
                woken = fresh_route(name)
                if woken is not None and woken.revisions:
                    return woken
            time.sleep(POLL_S)
        return wake_timeout(name)
    finally:
        with _lock:
            state.count -= 1
            if state.count == 0 and _sync_held.get(pk) is state:
                del _sync_held[pk]
