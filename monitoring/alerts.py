"""Alert rules: their verbs, the evaluation the beat runs, and what notifications say.

A rule watches one metric (``METRICS``) of one deployment over a window. ``evaluate_alerts``
computes each enabled rule's value with the reads the charts use (``monitoring.services``) and
opens or resolves ``Alert`` rows; ``monitoring.tasks`` sends the notifications after commit.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from deployments.models import Deployment
from jobs import schedules as job_schedules
from jobs.models import JobSchedule, Trigger
from teams import audit
from teams.access import require_team_role
from teams.roles import Role

from . import webhooks
from .models import Alert, AlertRule, AlertState, Comparison, Verdict
from .services import drift_report, metrics_series, quality_series, revision_row
from .stats import minute_of

log = logging.getLogger(__name__)


# --- Alert rules -----------------------------------------------------------------------------
METRICS = {
    "latency_p50": "p50 latency (ms)",
    "latency_p95": "p95 latency (ms)",
    "latency_p99": "p99 latency (ms)",
    "error_rate": "error rate (%)",
    "gateway_error_rate": "gateway error rate (%): 502/503/504 answered by the gateway",
    "gateway_errors": "gateway errors: 502/503/504 answered by the gateway",
    "requests_per_min": "requests per minute",
    "psi_max": "largest PSI of any feature",
    "drifted_features": "number of drifted features",
    "accuracy": "accuracy (0-1)",
    "f1": "macro F1 (0-1)",
    "mae": "mean absolute error",
    "rmse": "root mean squared error",
}
DRIFT_METRICS = ("psi_max", "drifted_features")
QUALITY_METRICS = ("accuracy", "f1", "mae", "rmse")
# Rows a rule needs in its window before it may fire: a PSI over 3 rows is noise. Traffic
# metrics have none by default (a rule can set one: ``min_samples``).
DEFAULT_MIN_SAMPLES = {**dict.fromkeys(DRIFT_METRICS, 100), **dict.fromkeys(QUALITY_METRICS, 50)}
MAX_MIN_SAMPLES = 10_000_000
MAX_SILENCE = timedelta(days=30)
RULE_FIELDS = ["name", "metric", "window_minutes", "comparison", "threshold", "enabled",
               "webhook_url", "emails", "retrain_webhook_url", "min_samples"]
AUDIT_FIELDS = [*RULE_FIELDS, "job_schedule"]


def _check_rule(data: dict[str, Any], stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a rule's fields. ``stored``: the rule's current values — a webhook URL left as
    it was is not checked again here (it is at each delivery), so a rule whose destination has
    since become internal can still be disabled or edited."""
    if data.get("metric") not in METRICS:
        raise InvalidInput(f"Unknown metric '{data.get('metric')}'; use one of "
                           f"{', '.join(sorted(METRICS))}.", field="metric")
    if data.get("comparison", ">") not in Comparison.values:
        raise InvalidInput("comparison must be one of >, >=, <, <=.", field="comparison")
    window = data.get("window_minutes", 5)
    if not isinstance(window, int) or not 1 <= window <= 7 * 24 * 60:
        raise InvalidInput("window_minutes must be 1-10080.", field="window_minutes")
    threshold = data.get("threshold")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise InvalidInput("threshold must be a number.", field="threshold")
    min_samples = data.get("min_samples")
    if min_samples is not None and (isinstance(min_samples, bool)
                                    or not isinstance(min_samples, int)
                                    or not 0 <= min_samples <= MAX_MIN_SAMPLES):
        raise InvalidInput(f"min_samples must be a whole number 0-{MAX_MIN_SAMPLES} (or empty: "
                           "the metric's default).", field="min_samples")
    emails = data.get("emails") or []
    if not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e
                                               for e in emails):
        raise InvalidInput("emails must be a list of addresses.", field="emails")
    data["emails"] = emails
    for field in ("webhook_url", "retrain_webhook_url"):
        value = data.get(field, "")
        if stored is None or value != stored.get(field):
            data[field] = webhooks.check_rule_url(value, field)
    return data


def _job_schedule(deployment: Deployment, value: Any) -> JobSchedule | None:
    """The retraining hook's schedule: one of the deployment's team (None clears it)."""
    if value in (None, ""):
        return None
    if isinstance(value, JobSchedule):
        value = value.pk
    found = (JobSchedule.objects.filter(pk=value, team_id=deployment.team_id).first()
             if isinstance(value, int) and not isinstance(value, bool) else None)
    if found is None:
        raise NotFound(f"Team '{deployment.team.slug}' has no job schedule {value}.",
                       field="job_schedule")
    return found


