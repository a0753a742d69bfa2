"""The shipped Prometheus files are valid for Debian's ``promtool`` (the CI installs the
``prometheus`` package, which carries it), and every rule's metric is one the platform or its
replicas expose."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import missing_service

SHIPPED = Path(__file__).resolve().parents[2] / "platform" / "prometheus"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_service("promtool (Debian package prometheus) is not installed")
    return str(path)


def test_promtool_accepts_the_config(promtool, tmp_path):
    # The config names its token file relative to itself: a stand-in token beside the copy.
    for name in ("prometheus.yml", "rules.yml"):
        shutil.copy(SHIPPED / name, tmp_path / name)
    (tmp_path / "modelport-metrics-token").write_text("stand-in\n")
    done = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_promtool_accepts_the_rules(promtool):
    done = subprocess.run([promtool, "check", "rules", str(SHIPPED / "rules.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_config_scrapes_both_endpoints_with_the_bearer_token():
    config = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    jobs = {job["metrics_path"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"/metrics", "/metrics/replicas"}
    for job in jobs.values():
        assert job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"]
    assert config["rule_files"] == ["rules.yml"]


def test_every_rule_reads_a_metric_that_exists():
    """A typo in a metric name makes an alert that can never fire: each name is documented
    in docs/monitoring.md or docs/serving.md (their metric tables)."""
    root = SHIPPED.parents[1]
    documented = (root / "docs" / "monitoring.md").read_text() + \
        (root / "docs" / "serving.md").read_text()
    rules = yaml.safe_load((SHIPPED / "rules.yml").read_text())
    names = {name for group in rules["groups"] for rule in group["rules"]
             for name in re.findall(r"\b(modelport_[a-z_]+)", rule["expr"])}
    assert names
    assert not [n for n in names if n not in documented]
