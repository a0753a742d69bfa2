"""The job runner: a reconciler that advances a job by one tick at a time (``tick``), every
step's state in the database and every container found again by its labels, so any worker can
take the next tick and nothing ever sleeps in a task."""
