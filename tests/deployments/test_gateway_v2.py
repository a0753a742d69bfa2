"""NVIDIA's ``tritonclient`` (HTTP) through the gateway with a platform token.

- Through the edge (a real uvicorn + gunicorn, tests/deployments/test_edge.py's ``front``) to a
  deployment on real Docker replicas (no network; reached over their socket files): binary and
  JSON inference, readiness, metadata, an unknown version or model, a bad token — each error
  body one tritonclient turns into a readable ``InferenceServerException``.
- The Django path (``GatewayMiddleware``, for installs without the edge), driven by Django's
  test client with tritonclient's own request encoder and response parser
  (``generate_request_body``, ``parse_response_body``): tritonclient itself needs a TCP URL.
- Versions under a traffic split and shadowing: two revisions serving versions 1 and 2 of the
  model, each a real model-server process (``python -m serving``) on its own unix socket file
  with its revision's replica key, as a Docker replica runs it — started directly so that the
  test needs no second image rollout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from django.test import Client
from tritonclient.utils import InferenceServerException

from deployments.models import Deployment, Replica, Revision, ShadowSample, TrafficSample
from gateway import routes
from serving.sockets import unix_url
from tests.deployments.conftest import COLUMNS, make_version, unique_name
from tests.deployments.test_docker import converge, deploy
from tests.deployments.test_edge import bearer, eventually, front  # noqa: F401 - fixture
from tests.fixtures import bearer_client

ROOT = Path(__file__).resolve().parents[2]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(300)]


# tritonclient writes Inference-Header-Content-Length into the headers dict it is given: each
# call gets its own copy ({**auth}), or a JSON request after a binary one carries a stale length.


def client_for(front, name: str) -> triton.InferenceServerClient:  # noqa: F811 - the fixture
    return triton.InferenceServerClient(url=f"{front.base[len('http://'):]}/serve/{name}")


def rows(binary: bool = True) -> list[triton.InferInput]:
    tensor = triton.InferInput("input-0", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    return [tensor]


def refused(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert "decoding the response" not in caught.value.message()
    return caught.value


@pytest.mark.docker
def test_tritonclient_through_the_edge_to_docker_replicas(front, docker_env, engineer,  # noqa: F811
                                                          stranger, v1):
    name = unique_name("v2")
    docker_env.append(name)
    deploy(bearer_client(engineer), name)
    converge(name)
    auth = bearer(engineer)
    triton_client = client_for(front, name)

    result = triton_client.infer("iris", rows(), headers={**auth})  # binary both ways, by default
    assert result.as_numpy("predict").tolist() == [0, 2]
    assert result.get_response()["model_version"] == "1"
    json_result = triton_client.infer(  # the deployment's name is accepted as the model's
        name, rows(binary=False), headers={**auth},
        outputs=[triton.InferRequestedOutput("predict", binary_data=False)])
    assert json_result.get_output("predict")["data"] == [0, 2]
    assert triton_client.infer("iris", rows(), model_version="1",
                               headers={**auth}).as_numpy("predict").tolist() == [0, 2]

    assert triton_client.is_server_live(headers={**auth})
    assert triton_client.is_server_ready(headers={**auth})
    assert triton_client.is_model_ready("iris", headers={**auth})
    assert triton_client.is_model_ready("iris", "1", headers={**auth})
    assert not triton_client.is_model_ready("iris", "99", headers={**auth})
    meta = triton_client.get_model_metadata("iris", headers={**auth})
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert "binary_tensor_data" in triton_client.get_server_metadata(
        headers={**auth})["extensions"]

    unknown = refused(lambda: triton_client.infer("iris", rows(), model_version="99",
                                                  headers={**auth}))
    assert unknown.status() == "404" and "no version '99'" in unknown.message()
    assert "live versions: 1" in unknown.message()
    assert refused(lambda: triton_client.get_model_metadata("other", headers={**auth})
                   ).status() == "404"
    bad_input = refused(lambda: triton_client.infer("iris", [rows()[0]], headers={**auth},
                                                    outputs=[triton.InferRequestedOutput("x")]))
    assert bad_input.status() == "400" and "unknown output 'x'" in bad_input.message()

    no_token = refused(lambda: triton_client.infer("iris", rows()))
    assert no_token.status() == "401" and "Authorization" in no_token.message()
    bad_token = refused(lambda: triton_client.infer(
        "iris", rows(), headers={"Authorization": "Bearer mp_not-a-token"}))
    assert bad_token.status() == "401"
    assert refused(lambda: triton_client.get_model_metadata(
        "iris", headers=bearer(stranger))).status() == "404"  # another team's: not found
    triton_client.close()

    # Only inference is traffic: 3 answered by the replica, 1 answered 400 by it.
    d = Deployment.objects.get(name=name)
    assert eventually(lambda: sum(TrafficSample.objects.filter(deployment=d)
                                  .values_list("requests", flat=True)) == 4, timeout=10), \
        list(TrafficSample.objects.filter(deployment=d).values_list("requests", flat=True))

    # The Django path, with tritonclient's own encoder and parser.
    routes.invalidate()
    django_client = Client(HTTP_AUTHORIZATION=auth["Authorization"])
    body, json_size = triton.InferenceServerClient.generate_request_body(rows())
    answer = django_client.post(f"/serve/{name}/v2/models/iris/versions/1/infer", data=body,
                                content_type="application/octet-stream",
                                HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(json_size))
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"] == "application/octet-stream"
    parsed = triton.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer["Inference-Header-Content-Length"]))
    assert parsed.as_numpy("predict").tolist() == [0, 2]
    assert django_client.get(f"/serve/{name}/v2/models/iris/ready").status_code == 200
    assert django_client.get(f"/serve/{name}/v2/health/live").status_code == 200
    meta = django_client.get(f"/serve/{name}/v2/models/{name}").json()
    assert meta["outputs"][0]["name"] == "predict"
    missing = django_client.get(f"/serve/{name}/v2/models/iris/versions/99")
    assert missing.status_code == 404 and "no version '99'" in missing.json()["error"]
    assert Client().get(f"/serve/{name}/v2/models/iris/ready").json()["error"]
    assert django_client.get(f"/serve/{name}/v2/models/iris/infer").status_code == 405
    assert django_client.get(f"/serve/{name}/v2/repository/index").status_code == 404


# --- versions under a split, shadowing: two model-server processes --------------------------


def _serve(model_dir: Path, socket_path: Path, version: str, key: str,
           log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "DJANGO_"))}
    env.update({"PYTHONPATH": str(ROOT), "MODELPORT_MODEL_VERSION": version,
                "MODELPORT_REPLICA_KEY": key, "MODELPORT_WORKERS": "1"})
    return subprocess.Popen(
        [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--unix-socket",
         str(socket_path), "--name", "iris"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.fixture
def two_versions(team, v1, iris_dir, tmp_path):
    """A deployment whose revisions 1 and 2 serve versions 1 and 2, each on a live model
    server over its socket file."""
    v2 = make_version(v1.model, 2, iris_dir)
    name = unique_name("v2split")
    d = Deployment.objects.create(name=name, team=team, model=v1.model, version=v2, revision=2,
                                  traffic=[{"revision": 1, "percent": 50},
                                           {"revision": 2, "percent": 50}])
    procs = []
    for number, version in ((1, v1), (2, v2)):
        revision = Revision.objects.create(deployment=d, number=number, model_version=version)
        sock = tmp_path / f"r{number}.sock"
        procs.append((_serve(iris_dir, sock, str(version.version), revision.replica_key,
                             tmp_path / f"r{number}.log"), sock))
        Replica.objects.create(deployment=d, runtime_id=f"mp-{name}-r{number}-0",
                               revision=number, index=0, status="ready", ready=True,
                               url=unix_url(str(sock)))
    for proc, sock in procs:
        deadline = time.monotonic() + 60
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists(), (tmp_path / "r1.log").read_text()
    Deployment.objects.filter(pk=d.pk).update(routing_version=d.routing_version + 1)
    yield d
    for proc, sock in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        sock.unlink(missing_ok=True)


def _ready(triton_client, auth) -> None:
    assert eventually(lambda: triton_client.is_model_ready("iris", "1", headers={**auth})
                      and triton_client.is_model_ready("iris", "2", headers={**auth}), timeout=60)


def test_a_version_bypasses_the_split_and_others_are_404(front, two_versions,  # noqa: F811
                                                        engineer):
    auth = bearer(engineer)
    triton_client = client_for(front, two_versions.name)
    _ready(triton_client, auth)
    for version in ("1", "2"):
        seen = {triton_client.infer("iris", rows(), model_version=version, headers={**auth})
                .get_response()["model_version"] for _ in range(12)}
        assert seen == {version}
    split = {triton_client.infer("iris", rows(), headers={**auth}).get_response()["model_version"]
             for _ in range(40)}
    assert split == {"1", "2"}  # 50/50: both, all but certainly (a 2^-39 chance otherwise)
    gone = refused(lambda: triton_client.is_model_ready("iris", "3", headers={**auth})
                   or triton_client.get_model_metadata("iris", "3", headers={**auth}))
    assert gone.status() == "404" and "live versions: 1, 2" in gone.message()
    triton_client.close()


def test_v2_inference_is_mirrored_to_the_shadow_and_compared(front, two_versions,  # noqa: F811
                                                            engineer):
    Deployment.objects.filter(pk=two_versions.pk).update(
        traffic=[{"revision": 1, "percent": 100}], shadow={"revision": 2, "percent": 100},
        routing_version=two_versions.routing_version + 5)
    auth = bearer(engineer)
    triton_client = client_for(front, two_versions.name)
    assert eventually(lambda: triton_client.is_model_ready("iris", "1", headers={**auth}),
                      timeout=60)
    assert eventually(lambda: requests.get(
        f"{front.base}/serve/{two_versions.name}/v2/models/iris/versions/2/ready",
        headers={**auth}, timeout=5).status_code == 404)  # a shadow is not addressable
    for binary in (True, False, True):
        answer = triton_client.infer("iris", rows(binary), headers={**auth})
        assert answer.get_response()["model_version"] == "1"

    def mirrored():
        # The edge writes shadow counts after a mirror, at most once a second: keep sending.
        triton_client.infer("iris", rows(), headers={**auth})
        samples = list(ShadowSample.objects.filter(deployment=two_versions, revision=2))
        return samples if sum(s.requests for s in samples) >= 3 else None
    samples = eventually(mirrored, timeout=15)
    triton_client.close()
    assert samples, "no shadow sample written"
    assert sum(s.compared for s in samples) == sum(s.agreed for s in samples) >= 3
