"""The reconciler: make what runs match what the database says should run.

``loop`` has the entry points the tasks call; ``reconciler`` the ``Reconciler`` (one pass over
one deployment, step by step); ``replicas`` starts replicas and waits for them; ``outcomes``
ends a pass (``Outcome``); ``strategies`` has one object per rollout type. The names below are
the package's public face (tasks, workers and tests import them from here).
"""

from ..revisions import model_dir_for
from .loop import reconcile_deployment, remove_deployment_containers
from .reconciler import Reconciler

__all__ = ["Reconciler", "model_dir_for", "reconcile_deployment", "remove_deployment_containers"]
