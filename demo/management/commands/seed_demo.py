"""Seed the first-run demo (``make run`` starts this as the Procfile's ``demo`` process).

Creates what is missing — two models trained from scikit-learn's bundled datasets, validated
by the worker, the classifier deployed through its ``production`` alias, two alert rules — waits
until the deployment is healthy, makes one prediction through the gateway, then prints the URL,
the login and a ready-to-paste ``curl`` with a fresh token. ``--wait-for-web`` lets the portal
start first (`make run`'s supervisor runs it once that way); ``--stay`` also does, and then waits
for Ctrl-C instead of exiting, for a process manager that stops everything when one exits.
"""

from __future__ import annotations

import logging
import signal
import time

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.client_dist import client_wheel
from demo import services


def _exit(*_args: object) -> None:
    raise SystemExit(0)


class Command(BaseCommand):
    help = "Seed the demo team's models and deployment (idempotent), then print a curl line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--stay", action="store_true",
                            help="Keep running when done (for honcho/Procfile).")
        parser.add_argument("--wait-for-web", action="store_true",
                            help="Wait until the portal answers /readyz before seeding.")
        parser.add_argument("--timeout", type=float, default=900,
                            help="Seconds to wait for validation and a healthy deployment.")

    def handle(self, *args, **options) -> None:
        signal.signal(signal.SIGTERM, _exit)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
        try:
            self._seed(options["timeout"],
                       wait_for_web=options["stay"] or options["wait_for_web"])
        except services.DemoError as exc:
            if not options["stay"]:
                raise CommandError(str(exc)) from exc
            self.stderr.write(self.style.ERROR(f"Demo seeding stopped: {exc}"))
        except (KeyboardInterrupt, SystemExit):
            return
        if options["stay"]:
            try:
                while True:
                    signal.pause()
            except (KeyboardInterrupt, SystemExit):
                return

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _wait_for_web(self, timeout: float = 180) -> None:
        """Let the portal start first: on 2 cores, training and registering beside gunicorn's
        start-up would delay the page a newcomer is waiting for."""
        url = f"{settings.MODELPORT_BASE_URL.rstrip('/')}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self._say(f"{url} does not answer yet; seeding anyway.")

    def _seed(self, timeout: float, *, wait_for_web: bool) -> None:
        if not settings.MODELPORT_DEMO:
            self._say("Demo seeding is off (MODELPORT_DEMO=0).")
            return
        started = time.monotonic()
        if wait_for_web:
            self._wait_for_web()
        self._say("Seeding the demo (two models, one deployment); the portal is usable meanwhile.")
        result = services.seed(report=self._say, timeout=timeout)
        d = result.deployment
        if d.stopped:
            return
        actor = services.admin_user()
        token, secret = services.issue_token(actor)
        answer = services.first_prediction(d, secret)
        took = time.monotonic() - started
        created = ", ".join(result.created) if result.created else "nothing new (already seeded)"
        base = settings.MODELPORT_BASE_URL.rstrip("/")
        versions = ", ".join(f"{name} v{v.version}" for name, v in result.versions.items())
        password = ("MODELPORT_ADMIN_PASSWORD" if settings.MODELPORT_ADMIN_PASSWORD
                    else "the password printed above at first start")
        bar = "=" * 72
        lines = [
            bar,
            f"Modelport demo ready in {took:.0f} s — created: {created}",
            f"Portal:     {base}/   log in as '{actor.get_username()}' ({password})",
            f"Models:     {versions}   (team '{services.DEMO_TEAM}')",
            f"Deployment: {base}/deployments/{d.name}/   healthy, runtime {result.runtime}",
            f"API token:  '{token.name}', expires {token.expires_at:%Y-%m-%d} "
            "(a new one each start; the previous one is revoked)",
            "Predict through the gateway (one line):",
            services.curl_line(d, secret),
            f"  → {answer.strip()[:200]}",
            f"CLI and Python client: pip install {base}/client/{client_wheel().filename}",
            f"  export MODELPORT_URL={base} MODELPORT_TOKEN={secret}",
            f"Monitoring: {base}/monitoring/deployments/{d.name}/?range=1h — fill it with "
            "`make demo-traffic` or the button on the deployment page.",
            bar,
        ]
        for line in lines:
            self._say(line)
