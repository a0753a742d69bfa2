"""The command blocks of the other docs/ pages, run as written (see ``test_docs_run.py``).

Pages that need no replica (tokens, the audit log, platform settings, quotas) run against the
live test server alone: no workers, Docker or sandbox, so they cost a few seconds. The reader is
``alice``, a platform admin who maintains team ``ml-search``; ``MODELPORT_URL`` and
``MODELPORT_TOKEN`` are set as the pages say; the capacity registered first (a host with two
A100s and two T4s, as an admin does in the console) is what the quota page's GPU request names
and its quota change needs. ``curl -s`` exits 0 on an error answer, so the outputs are checked:
no error body (``detail``), and the state each block changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from compute import inventory
from monitoring.models import Alert, AlertRule
from quotas.models import ResourceRequest
from registry.models import RegisteredModel
from teams import services as teams
from teams.models import ApiToken, PlatformSettings
from tests.factories import PASSWORD, AdminFactory, make_token
from tests.monitoring.conftest import (
    ingest_direct,
    make_deployment,
    make_version,
    minutes_ago,
    record,
)

from .test_docs_run import DOCS, reader_env, run_page

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Pages whose every command block one of the tests below runs (``test_docs_blocks`` checks that
# each page's blocks are run by a test or marked not-run).
ACCOUNT_PAGES = ("software-engineer.md", "platform-engineer.md", "quotas.md", "monitoring.md")


def test_account_and_quota_pages_run_as_written(live_server, tmp_path):
    alice = AdminFactory(username="alice")
    team = teams.create_team(actor=alice, slug="ml-search", name="ML search")
    inventory.register_host(actor=alice, name="gpu-1", cpu=64, memory_mb=262144,
                            gpus=[("0", "A100-80GB"), ("1", "A100-80GB"), ("2", "T4"), ("3", "T4")])
    _, token = make_token(alice, name="docs")
    # monitoring.md's model and deployment, with one logged prediction (deployments.md's)
    churn = RegisteredModel.objects.create(name="churn", team=team, created_by=alice)
    deployment = make_deployment(team, churn, make_version(churn, 1))
    ingest_direct(deployment, [record(0, minutes_ago(5), request_id="order-1234")])
    # monitoring.md acknowledges the first firing alert: one that fired before the reader came
    paged = AlertRule.objects.create(deployment=deployment, name="paged", metric="error_rate",
                                     threshold=1, created_by=alice)
    firing = Alert.objects.create(rule=paged, state="firing", value=5.0, message="5 % errors",
                                  started_at=timezone.now())
    work = tmp_path / "work"
    work.mkdir()
    venv = Path(sys.executable).parents[1]  # only `python3` is used: the project's will do
    env = reader_env(venv, tmp_path / "home", live_server.url, token)
    outputs: dict[str, str] = {}
    for page in ACCOUNT_PAGES:
        skipped, out = run_page(DOCS / page, work, env, venv, lambda: "",
                                stdin=lambda block: PASSWORD + "\n" if "read -rsp" in block.text
                                else "")
        outputs.update(out)
        failed = {text: answer for text, answer in out.items() if '"detail":' in answer}
        assert not failed, failed
        # quotas' in-process Python; software-engineer's call through a consumer key (needs a
        # running replica: tests/gateway/test_consumer_keys_*.py call through keys)
        assert len(skipped) == (page in ("quotas.md", "software-engineer.md")), skipped

    made = next(out for text, out in outputs.items() if "/api/v1/tokens/" in text)
    assert json.loads(made)["token"].startswith("mpt_")  # the password worked
    assert ApiToken.objects.filter(user=alice, name="laptop").exists()
    listed = next(out for text, out in outputs.items() if "/api/v1/teams/" in text)
    assert "ml-search" in listed, listed
    audit = next(out for text, out in outputs.items() if "/api/v1/audit/" in text)
    assert isinstance(json.loads(audit), (list, dict)), audit
    settings = PlatformSettings.objects.get(pk=1)
    assert "10.20.0.0/16" in settings.outbound_allowlist
    assert sorted(settings.allowed_packages) == ["lightgbm", "scikit-learn", "xgboost"]
    request = ResourceRequest.objects.get(team=team)
    assert request.status == "approved", request.status
    quota = next(out for text, out in outputs.items() if "-X PUT $MP/teams/" in text)
    assert json.loads(quota)["base"]["cpu"] == 16, quota
    feedback = next(out for text, out in outputs.items() if "/feedback/" in text)
    assert json.loads(feedback) == {"matched": 1, "updated": 0, "unmatched": ["nope"]}, feedback
    rules = dict(AlertRule.objects.values_list("name", "enabled"))
    assert rules == {"p95 latency": False, "errors": True, "drift": True, "accuracy": True,
                     "paged": True}, rules
    firing.refresh_from_db()
    assert firing.acknowledged_by == alice, "monitoring.md acknowledged the firing alert"
    assert AlertRule.objects.get(name="p95 latency").silenced_until is None  # silenced, lifted
    capacity = next(out for text, out in outputs.items() if "$MP/capacity/" in text)
    assert json.loads(capacity)["gpu_models"], capacity

