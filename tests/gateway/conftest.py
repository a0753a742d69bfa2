"""The gateway's tests reuse the deployments' fixtures: a ready iris version (no sandbox) and
stand-in replicas on unix sockets or loopback TCP."""

from tests.deployments.conftest import (  # noqa: F401 - fixtures, registered by import
    iris_dir,
    iris_model,
    other_team,
    stranger,
    upstreams,
    v1,
)
