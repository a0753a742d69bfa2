"""LightGBM on the real path (issue 19): a scikit-learn wrapper regressor (saved with skops,
mlflow's default) and a native ``lgb.train`` binary classifier (pyfunc answers probabilities),
saved with stock ``mlflow.lightgbm``, uploaded through the API, validated in the Docker
sandbox, deployed, and called through the gateway in the MLflow protocol (dataframe_split,
instances) and OIP v2: the answers equal the local model's on the same rows. Same requirements
as the XGBoost models: the same serving image."""

from __future__ import annotations

from tests.flavors import trees
from tests.flavors.conftest import flavor_test
from tests.flavors.test_xgboost import check_served

pytestmark = flavor_test


def test_lightgbm_models_serve_the_local_answers(tmp_path, serve):
    regressor = trees.save_lgb_regressor(tmp_path / "regressor")
    served = serve(tmp_path / "regressor", model="lgb-regressor")
    assert served.version.validation.get("input_mode") == "ndarray", served.version.validation
    check_served(served, regressor.predict)

    booster = trees.save_lgb_booster(tmp_path / "booster")
    served = serve(tmp_path / "booster", model="lgb-booster")
    check_served(served, booster.predict)
