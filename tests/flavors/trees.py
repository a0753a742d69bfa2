"""Tiny XGBoost and LightGBM models saved with stock ``mlflow.xgboost`` / ``mlflow.lightgbm``,
as their users log them: a native booster and a scikit-learn wrapper, a classifier and a
regressor. Every model is saved with the same ``pip_requirements`` (``TREES_REQUIREMENTS``), so
the XGBoost and LightGBM flavor tests share one serving image per run. The list keeps both
``xgboost-cpu`` and ``xgboost``, as stock mlflow writes them when xgboost-cpu is installed:
the platform drops the plain one (its wheel pulls GBs of CUDA libraries)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ["age", "income", "tenure", "score"]

TREES_REQUIREMENTS = [
    f"mlflow=={metadata.version('mlflow')}",
    f"numpy=={metadata.version('numpy')}",
    f"pandas=={metadata.version('pandas')}",
    f"scipy=={metadata.version('scipy')}",
    f"scikit-learn=={metadata.version('scikit-learn')}",
    f"skops=={metadata.version('skops')}",
    f"xgboost-cpu=={metadata.version('xgboost-cpu')}",
    f"xgboost=={metadata.version('xgboost-cpu')}",
    f"lightgbm=={metadata.version('lightgbm')}",
]


def data(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features (a DataFrame), a 3-class label and a regression target."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(0.0, 1.0, (n, len(COLUMNS))), columns=COLUMNS)
    classes = (x["age"] > 0).astype(int) + (x["income"] > 0.5).astype(int)
    target = 3.0 * x["age"] - x["tenure"] + rng.normal(0.0, 0.1, n)
    return x, classes.to_numpy(), target.to_numpy()


def rows(n: int = 5, seed: int = 7) -> pd.DataFrame:
    return data(n, seed)[0]


def save_xgb_classifier(path: Path) -> Any:
    """``XGBClassifier`` (3 classes) on a DataFrame: pyfunc answers class labels."""
    import mlflow.xgboost
    import xgboost as xgb

    x, classes, _ = data()
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(x, classes)
    mlflow.xgboost.save_model(model, str(path), input_example=x.head(3),
                              pip_requirements=TREES_REQUIREMENTS)
    return model


def save_xgb_booster(path: Path) -> Any:
    """A native ``xgb.train`` regressor: pyfunc answers ``Booster.predict(DMatrix(frame))``."""
    import mlflow.xgboost
    import xgboost as xgb

    x, _, target = data()
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(x, label=target),
                        num_boost_round=8)
    mlflow.xgboost.save_model(booster, str(path), input_example=x.head(3),
                              pip_requirements=TREES_REQUIREMENTS)
    return booster


def save_lgb_regressor(path: Path) -> Any:
    """``LGBMRegressor`` on a DataFrame (saved with skops, mlflow's default)."""
    import lightgbm as lgb
    import mlflow.lightgbm

    x, _, target = data()
    model = lgb.LGBMRegressor(n_estimators=8, num_leaves=7, verbose=-1).fit(x, target)
    mlflow.lightgbm.save_model(model, str(path), input_example=x.head(3),
                               pip_requirements=TREES_REQUIREMENTS)
    return model


def save_lgb_booster(path: Path) -> Any:
    """A native ``lgb.train`` binary classifier: pyfunc answers probabilities."""
    import lightgbm as lgb
    import mlflow.lightgbm

    x, classes, _ = data()
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(x, label=(classes > 0).astype(int)), num_boost_round=8)
    mlflow.lightgbm.save_model(booster, str(path), input_example=x.head(3),
                               pip_requirements=TREES_REQUIREMENTS)
    return booster


SAVERS = {"xgb-classifier": save_xgb_classifier, "xgb-booster": save_xgb_booster,
          "lgb-regressor": save_lgb_regressor, "lgb-booster": save_lgb_booster}


def save_xgb_newer(path: Path, version: str = "9.1.0") -> None:
    """A native booster as a newer XGBoost would write it: ``xgb_version`` says `version` and
    the model JSON has a layout this XGBoost cannot read (its ``learner`` renamed)."""
    import json

    import xgboost as xgb

    booster = save_xgb_booster(path)
    doc = json.loads(booster.save_raw("json"))
    doc["version"] = [int(p) for p in version.split(".")]
    doc["learner_v9"] = doc.pop("learner")
    (path / "model.ubj").unlink()
    (path / "model.json").write_text(json.dumps(doc))
    mlmodel = (path / "MLmodel").read_text()
    (path / "MLmodel").write_text(
        mlmodel.replace(f"xgb_version: {xgb.__version__}", f"xgb_version: {version}")
        .replace("data: model.ubj", "data: model.json").replace("model_format: ubj",
                                                                 "model_format: json"))
