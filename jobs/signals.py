"""What jobs tells the apps above it, which it never imports (monitoring profiles a finished
job's input for the model's drift page).

``job_finished`` is sent by the runner once a job's status is final, after the transaction
that set it commits (``transaction.on_commit``), with ``sender=BatchJob``, ``job_id`` (int) and
``status`` (a ``JobStatus`` value). Receivers must be quick: enqueue work, never do it inline.
"""

from __future__ import annotations

from django.dispatch import Signal

job_finished = Signal()
