"""Every fenced command block of docs/client.md, docs/serving.md and docs/ci-example.md, run as
written.

The blocks run in order (``docs_blocks``: shell with ``bash -e -o pipefail``, Python with the
interpreter the first block installed the client into, a CI job's ``script:`` lines as one bash
script) against a live platform: the live test server plus the ``Procfile``'s real Celery
workers and beat, validation in the real sandbox and replicas as real Docker containers, as in
``tests/e2e/test_model_journey.py``. Each block must exit as the page says: 0, or the code of an
``<!-- exit: N -->`` marker; ``<!-- not-run: reason -->`` blocks are listed with their reason.

The environment the pages document: ``MODELPORT_URL`` (the live server) and ``MODELPORT_TOKEN``
(alice's, a maintainer of team ``demo``; for the CI job ci-bot's, an engineer of ``risk``), a
working directory with ``iris.zip``, ``model.joblib`` and ``example.json`` (client.md) or the
training repository (ci-example.md: ``requirements.txt``, ``train.py``, the Modelport checkout at
``./modelport``), and a fresh virtualenv on ``PATH`` where ``pip install ./client`` installs this
checkout's client (the test's own packages visible through a ``.pth`` file, as a CI image would
have the project's requirements).
"""

from __future__ import annotations

import contextlib
import json
import os
import site
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployments.models import Deployment
from teams import services as teams
from tests.e2e.test_model_journey import COLUMNS, ROWS, iris_zip
from tests.factories import PASSWORD, AdminFactory, UserFactory, make_token
from tests.procs import database_url, stop_processes

from .docs_blocks import Block, blocks

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Replica ports for this test only: away from the dev default and the other Docker tests'.
PORT_RANGE = "23000-23499"
DEPLOYMENTS = ("iris-prod", "iris-staging", "fraud-canary")
BLOCK_TIMEOUT_S = 900


# --- the platform ---------------------------------------------------------------------------------




@pytest.fixture
def platform(live_server, redis_url, docker_client, platform_serving_image, settings,
             tmp_path) -> Iterator[Callable[[], str]]:
    """The live server, two real workers (default queue: validation; ``deployments``: the
    reconciler) and beat. Yields a function returning their log tails, for failure messages."""
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
    })
    commands = {
        name: [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
               "--concurrency", "1", "--without-gossip", "--without-mingle",
               "--hostname", f"docs-{name}@%h", "-Q", queue]
        for name, queue in (("worker", "celery"), ("reconciler", "deployments"))}
    # Beat: a canary's next step (past MODELPORT_RECONCILE_SECONDS) comes with its tick.
    commands["beat"] = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel",
                        "INFO", "--schedule", str(tmp_path / "beat-schedule")]
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[name].open("w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
                 for name, command in commands.items()]

    def tails() -> str:
        return "\n".join(f"--- {name} ---\n{path.read_text()[-3000:]}"
                         for name, path in logs.items())

    try:
        yield tails
    finally:
        stop_processes(processes)
        app.conf.task_always_eager, app.conf.task_eager_propagates = eager
        for name in DEPLOYMENTS:
            for container in docker_client.containers.list(
                    all=True, filters={"label": f"modelport.deployment={name}"}):
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)
        routes.invalidate()


