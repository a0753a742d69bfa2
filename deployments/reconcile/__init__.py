"""The reconciler: make what runs match what the database says should run.

``reconciler`` holds the ``Reconciler`` (one pass over one deployment) and the entry functions
the tasks call; ``strategies`` the stepped rollouts. The names below are the package's public
face (tasks, workers and tests import them from here).
"""

from ..revisions import model_dir_for
from .reconciler import Reconciler, reconcile_deployment, remove_deployment_containers

__all__ = ["Reconciler", "model_dir_for", "reconcile_deployment", "remove_deployment_containers"]
