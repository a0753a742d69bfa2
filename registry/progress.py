"""Progress you can watch: a version's validation steps and log lines, stored as they happen.

Validation used to move one percent and one message: while the worker built a 673 MB serving
image, the version page sat at "30 % Loading the model in the sandbox" for eight minutes with no
line shown. ``VersionLog`` is the sink ``services.validate_version`` hands to the image build
(``on_log``: pip fetching wheels, the docker build) and to the sandbox (its output): it keeps
each line as a ``VersionEvent`` as soon as it comes, turns the build's stage lines
into steps with a percent, and keeps a version's log bounded (``MODELPORT_VERSION_LOG_LINES``,
the oldest lines go first). The portal, the API (``…/versions/{n}/events/?since=``) and the
CLI (``--watch``) read these rows.

Lines come from pip, Docker and the model's own code (the sandbox's output): control characters
and terminal escapes are removed and each line is cut at ``LINE_MAX`` before it is stored.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db.models import QuerySet, Sum

from .models import ModelVersion, VersionEvent

Kind = VersionEvent.Kind
LINE_MAX = 2000
TAIL_LINES = 20

# Terminal escapes (CSI/OSC sequences), then any other control character but the tab.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.")
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

# The image build's own stage lines (workers/runtimes/images.py, wheelhouse.py) as steps. The
# build takes the 20-60 % stretch of a validation; docker's "Step i/n" lines move within it.
BUILD_START, BUILD_END = 20, 58
_STAGES: tuple[tuple[re.Pattern[str], int, str], ...] = (
    (re.compile(r"^probing the Python of (\S+)"), 22, "Probing the Python of {0}."),
    (re.compile(r"^fetching wheels for "), 25,
     "Fetching the environment's wheels (pip download, wheels only)."),
    (re.compile(r"^wheelhouse \S+ cached"), 30, "Wheels already fetched: using the cache."),
    (re.compile(r"^waiting for another build of (\S+)"), 30,
     "Waiting for another build of the same serving image {0} (it is then reused)."),
    (re.compile(r"^building (\S+) FROM "), 35,
     "Building the serving image {0} (no network, as uid 10001)."),
    (re.compile(r"^image (\S+) cached: reusing"), BUILD_END,
     "Serving image {0} already built: reusing it."),
    (re.compile(r"^built (\S+) in (\S+)"), BUILD_END, "Built the serving image {0} in {1}."),
)
_DOCKER_STEP = re.compile(r"^Step (\d+)/(\d+) :")


def clean_line(line: str) -> str:
    """A line as it may be stored and shown: no escapes or control characters, at most
    ``LINE_MAX`` characters."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", line.replace("\t", "    "))).rstrip()
    return text if len(text) <= LINE_MAX else text[:LINE_MAX - 1] + "…"