# --- the reader's machine -------------------------------------------------------------------------
@pytest.fixture
def venv(tmp_path) -> Path:
    """A fresh virtualenv for ``pip install ./client``; this interpreter's packages visible
    behind its own (a ``.pth`` file), so the install needs no index and the shared
    environment is never touched."""
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(target)],
                   check=True)
    found = subprocess.run([str(target / "bin" / "python"), "-c",
                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    Path(found, "parent-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return target


def reader_env(venv: Path, home: Path, url: str, token: str,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELPORT_", "DJANGO_", "PYTEST_", "VIRTUAL_ENV"))}
    env.update({"PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
                "VIRTUAL_ENV": str(venv), "HOME": str(home), "PIP_NO_INPUT": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(extra or {}),
                "MODELPORT_URL": url, "MODELPORT_TOKEN": token})
    env.pop("PYTHONPATH", None)
    env.pop("XDG_CONFIG_HOME", None)
    return env


# A page's shell blocks share their variables, as in one terminal: each block starts from the
# variables the ones before it left (every assignment exported, ``set -a``), saved on success.
CARRY = ('[ -f "$MP_DOCS_STATE" ] && . "$MP_DOCS_STATE"\n'
         'trap \'[ $? = 0 ] && export -p > "$MP_DOCS_STATE"\' EXIT\nset -a\n')


def run_block(block: Block, cwd: Path, env: dict[str, str], venv: Path,
              stdin: str = "") -> subprocess.CompletedProcess:
    if block.lang == "python":
        command = [str(venv / "bin" / "python"), "-c", block.text]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", CARRY + block.text]
    # A new session: no controlling terminal, so a password prompt reads stdin (getpass).
    return subprocess.run(command, cwd=cwd, env={**(block.env or {}), **env}, input=stdin,
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S,
                          start_new_session=True)


def run_page(page: Path, cwd: Path, env: dict[str, str], venv: Path, tails: Callable[[], str],
             stdin: Callable[[Block], str] = lambda block: "",
             ) -> tuple[list[str], dict[str, str]]:
    """Run the page's blocks in order: the not-run ones' reasons (printed) and the others'
    standard outputs by their text."""
    skipped: list[str] = []
    outputs: dict[str, str] = {}
    state = cwd / f".{page.stem}.shell-state"
    state.unlink(missing_ok=True)
    env = {**env, "MP_DOCS_STATE": str(state)}
    for block in blocks(page):
        if block.not_run:
            skipped.append(f"{block.where}: not run: {block.not_run}")
            continue
        done = run_block(block, cwd, env, venv, stdin(block))
        outputs[block.text] = done.stdout
        assert done.returncode == block.exit_code, (
            f"{block.where} exited {done.returncode}, the page says {block.exit_code}\n"
            f"--- block ---\n{block.text}\n--- stdout ---\n{done.stdout[-4000:]}\n"
            f"--- stderr ---\n{done.stderr[-6000:]}\n{tails()}")
    print("\n".join(skipped))
    return skipped, outputs


def joblib_model(path: Path) -> None:
    """The iris estimator of ``iris.zip``, pickled (``--format sklearn``)."""
    import joblib
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    joblib.dump(LogisticRegression(max_iter=300).fit(pd.DataFrame(data.data, columns=COLUMNS),
                                                     data.target), path)


def test_docs_client_md_runs_as_written(platform, venv, tmp_path):
    admin = AdminFactory(username="docs-admin")
    alice = UserFactory(username="alice")
    team = teams.create_team(actor=admin, slug="demo", name="Demo")
    teams.add_member(actor=admin, team=team, username="alice", role="maintainer")
    _, token = make_token(alice, name="docs")
    work = tmp_path / "work"
    work.mkdir()
    (work / "client").symlink_to(ROOT / "client")
    iris_zip(tmp_path, "iris-model", 1.0).rename(work / "iris.zip")
    joblib_model(work / "model.joblib")
    (work / "example.json").write_text(json.dumps({"columns": COLUMNS, "data": ROWS[:2]}))
    config = tmp_path / "home" / ".config" / "modelport" / "config.json"
    from django.conf import settings

    # The page's first block installs the wheel the platform serves. This venv sees the test's
    # own packages (where the client is installed already, same version), so pip would call it
    # satisfied and put no `modelport` on PATH: force the install, deps from those packages.
    env = reader_env(venv, tmp_path / "home", settings.MODELPORT_BASE_URL, token,
                     extra={"PIP_FORCE_REINSTALL": "1", "PIP_NO_DEPS": "1"})
    skipped, outputs = run_page(
        DOCS / "client.md", work, env, venv, platform,
        stdin=lambda block: PASSWORD + "\n" if "login" in block.text else "")
    # only the browser sign-in (tests/e2e/test_cli_login_journey.py runs it) and the MLflow import
    reasons = [line.split(": not run: ")[1] for line in skipped]
    assert [line.split(":")[0] for line in skipped] == ["client.md", "client.md"], skipped
    assert "person at a browser" in reasons[0] and "MLflow" in reasons[1], skipped
    installed = next(venv.glob("lib/python*/site-packages/modelport_client-*.dist-info"))
    assert "/client/modelport_client-" in (installed / "direct_url.json").read_text()  # served
    python = next(out for text, out in outputs.items() if "mp.predict(" in text)
    assert "'predictions': [0]" in python, python  # iris-prod answered
    cli = next(out for text, out in outputs.items() if "modelport predict" in text)
    assert '"predictions": [\n    0\n  ]' in cli, cli  # and iris-staging
    served = {d.name: d.status for d in Deployment.objects.all()}
    assert served == {"iris-prod": "healthy", "iris-staging": "healthy"}, served
    assert Deployment.objects.get(name="iris-prod").version.version == 2  # promoted
    # serving.md calls iris-prod through the gateway: MLflow's formats, v2, tritonclient
    skipped, outputs = run_page(DOCS / "serving.md", work, env, venv, platform)
    # a server started by hand; three benchmarks (the serving one, the flavors one and the flavor
    # images one: minutes each, their figures on the page); and the Flavors section's calls of
    # models that only tests/flavors/ deploy (marked "not-run: tests/flavors/…").
    by_hand = [s for s in skipped if "not run: tests/flavors/" not in s]
    benches = [s for s in by_hand if "not run: a benchmark" in s or "not run: builds Docker" in s]
    assert len(by_hand) == 4 and len(benches) == 3, skipped
    formats = next(out for text, out in outputs.items() if "dataframe_records" in text)
    assert formats.count('"predictions"') == 5 and '"outputs"' in formats, formats
    assert next(out for text, out in outputs.items() if "requests.post" in text) == "[0]\n"
    triton = next(out for text, out in outputs.items() if "tritonclient" in text)
    assert triton.startswith("[0 2]\nTrue\n"), triton
    saved = json.loads(config.read_text())  # `modelport login` wrote the config, 0600
    assert saved["url"] == settings.MODELPORT_BASE_URL and saved["token"].startswith("mpt_")
    assert oct(config.stat().st_mode & 0o777) == "0o600"


TRAIN = textwrap.dedent('''
    """The training repository's script, as ci-example.md assumes it: an MLflow model in
    --out and its metrics in metrics.json."""
    import argparse, json, pathlib, shutil
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = pathlib.Path(parser.parse_args().out)
    shutil.rmtree(out, ignore_errors=True)
    data = load_iris()
    frame = pd.DataFrame(data.data, columns={columns!r})
    model = LogisticRegression(max_iter=300).fit(frame, data.target)
    mlflow.sklearn.save_model(
        model, str(out), signature=infer_signature(frame, model.predict(frame)),
        input_example=frame.head(3), pip_requirements={requirements!r},
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    pathlib.Path("metrics.json").write_text(json.dumps(
        {{"accuracy": float(model.score(frame, data.target))}}))
''')


def test_docs_ci_example_md_runs_as_written(platform, venv, tmp_path):
    """A first CI run (no model, no deployment yet) exits 0, and so does a second one (both
    exist; a new version rolls out)."""
    from django.conf import settings

    from registry.sandbox import platform_requirements

    admin = AdminFactory(username="docs-admin")
    bot = UserFactory(username="ci-bot")
    team = teams.create_team(actor=admin, slug="risk", name="Risk")
    teams.add_member(actor=admin, team=team, username="ci-bot", role="engineer")
    _, token = teams.create_token(actor=bot, name="ci", expires_in_days=90)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "modelport").symlink_to(ROOT)
    (repo / "requirements.txt").write_text("# the training job's own packages\n")
    (repo / "train.py").write_text(TRAIN.format(columns=COLUMNS,
                                                requirements=platform_requirements()))
    env = reader_env(venv, tmp_path / "home", settings.MODELPORT_BASE_URL, token,
                     {"CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567"})
    for _ in range(2):
        skipped, _ = run_page(DOCS / "ci-example.md", repo, env, venv, platform)
    assert len(skipped) == 1  # the curl that asks for a password
    deployment = Deployment.objects.get(name="fraud-canary")
    assert deployment.status == "healthy" and deployment.revision >= 2
    assert deployment.model.versions.count() == 2
