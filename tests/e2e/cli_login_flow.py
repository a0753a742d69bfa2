"""The browser half of ``modelport login --sso``, reusable: start the real CLI, let a
Chromium page sign in on the portal (any way: ``sign_in`` is the part an SSO test swaps),
click Allow, and wait for the CLI to finish.

    cli = start_cli_login(base_url, config_path)
    approve_in_browser(page, cli.url, sign_in=password_sign_in("cora", PASSWORD))
    assert cli.finish() == 0
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
SignIn = Callable[[Any], None]


@dataclass
class CliLogin:
    """A running ``modelport login --sso --no-browser`` and the address it printed."""

    process: subprocess.Popen
    url: str
    stderr: list[str] = field(default_factory=list)

    def finish(self, timeout: float = 60) -> int:
        """Wait for the command (killing it if it hangs); its exit status."""
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)

    @property
    def stdout(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""


def start_cli_login(base_url: str, config: Path, *extra: str,
                    wait_s: float = 30) -> CliLogin:
    """Start the real CLI in its own process (this repository's client, its own config file)
    and return once it printed the sign-in address."""
    env = {**os.environ, "MODELPORT_CONFIG": str(config), "PYTHONPATH": str(CLIENT_DIR)}
    for name in ("MODELPORT_URL", "MODELPORT_TOKEN"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", "login", "--sso", "--no-browser",
         "--url", base_url, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=wait_s).strip()
            if "/cli/login/?" in line:
                return CliLogin(process=process, url=line.split()[-1], stderr=seen)
    except BaseException:
        process.kill()
        process.wait(10)
        raise


def password_sign_in(username: str, password: str) -> SignIn:
    """The portal's own login form (where ``/cli/login/`` sends an anonymous visitor)."""
    def sign_in(page: Any) -> None:
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
    return sign_in


def approve_in_browser(page: Any, url: str, *, sign_in: SignIn | None,
                       username: str | None = None) -> None:
    """Open the CLI's address, sign in when asked, click Allow, and wait for the CLI's
    "You can close this tab" page."""
    page.goto(url)
    if sign_in is not None:
        sign_in(page)
    heading = page.get_by_role("heading", name="Allow the command line on this computer")
    heading.wait_for()
    if username is not None:
        assert heading.inner_text().strip().endswith(f"act as {username}?"), \
            heading.inner_text()
    page.get_by_role("button", name="Allow").click()
    page.get_by_text("You can close this tab").wait_for()
