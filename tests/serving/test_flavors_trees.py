"""XGBoost and LightGBM fast paths in process (the frameworks are in the test venv): chosen for
every kind of model stock mlflow saves, and answering exactly what ``mlflow.pyfunc`` does; plus
the plain-language failure reasons. The real path (Docker sandbox, deployment, gateway) is in
tests/flavors/test_xgboost.py and test_lightgbm.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving import loader, protocol
from serving.flavors import lightgbm as lgb_flavor
from serving.flavors import xgboost as xgb_flavor
from serving.schema import validate
from tests.flavors import trees


@pytest.mark.parametrize("kind", sorted(trees.SAVERS))
def test_fast_path_answers_what_pyfunc_does(tmp_path, kind):
    import mlflow.pyfunc

    model_dir = tmp_path / kind
    trees.SAVERS[kind](model_dir)
    model = loader.load(str(model_dir))
    assert model.input_mode == "ndarray", model.info
    assert model.info["fast_path"].startswith(model.flavor)
    reference = mlflow.pyfunc.load_model(str(model_dir))
    for n in (1, 100):
        frame = trees.rows(n)
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
        table, _, _ = protocol.parse_mlflow_json(body)
        batch = validate(table, model.signature)
        got, want = model.predict(batch), reference.predict(frame)
        assert got.dtype == np.asarray(want).dtype and np.array_equal(got, want), kind


def test_feature_order_other_than_the_signature_keeps_pyfunc(tmp_path):
    import mlflow.xgboost
    import xgboost as xgb

    x, _, target = trees.data()
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=target), num_boost_round=2)
    swapped = x[list(reversed(trees.COLUMNS))]
    mlflow.xgboost.save_model(booster, str(tmp_path / "m"), input_example=swapped.head(2))
    model = loader.load(str(tmp_path / "m"))
    assert model.input_mode == "pyfunc"


def _mismatch_error() -> BaseException:
    import xgboost as xgb

    try:
        xgb.Booster().load_model(bytearray(b"{not a model"))
    except xgb.core.XGBoostError as exc:
        return exc
    raise AssertionError("xgboost loaded garbage")


def test_explain_version_mismatch_and_missing_library():
    exc = _mismatch_error()
    mlmodel = {"flavors": {"xgboost": {"xgb_version": "9.1.0"}}}
    message = xgb_flavor.explain(exc, mlmodel)
    assert message is not None and "saved with XGBoost 9.1.0" in message
    assert "newer than the library" in message and "xgboost-cpu==9.1.0" in message
    assert xgb_flavor.explain(ValueError("bad input"), mlmodel) is None

    missing = ModuleNotFoundError("No module named 'lightgbm'", name="lightgbm")
    message = lgb_flavor.explain(missing, {"flavors": {"lightgbm": {"lgb_version": "4.7.0"}}})
    assert message is not None
    assert "lightgbm is not installed" in message and "lightgbm==4.7.0" in message


def test_explain_a_base_image_without_openmp():
    text = "libgomp.so.1: cannot open shared object file: No such file or directory"
    # Not raised by LightGBM: no reason of its own.
    assert lgb_flavor.explain(OSError(text), {"flavors": {"lightgbm": {}}}) is None
    import lightgbm.basic

    # The real error, raised from LightGBM's own module (basic.py loading lib_lightgbm.so).
    code = compile(f"raise OSError({text!r})", lightgbm.basic.__file__, "exec")
    try:
        exec(code)
    except OSError as real:
        message = lgb_flavor.explain(real, {"flavors": {"lightgbm": {"lgb_version": "4.7.0"}}})
    assert message is not None and "libgomp1" in message and "build-base.sh --force" in message