class VersionLog:
    """Steps and log lines of one validation run, written to ``VersionEvent`` rows.

    Callable with text (the ``on_log`` of image builds and the sandbox): the lines of each call
    are written at once, as one event — a build or a sandbox can fall silent for minutes after
    any line, and a line held back for a batch would not show until it speaks again. ``step``
    records a step and moves the version's ``progress``/``status_message``; ``finish`` records
    the outcome. Not thread-safe: one validation calls it from one thread."""

    def __init__(self, version_id: int) -> None:
        self.version_id = version_id
        self.stored = (VersionEvent.objects.filter(version_id=version_id, kind=Kind.LOG)
                       .aggregate(n=Sum("lines"))["n"] or 0)
        self.trimmed = VersionEvent.objects.filter(version_id=version_id, kind=Kind.INFO,
                                                   message__startswith=_TRIMMED).exists()

    def start(self, message: str) -> None:
        """The first step. When this version has events already, this is a run again: after
        an outcome, a Retry; without one, its worker was interrupted. Say which."""
        last = (VersionEvent.objects.filter(version_id=self.version_id).order_by("-id")
                .values_list("kind", flat=True).first())
        if last in (Kind.FAILED, Kind.READY):
            self._event(Kind.INFO, "Validation started again (Retry): the lines above are the "
                                   "previous attempt's.")
        elif last is not None:
            self._event(Kind.INFO, "Validation started again: the previous attempt was "
                                   "interrupted (a worker restarted?).")
        self.step(10, message)

    def step(self, progress: int, message: str) -> None:
        ModelVersion.objects.filter(pk=self.version_id).update(progress=progress,
                                                               status_message=message)
        self._event(Kind.STEP, message, progress=progress)

    def __call__(self, text: str) -> None:
        batch: list[str] = []
        moved: int | None = None
        for raw in str(text).splitlines():
            line = clean_line(raw)
            if not line.strip():
                continue
            stage = _stage(line)
            if isinstance(stage, tuple):  # a stage begins: what came before it goes first
                self._write(batch)
                batch, moved = [], None
                self.step(*stage)
            elif stage is not None:
                moved = stage
            batch.append(line)
        self._write(batch)
        if moved is not None:
            ModelVersion.objects.filter(pk=self.version_id).update(progress=moved)

    def finish(self, *, ok: bool, message: str) -> None:
        self._event(Kind.READY if ok else Kind.FAILED, message, progress=100)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        self._event(Kind.LOG, "\n".join(lines), lines=len(lines))
        self.stored += len(lines)
        if self.stored > settings.MODELPORT_VERSION_LOG_LINES + trim_slack():
            self._trim()

    def _event(self, kind: str, message: str, *, progress: int | None = None,
               lines: int = 0) -> None:
        VersionEvent.objects.create(version_id=self.version_id, kind=kind, progress=progress,
                                    message=message, lines=lines)

    def _trim(self) -> None:
        """Drop the oldest log events until the version keeps at most its last
        ``MODELPORT_VERSION_LOG_LINES`` lines (the end of a log says why it failed)."""
        limit = settings.MODELPORT_VERSION_LOG_LINES
        while self.stored > limit:
            drop, dropped = [], 0
            for pk, lines in (VersionEvent.objects.filter(version_id=self.version_id,
                                                          kind=Kind.LOG)
                              .order_by("id").values_list("id", "lines")[:500]):
                if self.stored - dropped <= limit:
                    break
                drop.append(pk)
                dropped += lines
            if not drop:
                break
            VersionEvent.objects.filter(pk__in=drop).delete()
            self.stored -= dropped
        if not self.trimmed:
            self.trimmed = True
            self._event(Kind.INFO, f"{_TRIMMED} a version keeps its last {limit} log lines "
                                   "(MODELPORT_VERSION_LOG_LINES).")


def trim_slack() -> int:
    """Lines a log may run over its limit before the oldest are dropped (a trim per line
    would cost three queries a line)."""
    return max(50, settings.MODELPORT_VERSION_LOG_LINES // 10)


def _stage(line: str) -> tuple[int, str] | int | None:
    """A line of the image build that starts a stage: (percent, step message); a docker
    "Step i/n" line: the percent it reaches; otherwise None."""
    for pattern, progress, message in _STAGES:
        found = pattern.match(line)
        if found:
            return progress, message.format(*found.groups())
    found = _DOCKER_STEP.match(line)
    if found and int(found.group(2)):
        done = min(1.0, int(found.group(1)) / int(found.group(2)))
        return int(35 + (BUILD_END - 35) * done)
    return None


_TRIMMED = "Earlier log lines were dropped:"


# --- Reading --------------------------------------------------------------------------------
def events_of(version: ModelVersion, *, since: int | None = None) -> QuerySet[VersionEvent]:
    """A version's events, oldest first; with ``since``, only those after that event id."""
    events = VersionEvent.objects.filter(version=version).order_by("id")
    return events.filter(id__gt=since) if since is not None else events


def log_tail(version: ModelVersion, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` log lines of a version's validation (image build, sandbox)."""
    tail: list[str] = []
    for message in (VersionEvent.objects.filter(version=version, kind=Kind.LOG)
                    .order_by("-id").values_list("message", flat=True)[:lines]):
        tail = message.splitlines() + tail
        if len(tail) >= lines:
            break
    return tail[-lines:]
