"""This checkout's client first on the path (the shared virtualenv's editable install may be
another checkout's), and the fixtures the client tests share."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client"))

from tests.deployments.conftest import iris_dir  # noqa: F401 - shared fixtures
from tests.registry.conftest import (  # noqa: F401 - shared fixtures
    iris_estimator,
    mlflow_model_dir,
    sandbox_image,
)
