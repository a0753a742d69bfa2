"""Schemathesis against a live Modelport: the OpenAPI schema tells the truth, the server never 500s.

What runs: the real Django app under gunicorn (production settings) on a loopback port, on the
test PostgreSQL database, seeded by ``live_api.seed`` (a platform admin, a team with a member of
each role, models with ready and failed versions and aliases, a pending alias transition,
deployments — one shadowing — with revisions, replicas and events, alert rules and a firing
alert, a quota, pending resource requests, execution targets). Schemathesis (its CLI, as CI would
run it by hand) reads ``/api/v1/schema/`` and tests every operation with every check
(``--checks all``), a bounded number of examples per operation and a fixed seed, authenticated
with the admin's Bearer token (the ingest endpoint with the deployment's ingest token).

Why nothing starts for real: gunicorn gets no REDIS_URL, so Celery uses the embedded broker (a
Redis server on a socket in the test's data dir) and no worker consumes it — validations, image
builds and reconciles that operations enqueue are recorded and never run, and no container
starts. The seeded
execution targets point at a loopback port nothing listens on (``tcp://127.0.0.1:9``) and so
does the MLflow tracking URI, so reading a replica's logs or a target's health answers "not
reachable" without touching this machine's Docker Engine. No traffic leaves loopback.

Checks: all of them (schemathesis enables every check by default; ``--checks all`` is not
passed because an option on the command line would override the per-operation exceptions in the
config file) — except ``max_response_time``, a timing assertion, which needs a limit and is not
given one. Switched off, each for a stated reason (``CHECKS_OFF``): ``use_after_free`` on a
revoked token's read (DELETE revokes, the record stays), and ``positive_data_acceptance`` —
"a request valid by the schema is accepted" — where the server rightly refuses some
schema-valid requests for a reason JSON Schema cannot state: a relation between two fields or
parameters, a relation to stored state or the clock, or the contents of an uploaded file. The
refusals there are 400s with a message naming the field (documented in the schema); every other
check still runs on those operations.

The known bugs other work fixes (OPTIONS on alias and quota routes, ``/alert-rules/null,null/``,
the ingest endpoint's deep JSON) are deliberately not excluded: this test fails until they are
fixed.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.config.live_api import gunicorn, schemathesis_config, seed

MAX_EXAMPLES = 25
SEED = 24

_STATE = "a relation to stored state or the clock"
_PAIR = "a relation between two fields"
CHECKS_OFF: dict[tuple[str, str], tuple[list[str], str]] = {
    ("POST", "/api/v1/jobs/"): (
        ["positive_data_acceptance"], f"{_PAIR}: version or alias, input or input_uri; the "
                                      "contents of the uploaded file (its columns against the "
                                      "version's signature)"),
    ("POST", "/api/v1/job-schedules/"): (
        ["positive_data_acceptance"], f"{_PAIR}: version or alias; {_STATE}: input_uri names "
                                      "a stored object of the team, a name not taken"),
    ("PATCH", "/api/v1/job-schedules/{id}/"): (
        ["positive_data_acceptance"], f"{_PAIR}: version or alias; {_STATE}: a name not taken"),
    ("POST", "/api/v1/deployments/"): (
        ["positive_data_acceptance"], f"{_PAIR}: version or alias, not both; a strategy's keys "
                                      "depend on its type (steps only for canary…)"),
    ("PATCH", "/api/v1/deployments/{name}/"): (
        ["positive_data_acceptance"], f"{_PAIR}: version or alias, not both; strategy keys by "
                                      "type; a followed alias needs no version"),
    ("POST", "/api/v1/deployments/{name}/promote/"): (
        ["positive_data_acceptance"], f"{_PAIR}: a strategy's keys depend on its type"),
    ("GET", "/api/v1/deployments/{name}/metrics/"): (
        ["positive_data_acceptance"], f"{_PAIR} and {_STATE}: start before end, at most 400 "
                                      "days back from end (default now), at most 1440 points"),
    ("GET", "/api/v1/deployments/{name}/drift/"): (
        ["positive_data_acceptance"], f"{_PAIR} and {_STATE}: start before end, at most 400 "
                                      "days back from end (default now)"),
    ("POST", "/api/v1/resource-requests/"): (
        ["positive_data_acceptance"], f"{_PAIR} and {_STATE}: some CPU, memory or GPUs; a GPU "
                                      "model only with GPUs and only one the platform has; "
                                      "expires_at in the future"),
    ("POST", "/api/v1/resource-requests/{id}/approve/"): (
        ["positive_data_acceptance"], f"{_STATE}: at most what the request asked, and "
                                      "something"),
    ("POST", "/api/v1/targets/"): (
        ["positive_data_acceptance"], f"{_PAIR}: the kind decides which fields apply; a "
                                      "default target must be enabled"),
    ("PATCH", "/api/v1/targets/{name}/"): (
        ["positive_data_acceptance"], f"{_PAIR} and {_STATE}: the kind decides which fields "
                                      "apply; the name cannot change; the default stays enabled"),
    ("POST", "/api/v1/models/{model_name}/versions/"): (
        ["positive_data_acceptance"], "file contents: an MLflow model archive or a scikit-learn "
                                      "pickle, an input example that is JSON"),
    ("PUT", "/api/v1/models/{model_name}/versions/{version}/reference/"): (
        ["positive_data_acceptance"], "file contents: a CSV or Parquet sample"),
    ("POST", "/api/v1/alert-rules/{id}/silence/"): (
        ["positive_data_acceptance"], f"{_STATE}: until in the future, at most 30 days ahead"),
    ("POST", "/api/v1/alerts/{id}/acknowledge/"): (
        ["positive_data_acceptance"], f"{_STATE}: only a firing alert, and only once (409)"),
    ("POST", "/api/v1/cli-login/"): (
        ["positive_data_acceptance"], f"{_STATE}: a code the portal issued (unused, not "
                                      "expired) and the verifier of its challenge"),
    ("POST", "/api/v1/consumer-keys/"): (
        ["positive_data_acceptance"], f"{_STATE}: deployments named are the team's, an active "
                                      "key name not taken, expires_at in the future"),
    ("PATCH", "/api/v1/consumer-keys/{id}/"): (
        ["positive_data_acceptance"], f"{_STATE}: deployments named are the key's team's; a "
                                      "revoked key changes no more (409)"),
    ("GET", "/api/v1/consumer-keys/{id}/"): (
        ["use_after_free"], "DELETE revokes a consumer key rather than erasing it: it stays "
                            "readable with status revoked, like tokens"),
    # Reached once the seed held an autoscaled deployment (the stateful walk changed course).
    ("GET", "/api/v1/tokens/{id}/"): (
        ["use_after_free"], "DELETE revokes a token rather than erasing it: it stays readable "
                            "with status revoked, as the token list and the audit trail show "
                            "it (docs/devops.md); it authenticates nothing"),
}


def failures(ndjson: Path) -> list[str]:
    """One line per distinct failure (check, operation, status), with a request to replay."""
    seen: dict[tuple, str] = {}
    for line in ndjson.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if not finished or finished["status"] != "failure":
            continue
        recorder = finished["recorder"]
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                failure = check["failure_info"]["failure"]
                exchange = recorder.get("interactions", {}).get(case_id) or {}
                request, response = exchange.get("request", {}), exchange.get("response") or {}
                body = (response.get("content") or {}).get("$base64", "")
                key = (failure["code"], failure.get("operation") or recorder["label"],
                       response.get("status_code"))
                seen.setdefault(key, (
                    f"{key[0]} {failure['title']}: {key[1]} → {key[2]} [{finished['phase']}]\n"
                    f"    {failure['message'][:300]!r}\n"
                    f"    {request.get('method')} {request.get('uri')}\n"
                    f"    answer: {base64.b64decode(body)[:300]!r}"))
    return list(seen.values())


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path, settings,
                                                                    monkeypatch):
    from drf_spectacular.generators import SchemaGenerator

    # Seeding only: the deployments it creates are not reconciled in this process.
    monkeypatch.setattr("deployments.passes.enqueue_reconcile", lambda pk: None)
    seeded = seed(tmp_path / "seed")
    paths = list(SchemaGenerator().get_schema(request=None, public=True)["paths"])
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(
        seeded, paths, checks_off={op: checks for op, (checks, _) in CHECKS_OFF.items()}))
    report = tmp_path / "schemathesis.ndjson"
    st = Path(sys.executable).with_name("st")
    with gunicorn(settings.MODELPORT_DATA_DIR, log=tmp_path / "gunicorn.log",
                  secret_key=seeded.secret_key) as url:
        run = subprocess.run(
            [str(st), "--config-file", str(config), "run", f"{url}/api/v1/schema/",
             "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
             "--workers", "1", "--generation-database", "none", "--no-color",
             "--report", "ndjson", "--report-ndjson-path", str(report)],
            cwd=tmp_path, capture_output=True, text=True, timeout=1500, check=False)
    found = failures(report) if report.exists() else []
    summary = Counter(line.split(" ", 1)[0] for line in found)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0 and not found, (
        f"schemathesis: {dict(summary)}\n\n" + "\n".join(found) + f"\n\n{tail}")
    operations = re.search(r"Operations:\s+(\d+) selected / (\d+) total", run.stdout)
    assert operations and operations[1] == operations[2] and int(operations[1]) > 0, tail
