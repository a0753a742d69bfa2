from tests.deployments.conftest import iris_dir  # noqa: F401 - shared fixtures
from tests.registry.conftest import (  # noqa: F401 - shared fixtures
    iris_estimator,
    mlflow_model_dir,
    sandbox_image,
)
