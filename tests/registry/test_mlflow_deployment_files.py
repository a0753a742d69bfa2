"""Where the MLflow server listens in each way of running Modelport (read from the files
themselves; `make run`'s server is exercised for real in test_mlflow_sync and test_make_run):
never a port anyone else reaches, never its job runner."""

from __future__ import annotations

from pathlib import Path

import yaml

from .conftest import procfile_command

ROOT = Path(__file__).resolve().parents[2]


def _compose(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _k8s(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((ROOT / "platform" / "kubernetes" / name)
                                              .read_text()) if doc]


def test_make_run_serves_mlflow_on_a_unix_socket_in_a_private_folder():
    command = procfile_command("mlflow")
    assert "--uds '${MODELPORT_DATA_DIR}/run/mlflow/mlflow.sock'" in command
    assert 'chmod 700 "${MODELPORT_DATA_DIR}/run/mlflow"' in command
    assert "--port" not in command and "--host" not in command
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in command
    assert "MLFLOW_DISABLE_TELEMETRY=true" in command


def test_compose_mlflow_has_no_port_and_only_the_platforms_volume_holds_its_socket():
    for name in ("docker-compose.yml", "docker-compose.host.yml",
                 "docker-compose.override.yml"):
        mlflow = _compose(name)["services"].get("mlflow", {})
        assert "ports" not in mlflow and "expose" not in mlflow, name
    compose = _compose("docker-compose.yml")
    mlflow = compose["services"]["mlflow"]
    assert "--uds /data/run/mlflow/mlflow.sock" in mlflow["command"][2]
    assert "chmod 700 /data/run/mlflow" in mlflow["command"][2]
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true"
    app_env = compose["x-app-env"]
    assert app_env["MODELPORT_MLFLOW_UPSTREAM"] == "unix:/data/run/mlflow/mlflow.sock"
    # MLflow's own variable would point the mlflow library in web and worker elsewhere.
    assert "MLFLOW_TRACKING_URI" not in app_env
    assert "MLFLOW_TRACKING_URI" not in _compose("docker-compose.host.yml")["x-host-app-env"]


def test_kubernetes_lets_only_web_and_the_worker_reach_mlflow():
    config = _k8s("configmap.yaml")[0]["data"]
    assert config["MODELPORT_MLFLOW_UPSTREAM"] == "http://modelport-mlflow.modelport.svc:5000"
    assert "MLFLOW_TRACKING_URI" not in config
    docs = _k8s("mlflow.yaml")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == \
        "mlflow"
    allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
               for rule in policy["spec"]["ingress"] for peer in rule["from"]}
    assert allowed == {"web", "worker"}
    assert "modelport-mlflow" not in (ROOT / "platform" / "kubernetes" / "ingress.yaml"
                                      ).read_text()
