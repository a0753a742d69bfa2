"""``MLFLOW_PORT`` (gateway/mlflow_port.py) with MLflow's own client: a script written for a
tracking server on a port of its own (``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``) reads and
changes Modelport's registry there, under the same rules as through ``/mlflow``.

Real processes (tests/deployments/test_edge.py's ``front``: the edge with MLFLOW_PORT, gunicorn on
a unix socket), a real ``MlflowClient`` configured only by the documented environment, and
``mlflow.artifacts.download_artifacts`` for a version's files. No tracking server runs in this
fixture: the registry calls never need one.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry import storage
from registry.models import ModelAlias, RegisteredModel
from teams.models import AuditEvent
from tests.deployments.test_edge import front  # noqa: F401 - fixture
from tests.factories import make_token

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(300)]


@pytest.fixture
def as_user(front, monkeypatch):  # noqa: F811 - the fixture
    def use(user) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", front.mlflow)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", make_token(user, name="port")[1])
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mlflow.set_tracking_uri(front.mlflow)
        mlflow.set_registry_uri(front.mlflow)
        return MlflowClient()
    return use


def test_mlflow_client_registry_calls_through_mlflow_port(front, as_user, v1,  # noqa: F811
                                                          engineer, viewer, stranger, tmp_path):
    # the front's web server has a data dir of its own: the version's artifact goes there too
    stored = front.data / "artifacts" / v1.artifact_name
    stored.parent.mkdir(parents=True, exist_ok=True)
    with storage.open_artifact(v1.artifact_name) as source:
        stored.write_bytes(source.read())
    client = as_user(engineer)
    created = client.create_registered_model("port-model", description="through the port")
    assert created.name == "port-model"
    assert RegisteredModel.objects.get(name="port-model").team_id == v1.model.team_id
    client.set_registered_model_tag("port-model", "owner", "eve")
    assert client.get_registered_model("port-model").tags == {"owner": "eve"}
    names = [m.name for m in client.search_registered_models(filter_string="name LIKE 'port%'")]
    assert names == ["port-model"]

    version = client.get_model_version("iris", "1")
    assert version.status == "READY"
    client.set_registered_model_alias("iris", "candidate", "1")
    assert client.get_model_version_by_alias("iris", "candidate").version == "1"
    assert ModelAlias.objects.filter(model=v1.model, name="candidate").exists()
    assert AuditEvent.objects.filter(actor=engineer, action__startswith="alias").exists()
    uri = client.get_model_version_download_uri("iris", "1")
    assert uri == "mlflow-artifacts:/modelport-registry/iris/1"
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/MLmodel",
                                                dst_path=str(tmp_path))
    assert "flavors" in Path(local).read_text()

    reader = as_user(viewer)
    assert reader.get_model_version("iris", "1").version == "1"
    with pytest.raises(MlflowException) as refused:
        reader.set_registered_model_alias("iris", "other", "1")
    assert refused.value.error_code == "PERMISSION_DENIED"

    outsider = as_user(stranger)
    with pytest.raises(MlflowException) as hidden:
        outsider.get_model_version("iris", "1")
    assert hidden.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert "iris" not in [m.name for m in outsider.search_registered_models()]


def test_a_chunked_body_is_refused_not_dropped(front, engineer):  # noqa: F811
    """Django reads a request without a length as empty: the port says so instead of passing
    on an empty body (which the route would answer as a missing parameter)."""
    token = make_token(engineer, name="port")[1]
    answer = requests.post(f"{front.mlflow}/api/2.0/mlflow/registered-models/create",
                           data=iter([b'{"name": ', b'"chunked-model"}']), timeout=20,
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/json"})
    assert answer.status_code == 411, answer.text
    assert "Content-Length" in answer.json()["message"]
    assert not RegisteredModel.objects.filter(name="chunked-model").exists()
