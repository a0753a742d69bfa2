"""``manage.py import_mlflow_registry``: once, after upgrading to the platform's own MLflow
registry API — import the versions training scripts registered in the tracking server's own
registry before, each for the user who created it through the route (``MlflowVersion``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from registry import mlflow_services, mlflow_upstream


class Command(BaseCommand):
    help = ("Import, once, the model versions registered in the MLflow tracking server's own "
            "registry before Modelport answered MLflow's registry API itself.")

    def handle(self, *args, **options) -> None:
        if not mlflow_upstream.answers():
            raise CommandError(f"The MLflow tracking server at {mlflow_upstream.describe()} "
                               "does not answer; start it and run this again.")
        imported = mlflow_services.sync_from_mlflow()
        for version in imported:
            self.stdout.write(f"imported {version.source} as {version.model.name} "
                              f"v{version.version} ({version.status})")
        refused = mlflow_services.refused_count()
        self.stdout.write(f"{len(imported)} version(s) imported; {refused} not imported "
                          "(see the audit log: mlflow.version_refused).")
