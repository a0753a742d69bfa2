"""Progress you can watch: a version's validation reports its steps (with a percent) and streams
the lines of its image build and its sandbox to the version page, the API (``events/?since=``)
and the CLI (``--watch``); a failure shows its reason and the last lines in all three.

Real Docker for the sandbox and the image build (the one serving image the suite shares; the
failed build uses a loopback package index, as tests/registry/test_model_environments.py does).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from registry import progress
from registry.models import ModelVersion, VersionEvent, VersionStatus
from tests.fixtures import bearer_client

from .conftest import example_json, zip_dir
from .test_model_environments import (  # noqa: F401 - fixtures
    index_files,
    model_zip,
    platform_index,
    removed_afterwards,
    sklearn_pin,
    stack_wheels,
)

pytestmark = [pytest.mark.django_db]
Kind = VersionEvent.Kind


def docker_test(test):
    for mark in (pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500),
                 pytest.mark.usefixtures("sandbox_image")):
        test = mark(test)
    return test


def register(user, capture, **fields):
    with capture(execute=True):
        return bearer_client(user).post("/api/v1/models/iris/versions/", fields,
                                        format="multipart")


def events(version: ModelVersion) -> list[VersionEvent]:
    return list(VersionEvent.objects.filter(version=version).order_by("id"))


def lines(version: ModelVersion) -> list[str]:
    return [line for e in events(version) if e.kind == Kind.LOG
            for line in e.message.splitlines()]


def broken_model(mlflow_model_dir: Path, tmp_path: Path) -> SimpleUploadedFile:
    """The iris MLflow model with a model.pkl that is not a pickle: it fails to load."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in mlflow_model_dir.iterdir():
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.pkl").write_bytes(b"this is not a pickle")
    return SimpleUploadedFile("broken.zip", zip_dir(broken), "application/zip")


# --- What a validation records ----------------------------------------------------------------
@docker_test
def test_a_validation_records_its_steps_build_lines_and_sandbox_output(
        iris, team_engineer, sklearn_pickle, django_capture_on_commit_callbacks):
    register(team_engineer, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("iris.joblib", sklearn_pickle), format="sklearn",
             input_example=example_json())
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.READY, version.status_message
    recorded = events(version)
    steps = [(e.progress, e.message) for e in recorded if e.kind == Kind.STEP]
    assert steps[0] == (10, "Preparing the sandbox.")
    assert steps[1][0] == 20 and steps[1][1].startswith("Preparing the model's environment")
    assert any(m.startswith("Serving image modelport/serving:") for _, m in steps)
    assert (60, "Loading the model in the sandbox (no network, read-only, non-root).") in steps
    assert steps[-1] == (80, "Storing the artifact.")
    assert [p for p, _ in steps] == sorted(p for p, _ in steps)
    logged = lines(version)
    assert any(re.match(r"image modelport/serving:[\w-]+ cached: reusing it", x) for x in logged)
    assert "[validate] converting the scikit-learn pickle into an MLflow model" in logged
    assert any(x.startswith("[validate] loaded the sklearn model in ") for x in logged)
    assert "[validate] the input example predicted fine" in logged
    assert recorded[-1].kind == Kind.READY and recorded[-1].progress == 100
    assert recorded[-1].message == version.status_message