def _check_rule_name(deployment: Deployment, name: Any, exclude: int | None = None) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not 0 < len(name) <= 100:
        raise InvalidInput("name must be 1-100 characters.", field="name")
    taken = AlertRule.objects.filter(deployment=deployment, name=name)
    if exclude is not None:
        taken = taken.exclude(pk=exclude)
    if taken.exists():
        raise Conflict(f"Deployment '{deployment.name}' already has a rule named '{name}'.",
                       code="name_taken", field="name")
    return name


@transaction.atomic
def create_alert_rule(*, actor, deployment: Deployment, name: str, metric: str,
                      threshold: float, comparison: str = ">", window_minutes: int = 5,
                      webhook_url: str = "", emails: list[str] | None = None,
                      retrain_webhook_url: str = "", enabled: bool = True,
                      min_samples: int | None = None,
                      job_schedule: JobSchedule | int | None = None) -> AlertRule:
    require_team_role(actor, deployment.team, Role.ENGINEER, "creating alert rules")
    name = _check_rule_name(deployment, name)
    data = _check_rule({"metric": metric, "threshold": threshold, "comparison": comparison,
                        "window_minutes": window_minutes, "webhook_url": webhook_url,
                        "emails": emails, "retrain_webhook_url": retrain_webhook_url,
                        "min_samples": min_samples})
    rule = AlertRule.objects.create(deployment=deployment, name=name, enabled=enabled,
                                    created_by=actor,
                                    job_schedule=_job_schedule(deployment, job_schedule), **data)
    audit.record(actor=actor, action="alert_rule.created", obj=rule, team=deployment.team,
                 after=audit.snapshot(rule, AUDIT_FIELDS))
    return rule


@transaction.atomic
def update_alert_rule(*, actor, rule: AlertRule, **changes: Any) -> AlertRule:
    require_team_role(actor, rule.deployment.team, Role.ENGINEER, "editing alert rules")
    rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
    before = audit.snapshot(rule, AUDIT_FIELDS)
    if "job_schedule" in changes:  # None given: no retraining job any more
        rule.job_schedule = _job_schedule(rule.deployment, changes["job_schedule"])
    stored = {f: getattr(rule, f) for f in RULE_FIELDS}
    data = stored | {k: v for k, v in changes.items() if k in RULE_FIELDS and v is not None}
    if "min_samples" in changes:  # None given: back to the metric's default
        data["min_samples"] = changes["min_samples"]
    data["name"] = _check_rule_name(rule.deployment, data.get("name"), exclude=rule.pk)
    data = _check_rule(data, stored=stored)
    for field, value in data.items():
        setattr(rule, field, value)
    rule.save()
    after = audit.snapshot(rule, AUDIT_FIELDS)
    if after != before:
        audit.record(actor=actor, action="alert_rule.updated", obj=rule,
                     team=rule.deployment.team, before=before, after=after)
    return rule


@transaction.atomic
def delete_alert_rule(*, actor, rule: AlertRule) -> None:
    require_team_role(actor, rule.deployment.team, Role.ENGINEER, "deleting alert rules")
    audit.record(actor=actor, action="alert_rule.deleted", obj=rule, team=rule.deployment.team,
                 before=audit.snapshot(rule, AUDIT_FIELDS))
    rule.delete()


def min_samples_of(rule: AlertRule) -> int:
    """The rule's own minimum, else its metric's default."""
    if rule.min_samples is not None:
        return rule.min_samples
    return DEFAULT_MIN_SAMPLES.get(rule.metric, 0)


def measure(rule: AlertRule, now: datetime) -> tuple[float | None, int]:
    """The rule's metric over its window ending ``now`` and the rows it stands on: input rows
    for drift, labelled predictions for quality, requests otherwise. Value None: no data."""
    end = minute_of(now)
    start = end - timedelta(minutes=rule.window_minutes)
    deployment = rule.deployment
    metric = rule.metric
    if metric in DRIFT_METRICS:
        report = drift_report(deployment=deployment, start=start, end=now)
        measured = [f for f in report["features"] if f["n"] > 0]
        rows = int(report["rows"])
        if not measured:
            return None, rows
        if metric == "psi_max":
            return max(f["psi"] for f in measured), rows
        return float(sum(f["drifted"] for f in measured)), rows
    if metric in QUALITY_METRICS:
        quality = quality_series(deployment=deployment, start=start, end=end,
                                 step=rule.window_minutes * 60)
        return quality["totals"].get(metric), int(quality["totals"]["labelled"])
    series = metrics_series(deployments=[deployment], start=start, end=end,
                            step=rule.window_minutes * 60)
    totals = series["totals"]
    if metric.startswith("gateway_"):
        return totals.get(metric), int(totals.get("gateway_requests") or 0)
    requests = round(totals["requests"] or 0.0)
    if metric == "requests_per_min":
        return (totals["requests"] or 0.0) / rule.window_minutes, requests
    return totals.get(metric), requests


