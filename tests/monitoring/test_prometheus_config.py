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


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_promtool_accepts_the_config(promtool, tmp_path, config):
    # The config names its token file relative to itself: a stand-in token beside the copy.
    for name in (config, "rules.yml"):
        shutil.copy(SHIPPED / name, tmp_path / name)
    (tmp_path / "modelport-metrics-token").write_text("stand-in\n")
    done = subprocess.run([promtool, "check", "config", str(tmp_path / config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_promtool_accepts_the_rules(promtool):
    done = subprocess.run([promtool, "check", "rules", str(SHIPPED / "rules.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_the_config_scrapes_both_endpoints_with_the_bearer_token(config):
    config = yaml.safe_load((SHIPPED / config).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["modelport"]["metrics_path"] == "/metrics"
    assert jobs["modelport-replicas"]["metrics_path"] == "/metrics/replicas"
    for job in jobs.values():
        assert job["authorization"] == {"type": "Bearer",
                                        "credentials_file": "modelport-metrics-token"}
    assert config["rule_files"] == ["rules.yml"]


def test_kubernetes_scrapes_each_pod_under_an_allowed_host_name():
    """Each web pod adds up only its own processes: Prometheus must reach every pod, by a name
    Django accepts (a bare pod IP is refused with a 400), and every worker pod's port."""
    config = yaml.safe_load((SHIPPED / "prometheus-kubernetes.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    manifests = SHIPPED.parent / "kubernetes"
    objects = [o for name in ("web.yaml", "worker.yaml", "configmap.yaml")
               for o in yaml.safe_load_all((manifests / name).read_text()) if o]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    allowed = next(o for o in objects if o["kind"] == "ConfigMap")["data"][
        "DJANGO_ALLOWED_HOSTS"].split(",")
    for job, service in (("modelport", "modelport-web-pods"),
                         ("modelport-worker", "modelport-worker-pods")):
        (name,) = jobs[job]["dns_sd_configs"][0]["names"]
        srv_port, _protocol, host = name.split(".", 2)
        assert services[service]["spec"]["clusterIP"] == "None"
        assert srv_port.lstrip("_") in [p["name"] for p in services[service]["spec"]["ports"]]
        assert host.startswith(f"{service}.modelport.svc")
    assert ".modelport-web-pods.modelport.svc.cluster.local" in allowed


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
