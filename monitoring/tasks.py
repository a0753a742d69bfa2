"""Beat tasks (rollup, prune, replica stats, alert evaluation) and the notification deliveries."""

from __future__ import annotations

import logging
from functools import partial

from celery import shared_task
from django.core.mail import send_mail
from django.db import transaction

from jobs.models import JobStatus

from . import alerts, batch, gateway_errors, prom, rollups, webhooks
from .models import Alert

log = logging.getLogger(__name__)


@shared_task(name="monitoring.tasks.rollup", ignore_result=True, expires=60)
def rollup(max_passes: int = 20) -> int:
    """Beat: fold new raw prediction records, and the gateway's traffic samples (its own
    502/503/504 answers), into minute rollups until caught up."""
    total = 0
    for _ in range(max_passes):
        n = rollups.rollup()
        total += n
        if n == 0:
            break
    for _ in range(max_passes):
        n = gateway_errors.rollup()
        total += n
        if n == 0:
            break
    return total


@shared_task(name="monitoring.tasks.prune", ignore_result=True, expires=3600)
def prune() -> dict:
    """Beat: delete raw records past ``MODELPORT_MONITORING_RAW_RETENTION_DAYS``."""
    return rollups.prune()


@shared_task(name="monitoring.tasks.collect_replica_stats", ignore_result=True, expires=15)
def collect_replica_stats() -> int:
    """Beat: one CPU/memory sample of every live replica (``rollups.collect_replica_stats``)."""
    return rollups.collect_replica_stats()


@shared_task(name="monitoring.tasks.record_batch_drift", ignore_result=True, acks_late=True)
def record_batch_drift(job_id: int) -> None:
    """A succeeded batch job's input against its version's reference (``monitoring.batch``)."""
    batch.record_job_input(job_id=job_id)


def on_job_finished(sender, *, job_id: int, status: str, **_: object) -> None:
    """``jobs.signals.job_finished`` receiver: a succeeded job's drift is computed by a task
    (reading up to a million rows is no work for the runner's loop)."""
    if status == JobStatus.SUCCEEDED:
        transaction.on_commit(partial(record_batch_drift.delay, job_id))


@shared_task(name="monitoring.tasks.evaluate_alerts", ignore_result=True, expires=120)
def evaluate_alerts() -> int:
    """Beat: evaluate alert rules; each firing/resolved transition is notified by its own task."""
    events = alerts.evaluate_alerts()
    for alert_id, event in events:
        transaction.on_commit(partial(notify_alert.delay, alert_id, event))
    alerts.start_retrain_jobs()
    return len(events)


def _email(text: str, recipients: list[str]) -> str:
    sent = send_mail(subject=text[:120], message=text, from_email=None,
                     recipient_list=recipients)
    return f"sent {sent} message(s)"


MAX_ATTEMPTS = 4


@shared_task(name="monitoring.tasks.notify_alert", ignore_result=True, acks_late=True)
def notify_alert(alert_id: int, event: str, channels: list[str] | None = None,
                 attempt: int = 1) -> dict:
    """Send an alert's transition to its rule's webhook (Slack-compatible ``{"text"}``), emails
    and — when it starts firing — the retraining webhook. Each outcome is kept on the alert:
    ``HTTP <status>``, ``refused: <reason>`` (an internal destination, checked again now) or
    ``failed (attempt n): <what>`` — never a destination's answer. A failed channel (only that
    one) is retried with backoff, up to ``MAX_ATTEMPTS`` times; a refused one is not."""
    alert = (Alert.objects.select_related("rule", "rule__deployment", "rule__deployment__model")
             .filter(pk=alert_id).first())
    if alert is None:
        return {}
    rule = alert.rule
    text = alerts.notification_text(alert, event)
    senders = {}
    if rule.webhook_url:
        senders["webhook"] = lambda: webhooks.post(rule.webhook_url, {"text": text})
    if rule.emails:
        senders["email"] = lambda: _email(text, rule.emails)
    if event == "firing" and rule.retrain_webhook_url:
        senders["retrain"] = lambda: webhooks.post(rule.retrain_webhook_url,
                                                   alerts.retrain_payload(alert))
    outcome: dict[str, str] = {}
    failed = []
    for channel, send in senders.items():
        if channels is not None and channel not in channels:
            continue
        try:
            outcome[channel] = send()
            prom.NOTIFICATIONS.labels(channel, "ok").inc()
        except webhooks.Undelivered as exc:
            log.warning("alert %s: %s notification not delivered (attempt %d): %s", alert_id,
                        channel, attempt, exc.outcome)
            refused = exc.outcome.startswith("refused:")
            outcome[channel] = (exc.outcome if refused
                                else f"failed (attempt {attempt}): {exc.outcome}")[:300]
            prom.NOTIFICATIONS.labels(channel, "refused" if refused else "failed").inc()
            if exc.retry:
                failed.append(channel)
        except Exception as exc:  # one failing channel must not stop the others
            log.warning("alert %s: %s notification failed (attempt %d): %s", alert_id, channel,
                        attempt, exc, exc_info=channel != "email")
            # The mail server is the platform's own; any other text could come from elsewhere.
            shown = str(exc) if channel == "email" else "unexpected error (see the worker log)"
            outcome[channel] = f"failed (attempt {attempt}): {shown}"[:300]
            prom.NOTIFICATIONS.labels(channel, "failed").inc()
            failed.append(channel)
    with transaction.atomic():
        row = Alert.objects.select_for_update().get(pk=alert_id)
        notified = dict(row.notified or {})
        notified[event] = {**notified.get(event, {}), **outcome}
        row.notified = notified
        row.save(update_fields=["notified"])
    if failed and attempt < MAX_ATTEMPTS:
        notify_alert.apply_async((alert_id, event, failed, attempt + 1),
                                 countdown=30 * 2 ** (attempt - 1))
    return outcome