def metric_value(rule: AlertRule, now: datetime) -> float | None:
    """The rule's metric over its window ending ``now``; None when there is no data."""
    return measure(rule, now)[0]


def _breaches(value: float, comparison: str, threshold: float) -> bool:
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold,
            "<=": value <= threshold}[comparison]


def describe(rule: AlertRule, value: float | None) -> str:
    shown = "no data" if value is None else f"{value:.4g}"
    return (f"{rule.deployment.name}: {rule.name} — {METRICS.get(rule.metric, rule.metric)} "
            f"over {rule.window_minutes} min is {shown} (rule: {rule.comparison} "
            f"{rule.threshold:g})")


def verdict_text(rule: AlertRule) -> str:
    """The last evaluation in words, e.g. "not enough data (3 of 100)"."""
    if rule.last_evaluated_at is None:
        return "not evaluated yet"
    if rule.last_verdict == Verdict.NOT_ENOUGH_DATA:
        return f"not enough data ({rule.last_samples or 0} of {min_samples_of(rule)})"
    return Verdict(rule.last_verdict).label.lower() if rule.last_verdict else "—"


def _verdict(rule: AlertRule, value: float | None, samples: int) -> str:
    if samples < min_samples_of(rule):
        return Verdict.NOT_ENOUGH_DATA
    if value is None:
        return Verdict.NO_DATA
    return Verdict.BREACH if _breaches(value, rule.comparison, rule.threshold) else Verdict.OK


def _notify_due(alert: Alert, now: datetime) -> bool:
    """Whether an open alert is notified (again) now: one opened while its rule was silenced,
    as soon as the silence ends; a firing alert nobody acknowledged, every
    ``MODELPORT_ALERT_RENOTIFY_MINUTES``; an acknowledged one, not until it fires anew."""
    if alert.acknowledged_at is not None:
        return False
    if alert.last_notified_at is None:
        return True
    minutes = settings.MODELPORT_ALERT_RENOTIFY_MINUTES
    return bool(minutes) and now - alert.last_notified_at >= timedelta(minutes=minutes)


def _apply(rule: AlertRule, value: float | None, verdict: str, now: datetime, *,
           silenced: bool) -> tuple[int, str] | None:
    """Open, update or resolve the rule's alert; the event to notify, if any (none while the
    rule is silenced). Not enough data and no data leave an open alert as it is (nothing is
    known either way)."""
    open_alert = (Alert.objects.select_for_update()
                  .filter(rule=rule, state=AlertState.FIRING).first())
    if verdict == Verdict.BREACH and open_alert is None:
        alert = Alert.objects.create(rule=rule, value=value, started_at=now,
                                     last_notified_at=None if silenced else now,
                                     message=describe(rule, value))
        return None if silenced else (alert.pk, "firing")
    if open_alert is None or verdict not in (Verdict.OK, Verdict.BREACH):
        return None
    if verdict == Verdict.OK:
        open_alert.state = AlertState.RESOLVED
        open_alert.resolved_at = now
        open_alert.value = value
        open_alert.save(update_fields=["state", "resolved_at", "value"])
        return None if silenced else (open_alert.pk, "resolved")
    open_alert.value = value
    fields = ["value"]
    due = not silenced and _notify_due(open_alert, now)
    if due:
        open_alert.last_notified_at = now
        fields.append("last_notified_at")
    open_alert.save(update_fields=fields)
    return (open_alert.pk, "firing") if due else None


def evaluate_alerts(*, now: datetime | None = None) -> list[tuple[int, str]]:
    """Evaluate every enabled rule; open or resolve alerts. Returns (alert id, event) pairs
    for the notifications to send (the task enqueues them after commit): none for a silenced
    rule, whose alerts still open and resolve."""
    now = now or timezone.now()
    events = []
    for rule in AlertRule.objects.filter(enabled=True).select_related("deployment",
                                                                       "deployment__model"):
        try:
            value, samples = measure(rule, now)
        except Exception:  # one broken rule must not stop the others
            log.exception("evaluating alert rule %s failed", rule.pk)
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now,
                                                        last_verdict=Verdict.ERROR)
            continue
        verdict = _verdict(rule, value, samples)
        with transaction.atomic():
            AlertRule.objects.filter(pk=rule.pk).update(
                last_evaluated_at=now, last_value=value, last_samples=samples,
                last_verdict=verdict)
            event = _apply(rule, value, verdict, now, silenced=rule.silenced_until is not None
                           and rule.silenced_until > now)
        if event is not None:
            events.append(event)
    return events


