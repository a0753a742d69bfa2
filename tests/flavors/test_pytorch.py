"""PyTorch on the real path (issue 19): models logged with stock ``mlflow.pytorch`` — an MLP on
tabular rows (tensor signature ``[-1, 4]`` float32) and a CNN on image-shaped tensors
(``[-1, 1, 8, 8]`` float32) — uploaded through the API, validated in the Docker sandbox,
deployed on Docker (CPU: there is no GPU here) and called through the gateway in both
protocols. Every model of this module is saved with the same ``pip_requirements`` (the CPU
torch wheel), so the module builds one image.

Tolerance: the replica computes in float32 with its own thread count (one CPU), the test process
with this machine's; the order of a float32 sum may differ, so answers are compared with
``rtol=1e-5, atol=1e-6`` (a difference in the last bits, never another answer).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import mlflow.pytorch as mlflow_pytorch
import numpy as np
import torch
from mlflow.models import infer_signature

from deployments.models import Deployment
from registry.models import VersionStatus
from tests.flavors.conftest import flavor_test, upload
from workers.runtimes.images import LABEL_PACKAGES

pytestmark = flavor_test

# The CPU wheel from the local wheel folder (a local version sorts after 2.13.0: pip picks it).
TORCH = metadata.version("torch").split("+")[0]
REQUIREMENTS = [f"torch=={TORCH}", f"mlflow=={metadata.version('mlflow')}"]
TOL = {"rtol": 1e-5, "atol": 1e-6}


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def cnn() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10))


def save(module: torch.nn.Module, example: np.ndarray, path: Path,
         fmt: str = "pt2") -> np.ndarray:
    """Save as a user does (``pt2``, a ``torch.export`` program, is mlflow's default; ``pickle``
    the older whole-module pickle); returns the local model's answer on ``example``."""
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(example)).numpy()
    mlflow_pytorch.save_model(module, str(path), signature=infer_signature(example, out),
                              input_example=example, pip_requirements=REQUIREMENTS,
                              serialization_format=fmt)
    return out


def local(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_mlp_and_cnn_through_the_gateway_in_both_protocols(serve, tmp_path, docker_client):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 4)).astype(np.float32)
    images = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    net, conv = mlp(), cnn()
    save(net, rows[:2], tmp_path / "mlp")  # mlflow's default: an exported program
    save(conv, images[:2], tmp_path / "cnn", fmt="pickle")

    served = serve(tmp_path / "mlp", model="torch-mlp")
    assert served.version.status == VersionStatus.READY
    # The image holds the CPU build from the local wheel folder, and no CUDA library.
    image = Deployment.objects.get(name=served.name).revisions.latest("number").image
    assert image, "the revision names no image"
    packages = (docker_client.images.get(image).labels or {}).get(LABEL_PACKAGES, "").split(",")
    assert "torch" in packages and not [p for p in packages if p.startswith("nvidia")], packages
    installed = docker_client.containers.run(
        image, entrypoint=["python", "-c",
                           "import importlib.metadata as m; print(m.version('torch'))"],
        network_mode="none", remove=True).decode().strip()
    assert installed == f"{TORCH}+cpu"
    want = local(net, rows)
    for key in ("instances", "inputs"):
        got = served.invocations({key: rows.tolist()})["predictions"]
        np.testing.assert_allclose(np.array(got, dtype=np.float32), want, **TOL)
    answer = served.infer([{"name": "input-0", "shape": [5, 4], "datatype": "FP32",
                            "data": rows.ravel().tolist()}])
    out = answer["outputs"][0]
    assert (out["shape"], out["datatype"]) == ([5, 3], "FP32")
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(5, 3), want,
                               **TOL)
    # Wrong shape and wrong datatype: 400s naming the problem, in both protocols.
    bad = served.invocations({"inputs": rng.normal(size=(2, 5)).tolist()}, status=400)
    assert "expected shape [-1, 4], got [2, 5]" in bad["message"]
    bad = served.infer([{"name": "input-0", "shape": [1, 4], "datatype": "INT64",
                         "data": [1, 2, 3, 4]}], status=400)
    assert "INT64" in bad["error"] and "FP32" in bad["error"], bad
    bad = served.infer([{"name": "input-0", "shape": [2, 2], "datatype": "FP32",
                         "data": [1.0, 2.0, 3.0, 4.0]}], status=400)
    assert "expected shape [-1, 4], got [2, 2]" in bad["error"], bad
    meta = served.metadata()
    assert meta["inputs"][0]["datatype"] == "FP32" and meta["inputs"][0]["shape"] == [-1, 4]
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"] == [-1, 3]

    served = serve(tmp_path / "cnn", model="torch-cnn")
    want = local(conv, images)
    for key in ("instances", "inputs"):
        got = served.invocations({key: images.tolist()})["predictions"]
        np.testing.assert_allclose(np.array(got, dtype=np.float32), want, **TOL)
    answer = served.infer([{"name": "input-0", "shape": [3, 1, 8, 8], "datatype": "FP32",
                            "data": images.ravel().tolist()}])
    out = answer["outputs"][0]
    assert (out["shape"], out["datatype"]) == ([3, 10], "FP32")
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(3, 10), want,
                               **TOL)
    bad = served.invocations({"inputs": images[:, :, :4].tolist()}, status=400)
    assert "expected shape [-1, 1, 8, 8], got [3, 1, 4, 8]" in bad["message"], bad
    bad = served.infer([{"name": "input-0", "shape": [1, 64], "datatype": "FP32",
                         "data": images[0].ravel().tolist()}], status=400)
    assert "expected shape [-1, 1, 8, 8], got [1, 64]" in bad["error"], bad


class Doubler(torch.nn.Module):
    """Defined in this test module, which the sandbox does not have: the usual "missing custom
    code" failure (a class from the training script, pickled without ``code_paths``; mlflow's
    default ``pt2`` format would carry the traced graph instead)."""

    def forward(self, x):
        return x * 2


def test_missing_model_class_is_explained_by_the_sandbox(flavor_team, flavor_engineer,
                                                         django_capture_on_commit_callbacks,
                                                         platform_serving_image, tmp_path):
    rows = np.ones((2, 3), dtype=np.float32)
    save(Doubler(), rows, tmp_path / "doubler", fmt="pickle")
    version = upload(flavor_engineer, flavor_team, tmp_path / "doubler",
                     django_capture_on_commit_callbacks, model="torch-doubler")
    assert version.status == VersionStatus.FAILED, version.status_message
    assert "code_paths" in version.status_message, version.status_message
    assert "Doubler" in version.status_message or "tests" in version.status_message
