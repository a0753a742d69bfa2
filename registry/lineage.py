"""Links from a version's lineage into the platform's own MLflow UI (``/mlflow/``, behind the
portal's sign-in).

Only a version imported from the platform's tracking server (``source_format == "import"``: a
``runs:/``/``models:/`` import, or a stock MLflow client registering through ``/mlflow``) has its
run there. An uploaded MLflow model may carry the ``run_id`` of a run logged on some other
tracking server, which the platform does not know: that stays text.

MLflow's UI routes by the URL fragment (a hash router): ``#/experiments/<id>/runs/<run>`` and
its tabs ``/model-metrics`` and ``/artifacts``; ``#/runs/<run>`` finds the experiment itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from django.urls import reverse

from .models import ModelVersion


@dataclass(frozen=True)
class MlflowLinks:
    run: str
    experiment: str  # '' when the experiment is not known
    metrics: str
    artifacts: str


def mlflow_links(version: ModelVersion) -> MlflowLinks | None:
    """The version's run, experiment, metrics and artifacts in the platform's MLflow UI; None
    when its run is not on the platform's tracking server (or it has none)."""
    lineage = version.lineage or {}
    run_id = str(lineage.get("mlflow_run_id") or "")
    if version.source_format != "import" or not run_id:
        return None
    ui = reverse("mlflow")
    run = quote(run_id, safe="")
    experiment_id = str(lineage.get("mlflow_experiment_id") or "")
    if not experiment_id:
        direct = f"{ui}#/runs/{run}"
        return MlflowLinks(run=direct, experiment="", metrics=direct, artifacts=direct)
    experiment = f"{ui}#/experiments/{quote(experiment_id, safe='')}"
    return MlflowLinks(run=f"{experiment}/runs/{run}", experiment=experiment,
                       metrics=f"{experiment}/runs/{run}/model-metrics",
                       artifacts=f"{experiment}/runs/{run}/artifacts")
