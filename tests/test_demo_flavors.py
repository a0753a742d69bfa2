"""The optional non-scikit-learn demo model (MODELPORT_DEMO_FLAVORS=xgboost): named flavors
only, trained and zipped as stock mlflow saves it, registered through the registry's own
upload. (Validating and serving it is tests/flavors/test_xgboost.py's path.)"""

from __future__ import annotations

import io
import zipfile

import pytest
import yaml

from demo import training


def test_flavor_specs_by_name_and_unknown_names_refused():
    assert training.flavor_specs([]) == ()
    assert [s.name for s in training.flavor_specs(["xgboost", "xgboost"])] == [training.XGBOOST]
    with pytest.raises(ValueError, match=r"unknown caffe .*known: xgboost"):
        training.flavor_specs(["caffe", "xgboost"])


def test_xgboost_demo_model_is_a_stock_mlflow_zip():
    trained = training.train_xgboost()
    assert trained.fmt == "mlflow" and trained.metrics["accuracy"] > 0.8
    name, content = trained.upload_bytes()
    assert name == "iris-xgboost.zip"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        mlmodel = yaml.safe_load(archive.read("MLmodel"))
        requirements = archive.read("requirements.txt").decode().split()
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.xgboost"
    assert any(r.startswith("xgboost-cpu==") for r in requirements)
    assert "serving_input_example.json" in archive.namelist()
