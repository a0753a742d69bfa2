from __future__ import annotations

from celery import shared_task

from . import baselines, retries, services


@shared_task(name="registry.tasks.validate_version", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def validate_version(version_id: int) -> None:
    """Validate an uploaded version in the sandbox (idempotent: a retry re-checks the status)."""
    services.validate_version(version_id=version_id)


@shared_task(name="registry.tasks.compute_reference", acks_late=True, ignore_result=True,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def compute_reference(version_id: int) -> None:
    """Parse and profile a version's reference data (CSV/Parquet, or the input example): the
    drift baseline. Idempotent: a retry or a superseded upload finds nothing pending."""
    baselines.compute_reference(version_id=version_id)


@shared_task(name="registry.tasks.prune_staging", ignore_result=True, expires=3600)
def prune_staging() -> int:
    """Beat, hourly: kept uploads of failed versions past their time, unreferenced staging."""
    return retries.prune_staging()