def start_retrain_jobs() -> dict[int, str]:
    """The retraining hook: each firing alert whose rule names an enabled job schedule starts
    one job of it (trigger ``alert``), once per alert — a re-notification does not start
    another. Silence mutes notifications, not this. The alert is claimed under a row lock
    (``notified["job"]``) before the job is created, so two beats never start two; the
    outcome ("job <id>" or the refusal) is kept there. Returns {alert id: outcome}."""
    outcome: dict[int, str] = {}
    candidates = (Alert.objects.filter(state=AlertState.FIRING,
                                       rule__job_schedule__enabled=True)
                  .exclude(notified__has_key="job").values_list("pk", flat=True))
    for pk in list(candidates):
        with transaction.atomic():
            alert = (Alert.objects.select_for_update(skip_locked=True, of=("self",))
                     .select_related("rule__job_schedule__team", "rule__job_schedule__model",
                                     "rule__job_schedule__version",
                                     "rule__job_schedule__created_by")
                     .filter(pk=pk, state=AlertState.FIRING).first())
            if alert is None or "job" in (alert.notified or {}):
                continue
            schedule = alert.rule.job_schedule
            alert.notified = {**(alert.notified or {}), "job": "starting"}
            alert.save(update_fields=["notified"])
        if schedule is None:
            continue
        result = job_schedules.start(schedule, trigger=Trigger.ALERT)
        with transaction.atomic():
            row = Alert.objects.select_for_update().get(pk=pk)
            row.notified = {**(row.notified or {}), "job": result[:300]}
            row.save(update_fields=["notified"])
        outcome[pk] = result
    return outcome


# --- Silence and acknowledge -----------------------------------------------------------------
@transaction.atomic
def silence_alert_rule(*, actor, rule: AlertRule, until: datetime | None) -> AlertRule:
    """No notifications from the rule until ``until`` (None: lift the silence). Its alerts
    still open and resolve, on the page and in the API."""
    require_team_role(actor, rule.deployment.team, Role.ENGINEER, "silencing alert rules")
    now = timezone.now()
    if until is not None:
        if timezone.is_naive(until):
            raise InvalidInput("until needs a time zone (e.g. 2026-01-01T12:00:00Z).",
                               field="until")
        if until <= now:
            raise InvalidInput("until must be in the future.", field="until")
        if until - now > MAX_SILENCE:
            raise InvalidInput("A silence lasts at most 30 days.", field="until")
    rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
    before = {"silenced_until": rule.silenced_until.isoformat() if rule.silenced_until
              else None}
    rule.silenced_until = until
    rule.silenced_by = actor if until is not None else None
    rule.save(update_fields=["silenced_until", "silenced_by"])
    audit.record(actor=actor, action="alert_rule.silenced" if until else "alert_rule.unsilenced",
                 obj=rule, team=rule.deployment.team, before=before,
                 after={"silenced_until": until.isoformat() if until else None})
    return rule


@transaction.atomic
def acknowledge_alert(*, actor, alert: Alert) -> Alert:
    """Someone is on it: the firing alert is not notified again until it resolves and fires
    anew (a new alert)."""
    require_team_role(actor, alert.rule.deployment.team, Role.ENGINEER, "acknowledging alerts")
    alert = Alert.objects.select_for_update().select_related("rule").get(pk=alert.pk)
    if alert.state != AlertState.FIRING:
        raise Conflict(f"Alert {alert.pk} is {alert.state}; only a firing alert can be "
                       "acknowledged.", code="not_firing")
    if alert.acknowledged_at is not None:
        raise Conflict(f"Alert {alert.pk} was already acknowledged.", code="acknowledged")
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = actor
    alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
    audit.record(actor=actor, action="alert.acknowledged", obj=alert,
                 team=alert.rule.deployment.team,
                 after={"rule": alert.rule.name, "acknowledged_at":
                        alert.acknowledged_at.isoformat()})
    return alert


def notification_text(alert: Alert, event: str) -> str:
    mark = "🔴 FIRING" if event == "firing" else "✅ RESOLVED"
    link = f"{settings.MODELPORT_BASE_URL.rstrip('/')}/monitoring/deployments/" \
           f"{alert.rule.deployment.name}/"
    return f"{mark} {describe(alert.rule, alert.value)} — {link}"


def retrain_payload(alert: Alert) -> dict[str, Any]:
    rule = alert.rule
    deployment = rule.deployment
    rev = revision_row(deployment, deployment.revision)
    return {"event": "alert.firing", "alert_id": alert.pk, "rule": rule.name,
            "metric": rule.metric, "value": alert.value, "threshold": rule.threshold,
            "comparison": rule.comparison, "deployment": deployment.name,
            "model": deployment.model.name,
            "version": rev.model_version.version if rev else None,
            "started_at": alert.started_at.isoformat()}
