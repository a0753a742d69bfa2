"""XGBoost on the real path (issue 19): a scikit-learn wrapper classifier and a native
``xgb.train`` regressor, saved with stock ``mlflow.xgboost`` (requirements naming both
``xgboost-cpu`` and ``xgboost``, as mlflow writes them), uploaded through the API, validated in
the Docker sandbox, deployed, and called through the gateway in the MLflow protocol
(dataframe_split, instances) and OIP v2: the answers equal the local model's on the same rows.
A model file newer than the image's XGBoost fails validation with a plain reason."""

from __future__ import annotations

import json

import numpy as np

from registry.models import VersionStatus
from tests.flavors import trees
from tests.flavors.conftest import flavor_test, upload

pytestmark = flavor_test


def check_served(served, expected_for) -> None:
    """One deployment, three protocols, 1 and 5 rows: exactly the local model's answers."""
    for n in (1, 5):
        frame = trees.rows(n, seed=n)
        want = np.asarray(expected_for(frame))
        split = served.invocations({"dataframe_split": json.loads(frame.to_json(orient="split"))})
        records = served.invocations({"instances": frame.to_dict(orient="records")})
        v2 = served.infer([{"name": c, "shape": [n], "datatype": "FP64",
                            "data": frame[c].tolist()} for c in trees.COLUMNS])
        for got in (split["predictions"], records["predictions"], v2["outputs"][0]["data"]):
            np.testing.assert_array_equal(np.asarray(got, dtype=want.dtype).ravel(), want)


def test_xgboost_models_serve_the_local_answers(tmp_path, serve, flavor_engineer,
                                                flavor_team,
                                                django_capture_on_commit_callbacks):
    import xgboost as xgb

    classifier = trees.save_xgb_classifier(tmp_path / "classifier")
    requirements = (tmp_path / "classifier" / "requirements.txt").read_text().split()
    assert any(r.startswith("xgboost==") for r in requirements)  # the platform drops it
    served = serve(tmp_path / "classifier", model="xgb-classifier")
    assert served.version.validation.get("input_mode") == "ndarray", served.version.validation
    check_served(served, classifier.predict)

    booster = trees.save_xgb_booster(tmp_path / "booster")
    served = serve(tmp_path / "booster", model="xgb-booster")
    check_served(served, lambda frame: booster.predict(xgb.DMatrix(frame)))

    # A model file from a newer XGBoost than the image's: a plain reason, no half-made version.
    newer = tmp_path / "newer"
    trees.save_xgb_newer(newer, "9.1.0")
    version = upload(flavor_engineer, flavor_team, newer, django_capture_on_commit_callbacks,
                     model="xgb-newer")
    assert version.status == VersionStatus.FAILED
    assert "saved with XGBoost 9.1.0" in version.status_message, version.status_message
    assert "newer than the library" in version.status_message
    assert "xgboost-cpu==9.1.0" in version.status_message