@docker_test
@pytest.mark.django_db(transaction=True)
def test_the_sandboxs_output_is_visible_while_the_model_is_still_loading(
        iris, team_engineer, tmp_path, monkeypatch):
    """A model whose loading waits for a file the test writes only once it has read the
    model's own line from the version's events: the line arrived while it ran, not after."""
    import mlflow.pyfunc

    from registry.sandbox import platform_requirements
    from registry.tasks import validate_version

    class Waits(mlflow.pyfunc.PythonModel):  # local: pickled by value into the model
        def load_context(self, context):
            import time as clock
            from pathlib import Path as P

            go = P(context.artifacts["marker"]).parents[2] / "go"  # <job>/input/go
            print("model: loading, waiting for go", flush=True)
            for _ in range(2400):  # under the sandbox's 300 s limit
                if go.exists():
                    break
                clock.sleep(0.1)
            print("model: got go", flush=True)

        def predict(self, context, model_input):
            return [0] * len(model_input)

    marker = tmp_path / "marker.txt"
    marker.write_text("x")
    model_dir = tmp_path / "waits"
    mlflow.pyfunc.save_model(str(model_dir), python_model=Waits(),
                             artifacts={"marker": str(marker)},
                             pip_requirements=platform_requirements())
    # The test runs the validation task itself, in a thread, as a worker would.
    monkeypatch.setattr("registry.services._enqueue_validation", lambda _pk: None)
    response = bearer_client(team_engineer).post(
        "/api/v1/models/iris/versions/",
        {"file": SimpleUploadedFile("waits.zip", zip_dir(model_dir)), "format": "mlflow"},
        format="multipart")
    assert response.status_code == 202, response.content
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.PENDING
    go = Path(version.staging_dir) / "input" / "go"
    worker = threading.Thread(target=validate_version, args=(version.pk,), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 600
        while "model: loading, waiting for go" not in lines(version):
            assert worker.is_alive(), "validation ended before the model's line was seen"
            assert time.monotonic() < deadline, lines(version)
            time.sleep(0.2)
        version.refresh_from_db()
        assert version.status == VersionStatus.VALIDATING
        assert version.progress == 60
        assert "model: got go" not in lines(version)
    finally:
        go.write_text("go")
        worker.join(timeout=600)
    version.refresh_from_db()
    assert version.status == VersionStatus.READY, version.status_message
    assert lines(version).index("model: loading, waiting for go") < \
        lines(version).index("model: got go")


# --- A failure: the reason and the last lines, in the API, the page and the CLI ---------------
@docker_test
def test_a_failed_validation_shows_the_reason_and_the_last_lines_in_the_api_and_page(
        iris, team_engineer, mlflow_model_dir, tmp_path, django_capture_on_commit_callbacks):
    register(team_engineer, django_capture_on_commit_callbacks,
             file=broken_model(mlflow_model_dir, tmp_path), format="mlflow")
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    api = bearer_client(team_engineer)

    body = api.get("/api/v1/models/iris/versions/1/").json()
    assert body["status_message"].startswith("The model failed to load:")
    assert any(x.startswith("[validate] failed at the load stage:") for x in body["log_tail"])
    assert len(body["log_tail"]) <= progress.TAIL_LINES

    listed = api.get("/api/v1/models/iris/versions/1/events/").json()
    assert listed["count"] == len(events(version))
    results = listed["results"]
    assert [e["id"] for e in results] == sorted(e["id"] for e in results)
    assert results[-1]["kind"] == "failed"
    assert results[-1]["message"] == body["status_message"]
    # Following: only what came after the last id seen, oldest first, page by page.
    middle = results[len(results) // 2]["id"]
    after = api.get(f"/api/v1/models/iris/versions/1/events/?since={middle}&page_size=2").json()
    assert after["count"] == len([e for e in results if e["id"] > middle])
    assert [e["id"] for e in after["results"]] == [e["id"] for e in results
                                                    if e["id"] > middle][:2]
    assert after["next"] is not None or after["count"] <= 2

    client = Client()
    client.force_login(team_engineer)
    page = client.get("/models/iris/versions/1/").content.decode()
    assert "The model failed to load:" in page
    assert "[validate] failed at the load stage:" in page
    assert 'id="version-log-lines"' in page and 'class="log-failed"' in page
    assert 'hx-get="/models/iris/versions/1/events/' not in page  # over: nothing to follow
    fragment = client.get(f"/models/iris/versions/1/events/?since={middle}").content.decode()
    assert 'class="log-failed"' in fragment and 'hx-swap-oob="true"' in fragment
    assert client.get("/models/iris/versions/1/events/?since=x").status_code == 400


@docker_test
def test_a_failed_image_build_shows_the_reason_and_the_last_build_lines(
        iris, team_engineer, mlflow_model_dir, index_files, tmp_path,  # noqa: F811
        docker_client, django_capture_on_commit_callbacks):
    from tests.pkgindex import make_wheel

    # A wheel pip downloads but refuses to install: it would write outside site-packages.
    make_wheel(index_files, "victim-bad", "1.0", files={"../escape.py": "x = 1\n",
                                                      "victim_bad/__init__.py": ""})
    requirements = [sklearn_pin(), "victim-bad==1.0"]
    with platform_index(index_files), removed_afterwards(docker_client, requirements):
        register(team_engineer, django_capture_on_commit_callbacks,
                 file=model_zip(mlflow_model_dir, tmp_path, requirements), format="mlflow")
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    assert "the model's environment could not be built" in version.status_message
    recorded = events(version)
    steps = [e.message for e in recorded if e.kind == Kind.STEP]
    assert any(s.startswith("Fetching the environment's wheels") for s in steps)
    assert any(s.startswith("Building the serving image modelport/serving:") for s in steps)
    logged = lines(version)
    assert any(re.match(r"Step \d+/\d+ : ", x) for x in logged)  # docker build, streamed
    assert any("outside the target directory" in x for x in logged)
    assert recorded[-1].kind == Kind.FAILED
    assert recorded[-1].message == version.status_message
    tail = bearer_client(team_engineer).get("/api/v1/models/iris/versions/1/").json()["log_tail"]
    assert any("outside the target directory" in x or "non-zero code" in x for x in tail)
    client = Client()
    client.force_login(team_engineer)
    page = client.get("/models/iris/versions/1/").content.decode()
    assert "the model&#x27;s environment could not be built" in page
    assert "Building the serving image modelport/serving:" in page


@docker_test
@pytest.mark.django_db(transaction=True)
def test_the_cli_streams_a_validation_and_exits_non_zero_when_it_failed(
        iris, team_engineer, mlflow_model_dir, sklearn_pickle, tmp_path, live_server, capsys,
        django_capture_on_commit_callbacks):
    from modelport import cli

    from tests.factories import make_token

    register(team_engineer, django_capture_on_commit_callbacks,
             file=broken_model(mlflow_model_dir, tmp_path), format="mlflow")
    base = ["--url", live_server.url, "--token", make_token(team_engineer, name="cli")[1]]
    assert cli.main([*base, "models", "versions", "iris", "1", "--watch"]) == 10
    out, err = capsys.readouterr()
    assert "[ 10%] Preparing the sandbox." in out
    assert "[ 60%] Loading the model in the sandbox" in out
    assert "       [validate] failed at the load stage:" in out
    assert "[FAIL] The model failed to load:" in out
    assert "error: iris v1 failed: The model failed to load:" in err

    assert cli.main([*base, "models", "versions", "iris", "1"]) == 10
    out, _ = capsys.readouterr()
    assert "iris v1: failed (100%) The model failed to load:" in out
    assert "last lines of its validation log:" in out and "[validate] failed at the load" in out

    # register --wait streams a good version's validation the same way, and exits 0.
    model = tmp_path / "iris.joblib"
    model.write_bytes(sklearn_pickle)
    assert cli.main([*base, "models", "register", "iris", str(model), "--format", "sklearn",
                     "--input-example", example_json(), "--wait"]) == 0
    out, _ = capsys.readouterr()
    assert "[validate] loaded the sklearn model in " in out
    assert "[ OK ] Validated in the sandbox." in out
    assert out.rstrip().endswith("…)") and "iris v2 is ready" in out

    assert cli.main([*base, "--json", "models", "versions", "iris", "1", "--watch"]) == 10
    out, err = capsys.readouterr()
    assert out == "" and "[FAIL] The model failed to load:" in err  # lines on stderr


# --- Without Docker, and when something unexpected breaks ------------------------------------
def test_an_unsandboxed_validation_streams_the_subprocesss_output_too(
        iris, team_engineer, sklearn_pickle, settings, django_capture_on_commit_callbacks):
    settings.MODELPORT_RUNTIME = "local"  # the resource-limited subprocess, no Docker
    register(team_engineer, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("iris.joblib", sklearn_pickle), format="sklearn",
             input_example=example_json())
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.READY, version.status_message
    steps = [(e.progress, e.message) for e in events(version) if e.kind == Kind.STEP]
    assert (60, "Loading the model unsandboxed (no Docker here): a resource-limited "
                "subprocess.") in steps
    assert "[validate] the input example predicted fine" in lines(version)
    assert events(version)[-1].kind == Kind.READY


def test_an_unexpected_error_after_the_sandbox_fails_the_version_never_leaves_it_validating(
        iris, team_engineer, sklearn_pickle, settings, monkeypatch,
        django_capture_on_commit_callbacks):
    settings.MODELPORT_RUNTIME = "local"

    def disk_full(_model_dir):  # injected: a full disk cannot be arranged here
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("registry.storage.store_model_dir", disk_full)
    register(team_engineer, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("iris.joblib", sklearn_pickle), format="sklearn",
             input_example=example_json())
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    assert version.status_message.startswith("Validation could not run: OSError:")
    recorded = events(version)
    assert recorded[-1].kind == Kind.FAILED
    assert recorded[-1].message == version.status_message
    assert (80, "Storing the artifact.") in [(e.progress, e.message) for e in recorded
                                             if e.kind == Kind.STEP]


def test_a_second_run_says_whether_it_is_a_retry_or_an_interrupted_one(pending_version):
    first = progress.VersionLog(pending_version.pk)
    first.start("Preparing the sandbox.")
    first("a line, then the worker was killed")
    progress.VersionLog(pending_version.pk).start("Preparing the sandbox.")
    again = progress.VersionLog(pending_version.pk)
    again.finish(ok=False, message="Validation could not run: Docker is down")
    progress.VersionLog(pending_version.pk).start("Preparing the sandbox.")
    notes = [e.message for e in events(pending_version) if e.kind == Kind.INFO]
    assert notes[0].startswith("Validation started again: the previous attempt was "
                               "interrupted")
    assert notes[1].startswith("Validation started again (Retry)")


def test_a_retried_version_keeps_the_failed_attempts_log_then_follows_the_new_one(
        iris, team_engineer, mlflow_model_dir, settings, django_capture_on_commit_callbacks):
    import json
    import shutil

    from registry import mlmodel

    settings.MODELPORT_RUNTIME = "local"
    staging = Path(settings.MODELPORT_DATA_DIR) / "staging" / "kept"
    shutil.copytree(mlflow_model_dir, staging / "input" / "model")
    metadata = mlmodel.read_metadata(staging / "input" / "model")
    (staging / "input" / "job.json").write_text(json.dumps(
        {"format": "mlflow", "input_example": metadata.input_example}))
    reason = "Validation could not run: the model's environment could not be built: no wheel"
    version = ModelVersion.objects.create(
        model=iris, version=1, status=VersionStatus.FAILED, source_format="mlflow",
        requirements=metadata.requirements, staging_dir=str(staging), status_message=reason,
        created_by=team_engineer)
    earlier = progress.VersionLog(version.pk)
    earlier.start("Preparing the sandbox.")
    earlier("ERROR: No matching distribution found for nothing-here==1.0")
    earlier.finish(ok=False, message=reason)

    client = Client()
    client.force_login(team_engineer)
    page = client.get("/models/iris/versions/1/").content.decode()
    assert "Retry: validate it again" in page  # both: the Retry button and the log
    assert "No matching distribution found for nothing-here" in page
    status = client.get("/models/iris/versions/1/", HTTP_HX_REQUEST="true").content.decode()
    assert "Retry: validate it again" in status and "The validation log" in status

    with django_capture_on_commit_callbacks(execute=True):
        response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/1/retry/")
    assert response.status_code == 202, response.content
    version.refresh_from_db()
    assert version.status == VersionStatus.READY, version.status_message
    recorded = events(version)
    kinds = [e.kind for e in recorded]
    assert kinds.count(Kind.FAILED) == 1 and kinds[-1] == Kind.READY
    retried = next(i for i, e in enumerate(recorded) if e.kind == Kind.INFO)
    assert recorded[retried].message.startswith("Validation started again (Retry)")
    assert kinds.index(Kind.FAILED) < retried
    assert "[validate] loading the model" in [
        line for e in recorded[retried:] if e.kind == Kind.LOG for line in e.message.splitlines()]


def test_waiting_for_another_build_of_the_same_image_is_said_in_the_log(tmp_path):
    import fcntl

    from workers.runtimes.images import ImageBuilder

    builder = ImageBuilder(None, "modelport/base:test", lock_dir=tmp_path)
    tag = "modelport/serving:abc-def"
    said: list[str] = []
    with open(tmp_path / "build-modelport_serving_abc-def.lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # another worker is building this tag
        entered = threading.Event()

        def build() -> None:
            with builder._locked(tag, said.append):
                entered.set()

        waiting = threading.Thread(target=build, daemon=True)
        waiting.start()
        deadline = time.monotonic() + 60
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said == [f"waiting for another build of {tag} (another worker)"]
        assert not entered.is_set()
        fcntl.flock(other, fcntl.LOCK_UN)
    waiting.join(timeout=60)
    assert entered.is_set()
    assert progress._stage(said[0]) == (
        30, f"Waiting for another build of the same serving image {tag} (it is then reused).")


# --- The log itself: bounded, clean, steps from the build's own lines -------------------------
@pytest.fixture
def pending_version(iris, team_engineer):
    return ModelVersion.objects.create(model=iris, version=1, source_format="mlflow",
                                       status=VersionStatus.VALIDATING, created_by=team_engineer)


def test_a_versions_log_keeps_its_last_lines_within_the_limit(pending_version, settings):
    settings.MODELPORT_VERSION_LOG_LINES = 100
    log = progress.VersionLog(pending_version.pk)
    for i in range(1000):
        log(f"line {i}")
    log.finish(ok=False, message="boom")
    kept = lines(pending_version)
    assert 100 <= len(kept) <= 100 + progress.trim_slack()
    assert kept[-1] == "line 999" and "line 0" not in kept
    notes = [e.message for e in events(pending_version) if e.kind == Kind.INFO]
    assert len(notes) == 1 and "keeps its last 100 log lines" in notes[0]
    # A second run of the same validation (its worker was killed) continues the same bound.
    again = progress.VersionLog(pending_version.pk)
    again.start("Preparing the sandbox.")
    for i in range(300):
        again(f"again {i}")
    assert len(lines(pending_version)) <= 100 + progress.trim_slack()
    notes = [e.message for e in events(pending_version) if e.kind == Kind.INFO]
    assert len(notes) == 2 and "Validation started again" in notes[1]


def test_log_lines_lose_terminal_escapes_and_control_characters_and_are_cut(pending_version):
    log = progress.VersionLog(pending_version.pk)
    log("\x1b[31mred\x1b[0m text\x00 with a NUL\x07\r\nsecond\tline\n\n   \n")
    log("x" * 5000)
    kept = lines(pending_version)
    assert kept[:2] == ["red text with a NUL", "second    line"]
    assert len(kept[2]) == progress.LINE_MAX and kept[2].endswith("…")


def test_the_image_builds_own_lines_become_steps_and_move_the_percent(pending_version):
    log = progress.VersionLog(pending_version.pk)
    log("fetching wheels for CPython 3.11 (x86_64, glibc 2.36) from the host's pip index")
    log("building modelport/serving:abc123 FROM modelport/base:1 with 2 requirement(s), "
        "12 wheel(s), no network")
    log("Step 3/6 : RUN /opt/wheels.sh")
    pending_version.refresh_from_db()
    assert pending_version.progress == 46  # 35 % + half of the build's stretch
    log("built modelport/serving:abc123 in 41.2s")
    steps = [(e.progress, e.message) for e in events(pending_version) if e.kind == Kind.STEP]
    assert steps == [
        (25, "Fetching the environment's wheels (pip download, wheels only)."),
        (35, "Building the serving image modelport/serving:abc123 (no network, as uid 10001)."),
        (58, "Built the serving image modelport/serving:abc123 in 41.2s.")]
    pending_version.refresh_from_db()
    assert pending_version.progress == 58
    assert pending_version.status_message == steps[-1][1]


def test_events_api_checks_visibility_and_its_cursor(pending_version, team_engineer):
    log = progress.VersionLog(pending_version.pk)
    log.start("Preparing the sandbox.")
    log("one")
    api = bearer_client(team_engineer)
    first = api.get("/api/v1/models/iris/versions/1/events/").json()["results"]
    assert [e["kind"] for e in first] == ["step", "log"]
    assert first[0] == {"id": first[0]["id"], "kind": "step", "progress": 10,
                        "message": "Preparing the sandbox.",
                        "created_at": first[0]["created_at"]}
    last = first[-1]["id"]
    assert api.get(f"/api/v1/models/iris/versions/1/events/?since={last}").json()["count"] == 0
    log("two")
    newer = api.get(f"/api/v1/models/iris/versions/1/events/?since={last}").json()["results"]
    assert [e["message"] for e in newer] == ["two"]
    assert api.get("/api/v1/models/iris/versions/1/events/?since=-1").status_code == 400
    assert api.get("/api/v1/models/iris/versions/9/events/").status_code == 404

    from tests.factories import UserFactory

    outsider = bearer_client(UserFactory(username="otto"))
    assert outsider.get("/api/v1/models/iris/versions/1/events/").status_code == 404
    client = Client()
    client.force_login(UserFactory(username="olga"))
    assert client.get("/models/iris/versions/1/events/").status_code == 404


def test_the_version_page_follows_a_running_validation(pending_version, team_engineer):
    log = progress.VersionLog(pending_version.pk)
    log.start("Preparing the sandbox.")
    log("pip: fetched numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    client = Client()
    client.force_login(team_engineer)
    page = client.get("/models/iris/versions/1/").content.decode()
    last = VersionEvent.objects.filter(version=pending_version).order_by("-id").first().pk
    assert "pip: fetched numpy-2.1.0" in page and "10 %</span> Preparing the sandbox." in page
    assert f'hx-get="/models/iris/versions/1/events/?since={last}"' in page
    assert 'hx-target="#version-log-lines"' in page and 'hx-swap="beforeend"' in page
    log("next line")
    fragment = client.get(f"/models/iris/versions/1/events/?since={last}").content.decode()
    assert "next line" in fragment and "pip: fetched" not in fragment
    newest = VersionEvent.objects.filter(version=pending_version).order_by("-id").first().pk
    assert f"since={newest}" in fragment and 'hx-swap-oob="true"' in fragment
    log.finish(ok=True, message="Validated in the sandbox.")
    ModelVersion.objects.filter(pk=pending_version.pk).update(status=VersionStatus.READY)
    done = client.get(f"/models/iris/versions/1/events/?since={newest}").content.decode()
    assert "Validated in the sandbox." in done and "hx-get" not in done  # the poller stops
