"""The two demo models, trained at first start from datasets bundled with scikit-learn.

Nothing is downloaded: ``load_iris`` and ``load_diabetes`` read CSV files shipped inside the
scikit-learn wheel. Training takes well under a second each.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.lazy_imports import lazy_module

# Imported when first used: every Celery process imports this module (issue 26, memory).
joblib = lazy_module("joblib")
if TYPE_CHECKING:  # the real modules, for annotations
    import numpy as np
    import pandas as pd
else:
    np = lazy_module("numpy")
    pd = lazy_module("pandas")

CLASSIFIER = "iris-classifier"
REGRESSOR = "diabetes-regressor"
XGBOOST = "iris-xgboost"
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass
class TrainedModel:
    """A fitted estimator and everything the registry wants with it."""

    name: str
    task: str  # "classification" | "regression"
    description: str
    card: str
    tags: list[str]
    estimator: Any
    features: pd.DataFrame  # the whole dataset's features (traffic is sampled from it)
    target: pd.Series
    train: pd.DataFrame  # the training split: the drift reference
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    dataset_name: str = ""
    fmt: str = "sklearn"  # how it is uploaded: a joblib pickle, or "mlflow" (a zipped model dir)

    def upload_bytes(self) -> tuple[str, bytes]:
        """The file to register: its name and content."""
        if self.fmt == "mlflow":
            return f"{self.name}.zip", mlflow_zip(self)
        return f"{self.name}.joblib", self.pickle_bytes()

    def pickle_bytes(self) -> bytes:
        buffer = io.BytesIO()
        joblib.dump(self.estimator, buffer)
        return buffer.getvalue()

    def reference_csv(self) -> bytes:
        return self.train.to_csv(index=False).encode()

    def dataset_hash(self) -> str:
        return hashlib.sha256(self.features.assign(_y=self.target.values)
                              .to_csv(index=False).encode()).hexdigest()

    def input_example(self, rows: int = 3) -> dict[str, Any]:
        sample = self.train.head(rows)
        return {"dataframe_split": {"columns": list(sample.columns),
                                    "data": _rounded(sample.to_numpy().tolist())}}


def _rounded(rows: list[list[float]]) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in rows]


def train_classifier() -> TrainedModel:
    from sklearn.datasets import load_iris  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.metrics import accuracy_score, f1_score  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415 - lazy: sklearn ~1.5 s import

    iris = load_iris(as_frame=True)
    features = iris.data.set_axis(IRIS_COLUMNS, axis=1)
    target = iris.target.map(dict(enumerate(iris.target_names))).rename("species")
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.3,
                                                        random_state=0, stratify=target)
    params = {"C": 1.0, "max_iter": 1000}
    estimator = make_pipeline(StandardScaler(), LogisticRegression(**params)).fit(x_train,
                                                                                  y_train)
    predicted = estimator.predict(x_test)
    metrics = {"accuracy": round(float(accuracy_score(y_test, predicted)), 4),
               "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 4)}
    return TrainedModel(
        name=CLASSIFIER, task="classification",
        description="Demo: iris species from sepal and petal measurements (logistic "
                    "regression).",
        card=("## Iris species classifier (demo)\n\n"
              "Trained at first start on scikit-learn's bundled iris dataset (150 flowers, "
              "3 species), 70/30 stratified split.\n\n"
              "* **Input**: `sepal_length`, `sepal_width`, `petal_length`, `petal_width` (cm)\n"
              "* **Output**: `setosa`, `versicolor` or `virginica`\n"
              "* **Drift reference**: the 105 training rows\n"),
        tags=["demo", "scikit-learn", "classification"], estimator=estimator,
        features=features, target=target, train=x_train.reset_index(drop=True),
        params={"estimator": "StandardScaler + LogisticRegression", **params},
        metrics=metrics, dataset_name="sklearn.datasets.load_iris")


def train_regressor() -> TrainedModel:
    from sklearn.datasets import load_diabetes  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.ensemble import RandomForestRegressor  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.metrics import mean_absolute_error, r2_score  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - lazy: sklearn ~1.5 s import

    diabetes = load_diabetes(as_frame=True)
    features, target = diabetes.data, diabetes.target.rename("progression")
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.3,
                                                        random_state=0)
    params = {"n_estimators": 50, "max_depth": 6, "random_state": 0}
    estimator = RandomForestRegressor(**params).fit(x_train, y_train)
    predicted = estimator.predict(x_test)
    metrics = {"mae": round(float(mean_absolute_error(y_test, predicted)), 3),
               "r2": round(float(r2_score(y_test, predicted)), 4)}
    return TrainedModel(
        name=REGRESSOR, task="regression",
        description="Demo: diabetes progression one year after baseline (random forest).",
        card=("## Diabetes progression regressor (demo)\n\n"
              "Trained at first start on scikit-learn's bundled diabetes dataset (442 "
              "patients, 10 standardised baseline measurements), 70/30 split.\n\n"
              "* **Input**: `age`, `sex`, `bmi`, `bp`, `s1`…`s6`\n"
              "* **Output**: a disease progression score (about 25-350)\n"),
        tags=["demo", "scikit-learn", "regression"], estimator=estimator,
        features=features, target=target, train=x_train.reset_index(drop=True),
        params={"estimator": "RandomForestRegressor", **params}, metrics=metrics,
        dataset_name="sklearn.datasets.load_diabetes")


def train_xgboost() -> TrainedModel:
    """The iris classifier again, as an ``XGBClassifier`` logged with stock ``mlflow.xgboost``
    (``MODELPORT_DEMO_FLAVORS=xgboost``)."""
    import xgboost as xgb  # noqa: PLC0415 - lazy: optional, only with MODELPORT_DEMO_FLAVORS
    from sklearn.datasets import load_iris  # noqa: PLC0415 - lazy: sklearn ~1.5 s import
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - lazy: sklearn ~1.5 s import

    iris = load_iris(as_frame=True)
    features = iris.data.set_axis(IRIS_COLUMNS, axis=1)
    target = iris.target.rename("species")
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.3,
                                                        random_state=0, stratify=target)
    params = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.3}
    estimator = xgb.XGBClassifier(**params).fit(x_train, y_train)
    accuracy = float((estimator.predict(x_test) == y_test.to_numpy()).mean())
    return TrainedModel(
        name=XGBOOST, task="classification",
        description="Demo: iris species from flower measurements (XGBoost, mlflow.xgboost).",
        card=("## Iris classifier, XGBoost (demo)\n\n"
              "The iris classifier as an `XGBClassifier`, logged with `mlflow.xgboost`: "
              "served by the XGBoost fast path (`inplace_predict`).\n\n"
              "* **Input**: `sepal_length`, `sepal_width`, `petal_length`, `petal_width` (cm)\n"
              "* **Output**: the class index (0 setosa, 1 versicolor, 2 virginica)\n"),
        tags=["demo", "xgboost", "classification"], estimator=estimator,
        features=features, target=target, train=x_train.reset_index(drop=True),
        params={"estimator": "XGBClassifier", **params},
        metrics={"accuracy": round(accuracy, 4)}, dataset_name="sklearn.datasets.load_iris",
        fmt="mlflow")


def mlflow_zip(model: TrainedModel) -> bytes:
    """`model` saved with its stock mlflow flavor, zipped as an upload."""
    import tempfile  # noqa: PLC0415 - only here
    import zipfile  # noqa: PLC0415 - only here
    from importlib import metadata  # noqa: PLC0415 - only here
    from pathlib import Path  # noqa: PLC0415 - only here

    import mlflow.xgboost  # noqa: PLC0415 - lazy: mlflow ~2 s import, optional demo model only

    requirements = [f"{name}=={metadata.version(name)}" for name in
                    ("mlflow", "numpy", "pandas", "scipy", "scikit-learn", "xgboost-cpu")]
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.xgboost.save_model(model.estimator, str(path),
                                  input_example=model.train.head(3),
                                  pip_requirements=requirements)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(path.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(path).as_posix())
    return buffer.getvalue()


def sample_rows(model: TrainedModel, n: int, rng: np.random.Generator, *,
                shift: float = 0.0) -> tuple[list[list[float]], list[Any]]:
    """``n`` realistic rows (dataset rows with a little noise) and their true labels.

    ``shift`` > 0 moves the second half of the features by that many standard deviations and
    widens them: the drifted segment of the demo traffic (labels stay the true ones, so the
    ground-truth charts show the model getting worse on drifted data)."""
    index = rng.integers(0, len(model.features), size=n)
    rows = model.features.iloc[index].to_numpy(dtype=float)
    std = model.features.std().to_numpy(dtype=float)
    rows = rows + rng.normal(0.0, 0.05, size=rows.shape) * std
    if shift:
        moved = slice(len(std) // 2, None)
        rows[:, moved] = rows[:, moved] * 1.3 + shift * std[moved]
    return _rounded(rows.tolist()), model.target.iloc[index].tolist()


@dataclass(frozen=True)
class Spec:
    """What the seeding needs to know about a demo model before (or without) training it."""

    name: str
    task: str
    train: Callable[[], TrainedModel]


SPECS = (Spec(CLASSIFIER, "classification", train_classifier),
         Spec(REGRESSOR, "regression", train_regressor))


# Optional demo models of other frameworks, by MODELPORT_DEMO_FLAVORS name.
FLAVOR_SPECS = {"xgboost": Spec(XGBOOST, "classification", train_xgboost)}


def flavor_specs(names: list[str]) -> tuple[Spec, ...]:
    """The optional demo models `names` asks for; an unknown name is an error naming them all."""
    unknown = sorted(set(names) - set(FLAVOR_SPECS))
    if unknown:
        raise ValueError(f"MODELPORT_DEMO_FLAVORS: unknown {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(FLAVOR_SPECS))})")
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ValueError(f"MODELPORT_DEMO_FLAVORS={name} needs {name} in the platform's "
                             "environment to train the demo model: "
                             "pip install -r requirements/flavors.txt")
    return tuple(FLAVOR_SPECS[n] for n in dict.fromkeys(names))


def spec_of(model_name: str) -> Spec:
    for spec in (*SPECS, *FLAVOR_SPECS.values()):
        if spec.name == model_name:
            return spec
    raise KeyError(f"'{model_name}' is not a demo model")
