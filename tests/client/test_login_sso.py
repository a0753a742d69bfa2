"""``modelport login --sso``, the CLI's half: its loopback listener (state check, cancel,
timeout, nothing left listening) and the whole command against a live server, with the
browser played by plain HTTP calls carrying a portal session (Chromium does it for real in
``tests/e2e/test_cli_login_journey.py``)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from django.conf import settings
from django.test import Client as DjangoClient
from modelport import cli, errors, sso

from teams.cli_login import s256
from teams.models import ApiToken
from tests.factories import UserFactory


def _closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _run(target, **kwargs):
    """``sso.browser_login`` in a thread; returns (thread, result dict, the printed URL)."""
    result: dict = {}
    printed = threading.Event()

    class Stream:
        text = ""

        def write(self, chunk: str) -> None:
            Stream.text += chunk
            if "/cli/login/?" in Stream.text:
                printed.set()

        def flush(self) -> None:
            pass

    def run() -> None:
        try:
            result["value"] = target(stream=Stream(), **kwargs)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert printed.wait(10)
    url = re.search(r"(http://\S+/cli/login/\?\S+)", Stream.text)[1]
    return thread, result, url


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_listener_ignores_a_wrong_state_then_takes_the_right_answer_and_closes():
    thread, result, url = _run(sso.browser_login, platform_url="http://platform.invalid",
                               token_name="cli on laptop", open_browser=False, timeout=30)
    query = _query(url)
    port = int(query["port"])
    assert url.startswith("http://platform.invalid/cli/login/?")
    assert query["name"] == "cli on laptop" and len(query["code_challenge"]) == 43
    callback = f"http://127.0.0.1:{port}/callback"
    assert httpx.get(f"http://127.0.0.1:{port}/elsewhere").status_code == 404
    forged = httpx.get(f"{callback}?{urlencode({'code': 'mpc_forged', 'state': 'x' * 43})}")
    assert forged.status_code == 400 and thread.is_alive()
    ok = httpx.get(f"{callback}?{urlencode({'code': 'mpc_real', 'state': query['state']})}")
    assert ok.status_code == 200 and "You can close this tab" in ok.text
    thread.join(10)
    code, verifier = result["value"]
    assert code == "mpc_real"
    assert sso.pkce_pair()[0] != verifier
    assert s256(verifier) == query["code_challenge"]
    assert _closed(port)


def test_cancel_in_the_browser_ends_the_command_with_a_refusal():
    thread, result, url = _run(sso.browser_login, platform_url="http://platform.invalid",
                               token_name="x", open_browser=False, timeout=30)
    query = _query(url)
    httpx.get(f"http://127.0.0.1:{query['port']}/callback?"
              f"{urlencode({'error': 'access_denied', 'state': query['state']})}")
    thread.join(10)
    assert isinstance(result["error"], errors.PermissionDenied)
    assert _closed(int(query["port"]))


def test_no_answer_times_out_and_nothing_is_left_listening():
    thread, result, url = _run(sso.browser_login, platform_url="http://platform.invalid",
                               token_name="x", open_browser=False, timeout=1)
    thread.join(15)
    assert isinstance(result["error"], errors.TimeoutExpired)
    assert _closed(int(_query(url)["port"]))


def test_ctrl_c_stops_the_command_and_its_listener(tmp_path):
    """The real command in its own process, interrupted while it waits for the browser."""
    env = {**os.environ, "MODELPORT_CONFIG": str(tmp_path / "c.json"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "client")}
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", "login", "--sso", "--no-browser", "--url",
         "http://platform.invalid"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        line = ""
        while "/cli/login/?" not in line:
            line = process.stderr.readline()
            assert line, "the command ended without printing the address"
        port = int(_query(line.split()[-1])["port"])
        assert not _closed(port)
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 130
        assert _closed(port) and not (tmp_path / "c.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.django_db(transaction=True)
def test_the_command_stores_a_working_token(live_server, tmp_path, monkeypatch, capsys):
    config = tmp_path / "modelport.json"
    monkeypatch.setenv("MODELPORT_CONFIG", str(config))
    monkeypatch.delenv("MODELPORT_URL", raising=False)
    monkeypatch.delenv("MODELPORT_TOKEN", raising=False)
    portal = DjangoClient()
    portal.force_login(UserFactory(username="cora"))
    session = portal.cookies[settings.SESSION_COOKIE_NAME].value

    def browser(url: str) -> bool:
        """Stands in for the user's browser: a portal session, Allow, the redirect."""
        def click_allow() -> None:
            with httpx.Client(cookies={settings.SESSION_COOKIE_NAME: session}) as web:
                page = web.get(url)
                csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
                answer = web.post(url.split("?")[0], data={**_query(url), "decision": "allow",
                                                           "csrfmiddlewaretoken": csrf},
                                  headers={"Referer": url})
                assert answer.status_code == 302, answer.text
                web.get(answer.headers["Location"])
        threading.Thread(target=click_allow, daemon=True).start()
        return True

    monkeypatch.setattr(sso.webbrowser, "open", browser)
    assert cli.main(["--json", "login", "--sso", "--url", live_server.url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["username"] == "cora"
    saved = json.loads(config.read_text())
    assert saved["token"].startswith("mpt_") and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert ApiToken.objects.get(pk=saved["token_id"]).user.username == "cora"
    assert cli.main(["teams"]) == 0  # the saved token works
