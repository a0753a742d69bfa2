"""A model's whole journey, in a real browser, on the real platform.

Headless Chromium (Playwright) drives the portal served by the live test server; two real Celery
workers (the default queue — validation, rollups — and the ``deployments`` queue of the
reconciler, as in the ``Procfile``) run as subprocesses against the test's PostgreSQL database
and Redis; replicas are real Docker containers on the host network that ship their prediction
logs back to the live server. Nothing is mocked.

log in → create an API token → create a model and upload an MLflow scikit-learn model → watch
validation reach ``ready`` (htmx) → point ``production`` at v1 → deploy ``production`` with a
canary strategy → healthy → predictions with ``modelport.Client`` → requests on the monitoring
chart → ask for a GPU → a platform admin approves → register v2, move ``production`` → the canary
rolls out → one-click rollback → the previous model version serves again.

Screenshots of every step, and the workers' logs, go to ``test-artifacts/screenshots/journey/``;
four of the screenshots also refresh the README's figures in ``docs/images/`` (dashboard, model,
deployment, monitoring).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db.models import Sum

from deployments.models import Deployment
from monitoring.models import MinuteRollup, PredictionRecord
from quotas.models import ResourceRequest
from teams.roles import Role
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD, AdminFactory, MembershipFactory, TeamFactory, UserFactory
from tests.procs import database_url, stop_processes

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres,
              pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ARTIFACTS / "journey"
README_IMAGES = ROOT / "docs" / "images"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
DEPLOYMENT = "iris-prod"
# Replica ports for this test only: away from the dev default and the other Docker tests' ranges.
PORT_RANGE = "22500-22999"
# Generous: a busy 2-core CI machine; the waits end as soon as the page shows the text.
SLOW_MS = 300_000


# --- the model files ----------------------------------------------------------------------------
def iris_zip(tmp_path: Path, name: str, c: float) -> Path:
    """Train a small LogisticRegression on iris and save it as a zipped MLflow model, pinned to
    the platform's own scikit-learn stack (the serving image the suite builds once)."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from registry.sandbox import platform_requirements

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    model = LogisticRegression(C=c, max_iter=300).fit(frame, data.target)
    target = tmp_path / name
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    mlflow.sklearn.save_model(
        model, str(target), signature=infer_signature(example, model.predict(example)),
        input_example=example, pip_requirements=platform_requirements(),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    archive = tmp_path / f"{name}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(target.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(target).as_posix())
    archive.write_bytes(buffer.getvalue())
    return archive


# --- real Celery workers ------------------------------------------------------------------------




@pytest.fixture
def platform(live_server, redis_url, docker_client, platform_serving_image, settings,
             tmp_path) -> Iterator[Callable[[], str]]:
    """The live server plus the ``Procfile``'s two workers, sharing the test's data dir,
    database and Redis; the in-process Celery app stops running tasks eagerly for the test.
    Yields a function returning the workers' log tails (for failure messages)."""
    from config.celery import app
    from gateway import routes

    settings.MODELPORT_BASE_URL = live_server.url
    settings.MODELPORT_RUNTIME = "docker"
    routes.invalidate()
    eager = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False
    with app.connection_for_write(redis_url) as conn:  # stale messages of an earlier run
        for queue in ("celery", "deployments"):
            with contextlib.suppress(Exception):
                conn.default_channel.queue_purge(queue)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "DJANGO_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(), "REDIS_URL": redis_url,
        "MODELPORT_DATA_DIR": str(settings.MODELPORT_DATA_DIR),
        "MODELPORT_BASE_URL": live_server.url, "MODELPORT_RUNTIME": "docker",
        "MODELPORT_DOCKER_NETWORK": "host", "MODELPORT_PORT_RANGE": PORT_RANGE,
        "MODELPORT_SERVING_BASE_IMAGE": settings.MODELPORT_SERVING_BASE_IMAGE,
        "MODELPORT_DRAIN_SECONDS": "1", "MODELPORT_READY_TIMEOUT_S": "180",
        "MODELPORT_MONITORING_ROLLUP_DELAY_S": "1",
        # No beat runs here: every pass that falls due later (a canary step's end, a retry)
        # must come from a countdown task, which ``deployments.passes.schedule_pass`` enqueues
        # only for what falls due before beat's next tick.
        "MODELPORT_RECONCILE_SECONDS": "300",
    })
    logs = {"worker": tmp_path / "worker.log", "reconciler": tmp_path / "reconciler.log"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
             "--concurrency", "1", "--without-gossip", "--without-mingle",
             "--hostname", f"journey-{name}@%h", "-Q", queue],
            cwd=ROOT, env=env, stdout=logs[name].open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        for name, queue in (("worker", "celery"), ("reconciler", "deployments"))]

    def tails() -> str:
        dead = [f"{name} exited with {p.returncode}" for name, p in zip(logs, processes,
                                                                         strict=True)
                if p.poll() is not None]
        return "\n".join(dead + [f"--- {name} ---\n{path.read_text()[-4000:]}"
                                 for name, path in logs.items()])

    try:
        yield tails
    finally:
        stop_processes(processes)
        app.conf.task_always_eager, app.conf.task_eager_propagates = eager
        for container in docker_client.containers.list(
                all=True, filters={"label": f"modelport.deployment={DEPLOYMENT}"}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        routes.invalidate()
        SHOTS.mkdir(parents=True, exist_ok=True)
        for name, path in logs.items():
            shutil.copy(path, SHOTS / f"{name}.log")


# --- the browser --------------------------------------------------------------------------------
class Journey:
    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base, self.step = page, base, 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob("*.png"):
            old.unlink()

    def shot(self, name: str, readme: str | None = None, until: Any = None) -> None:
        """A full-page screenshot of this step; ``readme``: also a figure for the README, the
        page from its top down to the bottom of ``until`` (a locator; default 1,400 px)."""
        self.step += 1
        path = SHOTS / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if readme:
            README_IMAGES.mkdir(parents=True, exist_ok=True)
            width, height = self.page.evaluate(
                "() => [document.documentElement.clientWidth,"
                " document.documentElement.scrollHeight]")
            bottom = 1400
            if until is not None:
                box = until.bounding_box()
                scrolled = self.page.evaluate("() => window.scrollY")
                bottom = int(box["y"] + scrolled + box["height"]) + 24 if box else bottom
            self.page.screenshot(path=str(README_IMAGES / f"{readme}.png"), full_page=True,
                                 clip={"x": 0, "y": 0, "width": width,
                                       "height": min(bottom, height, 2400)})

    def go(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")

    def login(self, username: str) -> None:
        self.page.context.clear_cookies()
        self.go("/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.get_by_role("heading", name="Dashboard").wait_for()

    def logout(self) -> None:
        menu = self.page.locator("details", has=self.page.locator("form[action*='logout']"))
        if menu.count() and menu.first.get_attribute("open") is None:  # the user menu
            menu.first.locator("summary").first.click()
        self.page.get_by_role("button", name="Log out").click()
        self.page.get_by_label("Username").wait_for()

    def text(self, text: str, timeout: float = 15_000) -> None:
        self.page.get_by_text(text).first.wait_for(timeout=timeout)

    def upload(self, model: str, archive: Path, description: str) -> None:
        """Upload on the model page; the version page then polls (htmx) until ``ready``."""
        from playwright.sync_api import expect

        self.go(f"/models/{model}/")
        form = self.page.locator("form", has=self.page.get_by_role(
            "button", name="Upload and validate"))
        form.get_by_label("File").set_input_files(str(archive))
        form.get_by_label("Format").select_option("mlflow")
        form.get_by_label("Description").fill(description)
        self.page.get_by_role("button", name="Upload and validate").click()
        self.text("uploaded; validating.")
        expect(self.page.locator("#version-status .badge").first).to_have_text(
            "ready", timeout=SLOW_MS)

    def move_alias(self, model: str, alias: str, version: int) -> None:
        self.go(f"/models/{model}/")
        form = self.page.locator("form", has=self.page.get_by_role("button", name="Move alias"))
        form.get_by_label("Alias").fill(alias)
        form.get_by_label("Version").fill(str(version))
        form.get_by_role("button", name="Move alias").click()
        self.text(f"'{alias}' now points to version {version}.")

    def status_badge(self, status: str, timeout: float = SLOW_MS) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#deployment-status .badge").first).to_have_text(
            status, timeout=timeout)


class Traffic:
    """Predictions through the gateway from a background thread, a few per second, while the
    browser moves the alias and rolls back: which revision answered each (``X-Modelport-
    Revision``) and every failure."""

    def __init__(self, base: str, token: str) -> None:
        self.url = f"{base}/serve/{DEPLOYMENT}/invocations"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.revisions: list[str] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        body = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
        while not self.stopping.is_set():
            try:
                answer = self.session.post(self.url, json=body, timeout=30)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            else:
                if answer.status_code == 200:
                    self.revisions.append(answer.headers.get("X-Modelport-Revision", "?"))
                else:
                    self.failures.append(f"{answer.status_code} {answer.text[:200]}")
            self.stopping.wait(0.25)  # pacing: a steady trickle on a busy CI machine

    def until_served_by(self, revision: str, tails: Callable[[], str]) -> None:
        _wait_for(f"a prediction served by revision {revision}",
                  lambda: revision in self.revisions[-5:], tails)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)
        self.session.close()


def _wait_for(what: str, check: Callable[[], bool], tails: Callable[[], str],
              timeout: float = SLOW_MS / 1000, every: Callable[[], Any] | None = None) -> None:
    """Poll a condition the platform's own processes make true (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if check():
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}\n{tails()}")


def _requests_on_chart(page: Any) -> dict[str, float]:
    """What the deployment's Chart.js requests chart draws: the sum of its per-minute rates
    times the step (requests), next to the total the page embedded for it."""
    page.wait_for_function(
        "() => { const c = document.querySelector('canvas[data-chart=\"requests\"]');"
        " return c && window.Chart && Chart.getChart(c); }")
    return page.evaluate("""() => {
        const canvas = document.querySelector('canvas[data-chart="requests"]');
        const series = JSON.parse(document.getElementById(canvas.dataset.source).textContent);
        const rates = Chart.getChart(canvas).data.datasets[0].data;
        const drawn = rates.reduce((sum, v) => sum + (v || 0), 0) * series.step / 60;
        return {drawn: drawn, total: series.totals.requests};
    }""")


def test_a_model_from_upload_to_canary_and_rollback_in_the_browser(platform, live_server, page,
                                                                   tmp_path):
    from modelport import Client
    from playwright.sync_api import expect

    from monitoring.tasks import rollup

    tails = platform
    started = time.monotonic()
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="mia"), role=Role.MAINTAINER)
    AdminFactory(username="root")
    v1_zip, v2_zip = iris_zip(tmp_path, "iris-v1", 1.0), iris_zip(tmp_path, "iris-v2", 0.3)
    page.set_default_timeout(30_000)
    j = Journey(page, live_server.url)

    # 1. Log in through the portal's form.
    j.go("/login/")
    page.get_by_label("Username").fill("mia")
    page.get_by_label("Password").fill(PASSWORD)
    j.shot("login")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    j.shot("dashboard-empty")

    # 2. An API token for scripts; its secret is shown once.
    j.go("/tokens/")
    page.get_by_label("Name").fill("journey-client")
    page.get_by_label("Expires in (days)").fill("7")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("mpt_")
    j.shot("token-created")

    # 3. A model, and its first version uploaded through the form; validation runs on the
    # worker (in the Docker sandbox) while the version page updates itself.
    j.go("/models/")
    create = page.locator("form", has=page.get_by_role("button", name="Create model"))
    create.get_by_label("Name").fill("iris")
    create.get_by_label("Team").select_option("ml-search")
    create.get_by_label("Description").fill("Iris species from sepal and petal sizes")
    create.get_by_label("Tags").fill("tabular, demo")
    page.get_by_role("button", name="Create model").click()
    page.get_by_role("heading", name="iris").wait_for()
    j.shot("model-created")
    j.upload("iris", v1_zip, "LogisticRegression C=1.0")
    j.shot("v1-ready")

    # 4. production → v1, then deploy "production" with a canary strategy from the model page.
    j.move_alias("iris", "production", 1)
    page.get_by_role("link", name="Deploy it", exact=True).first.click()
    deploy = page.locator("#deploy form")
    expect(deploy.get_by_label("Model")).to_have_value("iris")
    expect(deploy.get_by_label("Team")).to_have_value("ml-search")
    deploy.get_by_label("Name").fill(DEPLOYMENT)
    deploy.get_by_label("alias").fill("production")
    deploy.get_by_label("CPU per replica").fill("0.5")
    deploy.get_by_label("Memory per replica (MB)").fill("768")
    deploy.get_by_label("Strategy").select_option("canary")
    deploy.get_by_label("Canary steps (% of traffic)").fill("25,50,100")
    deploy.get_by_label("Seconds per canary step").fill("3")
    j.shot("deploy-form")
    deploy.get_by_role("button", name="Deploy", exact=True).click()
    page.get_by_role("heading", name=DEPLOYMENT).wait_for()
    j.text("revision 1 is rolling out")
    j.status_badge("healthy")
    j.shot("deployment-healthy")

    # 5. Predictions from a script, with the token made in step 2.
    with Client(live_server.url, secret) as client:
        for _ in range(20):
            answer = client.predict(DEPLOYMENT, {"dataframe_split": {"columns": COLUMNS,
                                                                     "data": ROWS}})
            assert answer["predictions"] == [0, 2, 1], answer
    # The replica ships its log to the live server; the worker's rollup task (beat runs it
    # every 20 s in production) folds it into the minute rollups the charts read.
    _wait_for("the replica to ship 20 requests",
              lambda: PredictionRecord.objects.count() >= 20, tails)
    _wait_for("the rollup of 20 requests", lambda: (MinuteRollup.objects.aggregate(
        n=Sum("count"))["n"] or 0) >= 20, tails, every=rollup.delay)
    j.go(f"/monitoring/deployments/{DEPLOYMENT}/")
    chart = _requests_on_chart(page)
    assert round(chart["drawn"]) == 20 and chart["total"] == 20, chart
    page.locator("canvas[data-chart='requests']").scroll_into_view_if_needed()
    j.shot("monitoring")
    j.go("/")
    j.shot("dashboard")

    # 6. More GPUs: a request from the team, approved by a platform admin.
    j.go("/teams/ml-search/quota/")
    page.get_by_label("More GPUs").fill("1")
    page.get_by_label("Justification").fill("Batch scoring of the iris backlog on a GPU")
    page.get_by_role("button", name="Send request").click()
    j.text("Request sent")
    j.shot("gpu-requested")
    j.logout()
    j.login("root")
    j.go("/resource-requests/")
    j.text("Batch scoring of the iris backlog on a GPU")
    page.get_by_label("GPUs to grant").fill("1")
    j.shot("gpu-request-queue")
    page.get_by_role("button", name="Approve").click()
    j.text("approved.")
    assert ResourceRequest.objects.get().status == "approved"
    j.logout()
    j.login("mia")
    j.go("/teams/ml-search/quota/")
    expect(page.locator("meter[id$='-gpus']").first).to_have_attribute("max", "1")
    j.shot("gpu-granted")

    # 7. Version 2; moving production rolls the deployment out as a canary, under traffic.
    j.upload("iris", v2_zip, "LogisticRegression C=0.3")
    j.shot("v2-ready")
    with Traffic(live_server.url, secret) as traffic:
        j.move_alias("iris", "production", 2)
        j.shot("model", readme="model", until=page.locator("table").last)
        j.go(f"/deployments/{DEPLOYMENT}/")
        j.text("Canary: 25% of traffic to revision 2.", timeout=SLOW_MS)
        j.shot("canary-25")
        j.text("Canary: 50% of traffic to revision 2.", timeout=SLOW_MS)
        j.text("Revision 2 is healthy", timeout=SLOW_MS)
        j.status_badge("healthy")
        expect(page.locator("#deployment-status")).to_contain_text("r2: 100%")
        page.reload()
        j.shot("canary-done")
        assert Deployment.objects.get(name=DEPLOYMENT).version is None  # follows the alias

        # 8. One click back to the previous healthy revision: revision 3 serves v1 again.
        page.get_by_role("button", name="Roll back to previous healthy revision").click()
        j.text(f"Rolling '{DEPLOYMENT}' back.")
        j.text("Revision 3 is healthy", timeout=SLOW_MS)
        j.status_badge("healthy")
        expect(page.locator("#deployment-status")).to_contain_text("r3: 100%")
        traffic.until_served_by("3", tails)
    page.reload()
    row = page.locator("table tr", has_text="rollback to revision 1")
    expect(row).to_contain_text("v1")
    expect(row).to_contain_text("Active")
    j.shot("rolled-back", readme="deployment", until=page.locator(".timeline"))
    # Every request during the canary and the rollback was answered, by r1, r2, then r3.
    assert traffic.failures == [], traffic.failures[:5]
    assert {"1", "2", "3"} <= set(traffic.revisions), traffic.revisions
    d = Deployment.objects.get(name=DEPLOYMENT)
    current = d.revisions.get(number=d.revision)
    assert (d.revision, current.model_version.version, d.alias) == (3, 1, "production")

    # 9. All of it on the monitoring chart (1 h) and the dashboard.
    sent = 20 + len(traffic.revisions)
    _wait_for(f"the rollup of {sent} requests", lambda: (MinuteRollup.objects.aggregate(
        n=Sum("count"))["n"] or 0) >= sent, tails, every=rollup.delay)
    j.go(f"/monitoring/deployments/{DEPLOYMENT}/?range=1h")
    chart = _requests_on_chart(page)
    assert round(chart["drawn"]) == sent and chart["total"] == sent, (chart, sent)
    j.shot("monitoring-1h", readme="monitoring",
           until=page.locator("canvas[data-chart='latency']"))
    j.go("/")
    j.shot("dashboard-after", readme="dashboard")
    print(f"journey took {time.monotonic() - started:.0f} s")
