"""A custom ``mlflow.pyfunc.PythonModel`` on the real path (issue 19): its class in a module
shipped with ``code_paths``, a JSON vocabulary artifact read in ``load_context``, and an
``extra_pip_requirements`` package (tabulate) that predict really uses — so the image must have
installed it from the model's requirements. Served through the gateway in both protocols; and
the same model saved without its ``code_paths`` fails validation in the sandbox with a message
naming the module. Both models have the same requirements: one image for the module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest

from registry.models import VersionStatus
from tests.flavors.conftest import flavor_test, upload

pytestmark = flavor_test

MODULE = "keyword_scorer"
SOURCE = '''
"""A team's own model code: scores texts with a vocabulary and formats each as a table row."""
import json

import mlflow.pyfunc
import pandas as pd
from tabulate import tabulate


class KeywordScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["vocabulary"]) as f:
            self.weights = json.load(f)

    def predict(self, context, model_input, params=None):
        texts = [str(t) for t in model_input["text"]]
        scores = [sum(self.weights.get(w, 0.0) for w in t.lower().split()) for t in texts]
        rows = [tabulate([[t, s]], tablefmt="plain", floatfmt=".2f")
                for t, s in zip(texts, scores)]
        return pd.DataFrame({"score": scores, "row": rows})
'''
VOCABULARY = {"good": 1.0, "great": 2.0, "bad": -1.0, "awful": -2.5}
TEXTS = ["good day", "a great great film", "bad good awful", "nothing here"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(with code_paths, without): saved with stock mlflow from a module on sys.path, as a
    training script in the team's repository would."""
    root = tmp_path_factory.mktemp("pyfunc")
    code = root / f"{MODULE}.py"
    code.write_text(SOURCE)
    vocabulary = root / "vocabulary.json"
    vocabulary.write_text(json.dumps(VOCABULARY))
    sys.path.insert(0, str(root))
    try:
        module = __import__(MODULE)
        example = pd.DataFrame({"text": TEXTS[:2]})
        good = root / "with-code"
        mlflow.pyfunc.save_model(str(good), python_model=module.KeywordScorer(),
                                 artifacts={"vocabulary": str(vocabulary)},
                                 code_paths=[str(code)], input_example=example,
                                 extra_pip_requirements=["tabulate==0.10.0"])
        # The usual mistake: no code_paths. Same requirements, so the same image.
        broken = root / "without-code"
        mlflow.pyfunc.save_model(
            str(broken), python_model=module.KeywordScorer(),
            artifacts={"vocabulary": str(vocabulary)}, input_example=example,
            pip_requirements=(good / "requirements.txt").read_text().split())
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(MODULE, None)
    assert "tabulate==0.10.0" in (good / "requirements.txt").read_text().split()
    return good, broken


def _local(model_dir: Path) -> list[dict[str, Any]]:
    """The model's own answer in this process (mlflow.pyfunc puts its code_paths on sys.path)."""
    try:
        frame = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame({"text": TEXTS}))
    finally:
        sys.modules.pop(MODULE, None)
    return frame.to_dict(orient="records")


def test_custom_pyfunc_with_code_paths_artifacts_and_extra_requirements(serve, models) -> None:
    good, _ = models
    want = _local(good)
    assert want[1] == {"score": 4.0, "row": "a great great film  4.00"}, want
    served = serve(good, model="pyfunc-keywords")

    for body in ({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
                 {"dataframe_records": [{"text": t} for t in TEXTS]},
                 {"inputs": {"text": TEXTS}}):
        assert served.invocations(body)["predictions"] == want, body
    missing = served.invocations({"dataframe_records": [{"words": "good"}]}, status=400)
    assert "'text'" in missing["message"], missing

    answer = served.infer([{"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES",
                            "data": TEXTS}])
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["score"]["datatype"] == "FP64"
    assert outputs["score"]["data"] == [w["score"] for w in want]
    assert outputs["row"]["datatype"] == "BYTES"
    assert outputs["row"]["data"] == [w["row"] for w in want]


def test_pyfunc_without_its_code_paths_fails_validation_naming_the_module(
        flavor_team, flavor_engineer, docker_env, django_capture_on_commit_callbacks,
        platform_serving_image, models) -> None:
    _, broken = models
    version = upload(flavor_engineer, flavor_team, broken, django_capture_on_commit_callbacks,
                     model="pyfunc-no-code")
    assert version.status == VersionStatus.FAILED, (version.status, version.status_message)
    message = version.status_message
    assert f"module '{MODULE}'" in message, message
    assert f"code_paths=['{MODULE}.py']" in message, message
