"""The browser harness every page and journey test runs under (issue 18's "Done when").

``CheckedPage`` wraps a Playwright page at one of two viewports (desktop 1440x900, mobile
390x844) and records, from the moment it opens:

- every request whose host is not the live server: aborted (route interception), so a page that
  would call a CDN fails here even on a machine with internet;
- console errors and uncaught page errors;
- failed requests (``requestfailed``) and responses >= 400, except the statuses a step says it
  expects (``with checked.expecting(404): ...``).

``check(name)`` then runs axe-core (vendored in ``assets/``, evaluated through Playwright's
CDP-level ``evaluate`` so the portal's strict Content-Security-Policy need not allow it) and fails
on any serious or critical violation with a readable list, fails when the page scrolls sideways
(``scrollWidth > innerWidth``), fails on anything recorded since the previous check, and saves a
full-page screenshot ``test-artifacts/screenshots/<folder>/<viewport>/<nn>-<name>.png``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import ARTIFACTS

ASSETS = Path(__file__).resolve().parent / "assets"
AXE_SOURCE_PATH = ASSETS / "axe.min.js"
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "mobile": {"width": 390, "height": 844}}
FAILING_IMPACTS = ("serious", "critical")
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.filter(v => ['serious', 'critical'].includes(v.impact)).map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => ({target: n.target.join(' '),
                                           summary: (n.failureSummary || '').slice(0, 300)}))}));
}"""
OVERFLOW = """() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  widest: [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
    .filter(e => !e.parentElement.closest('table, .table-scroll, pre'))
    .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
      + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : '')
      + ' ' + Math.round(e.getBoundingClientRect().right) + 'px')})"""


def axe_source() -> str:
    return AXE_SOURCE_PATH.read_text(encoding="utf-8")


@dataclass
class Problems:
    off_host: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def drain(self) -> list[str]:
        found = ([f"off-host request (aborted): {u}" for u in self.off_host]
                 + [f"console error: {m}" for m in self.console]
                 + [f"failed request: {m}" for m in self.failed])
        self.off_host.clear()
        self.console.clear()
        self.failed.clear()
        return found


class CheckedPage:
    """A page at one viewport with everything it does recorded (see the module docstring)."""

    def __init__(self, browser: Any, base_url: str, viewport: str, folder: str,
                 color_scheme: str = "light") -> None:
        self.base, self.viewport = base_url.rstrip("/"), viewport
        self.host = urlsplit(self.base).netloc
        self.context = browser.new_context(viewport=VIEWPORTS[viewport],
                                           color_scheme=color_scheme)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.problems = Problems()
        self.expected: set[int] = set()
        self.step = 0
        self.shots = ARTIFACTS / folder / (viewport if color_scheme == "light"
                                           else f"{viewport}-{color_scheme}")
        self.shots.mkdir(parents=True, exist_ok=True)
        self._axe = axe_source()
        self.context.route("**/*", self._route)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.console.append(
            f"{self.page.url}: uncaught {error}"))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)

    # --- recording ---------------------------------------------------------------------------
    def _route(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.netloc == self.host:
            route.continue_()
        else:
            self.problems.off_host.append(url)
            route.abort("blockedbyclient")

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(f"status of {s} " in message.text
                                               for s in self.expected):
            self.problems.console.append(f"{self.page.url}: {message.text}")

    def _request_failed(self, request: Any) -> None:
        if urlsplit(request.url).netloc != self.host:
            return  # already recorded as off-host
        if request.failure == "net::ERR_ABORTED":
            return  # cancelled by the browser: the user moved on (a link, a submit) mid-load
        self.problems.failed.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.expected:
            self.problems.failed.append(
                f"{response.request.method} {response.url}: HTTP {response.status}")

    @contextlib.contextmanager
    def expecting(self, *statuses: int) -> Iterator[None]:
        """Responses with these statuses (and the console line Chromium prints for each) are
        what this step is about, not failures: check the page inside the block."""
        self.expected.update(statuses)
        try:
            yield
        finally:
            self.expected.difference_update(statuses)

    # --- driving -----------------------------------------------------------------------------
    def goto(self, path: str) -> Any:
        self.page.wait_for_load_state()  # leaving a page mid-load aborts its requests
        return self.page.goto(f"{self.base}{path}")

    def login(self, username: str, password: str, *, check: str | None = "login") -> None:
        """Sign in through the form (the one ``goto`` a journey makes); ``check``: the name of
        the sign-in page's check and screenshot (None: none)."""
        self.goto("/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        if check:
            self.check(check)
        self.page.get_by_role("button", name="Log in").click()
        self.page.get_by_role("heading", name="Dashboard").wait_for()
        self.page.wait_for_load_state()

    def nav(self, name: str) -> None:
        """Follow a link of the main navigation by its visible name."""
        self.page.get_by_role("navigation", name="Main").get_by_role(
            "link", name=name, exact=True).click()
        self.page.wait_for_load_state()

    # --- checking ----------------------------------------------------------------------------
    def axe_violations(self) -> list[dict]:
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.evaluate(self._axe)  # CDP evaluate: not subject to the page's CSP
        return self.page.evaluate(AXE_RUN)

    def clear_shots(self, prefix: str = "") -> None:
        """Remove this folder's screenshots of an earlier run (those named ``nn-prefix…``)."""
        for old in self.shots.glob("*.png"):
            if old.name[3:].startswith(prefix):
                old.unlink()

    def check(self, name: str) -> Path:
        """axe-core, horizontal overflow, everything recorded since the last check; then a
        full-page screenshot. Fails the test with one readable list of what is wrong."""
        self.page.wait_for_load_state()
        self.step += 1
        path = self.shots / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        where = f"[{self.viewport}] {name} ({self.page.url})"
        found = [format_violation(v) for v in self.axe_violations()]
        overflow = self.page.evaluate(OVERFLOW)
        if overflow["scroll"] > overflow["inner"]:
            found.append(f"page scrolls sideways: {overflow['scroll']}px wide in a "
                         f"{overflow['inner']}px viewport; widest: {overflow['widest']}")
        found += self.problems.drain()
        if found:
            pytest.fail(f"{where}:\n  " + "\n  ".join(found), pytrace=False)
        return path

    def close(self, *, report: bool = True) -> None:
        leftover = self.problems.drain()
        self.context.close()
        if leftover and report:
            pytest.fail(f"[{self.viewport}] after the last check:\n  " + "\n  ".join(leftover),
                        pytrace=False)


def format_violation(v: dict) -> str:
    nodes = "; ".join(f"{n['target']} — {n['summary'].splitlines()[-1].strip()}"
                      if n["summary"] else n["target"] for n in v["nodes"])
    return f"axe {v['impact']} {v['id']}: {v['help']} → {nodes}"


@contextlib.contextmanager
def checked_page(browser: Any, base_url: str, viewport: str, folder: str = "journeys",
                 color_scheme: str = "light") -> Iterator[CheckedPage]:
    """A ``CheckedPage`` (``color_scheme``: what the browser prefers; the portal follows it)
    closed at the end, failing the test on anything recorded after its last check."""
    checked = CheckedPage(browser, base_url, viewport, folder, color_scheme)
    try:
        yield checked
    except BaseException:
        checked.close(report=False)  # the test's own failure is the one to read
        raise
    checked.close()
