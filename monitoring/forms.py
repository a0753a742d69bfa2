"""Portal forms for alert rules, sampling and drift thresholds.

They only parse what the browser sends; the rules (known metric, comparison, URLs, ranges,
roles) live in the services (``monitoring.alerts``, ``monitoring.services``), whose error
messages the views attach to the named field."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from .alerts import METRICS
from .models import AlertRule, Comparison, TaskType


class AlertRuleForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="e.g. “p95 latency”; unique per deployment.")
    # Plain text fields with a select: an unknown value gets the service's message, which lists
    # the metrics that exist, rather than Django's generic "Select a valid choice".
    metric = forms.CharField(widget=forms.Select(choices=list(METRICS.items())))
    comparison = forms.CharField(initial=">",
                                 widget=forms.Select(choices=Comparison.choices))
    threshold = forms.FloatField(help_text="In the metric's unit: ms, %, requests/min, PSI, 0-1.")
    window_minutes = forms.IntegerField(initial=5, label="Window (minutes)")
    webhook_url = forms.CharField(required=False, max_length=500, label="Webhook URL",
                                  widget=forms.URLInput(attrs={
                                      "placeholder": "https://hooks.slack.com/…"}),
                                  help_text="Slack-compatible JSON {\"text\": …}. Loopback, "
                                            "private, link-local and metadata addresses are "
                                            "refused unless a platform admin allow-lists them.")
    emails = forms.CharField(required=False, label="Emails",
                             help_text="Comma-separated addresses.")
    retrain_webhook_url = forms.CharField(required=False, max_length=500,
                                          label="Retraining webhook URL",
                                          widget=forms.URLInput(),
                                          help_text="POSTed when the rule starts firing; "
                                                    "the same destinations are refused.")
    min_samples = forms.IntegerField(
        required=False, min_value=0, label="Minimum sample size",
        help_text="Below this many rows in the window the rule reports “not enough data” and "
                  "never fires. Empty: the metric's default (100 input rows for drift, 50 "
                  "labelled predictions for quality, none for traffic metrics).")
    job_schedule = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Retraining job",
        help_text="A job schedule of the team (Batch jobs) started once when the rule starts "
                  "firing, e.g. to score a fresh sample.")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, schedules: Any = None, **kwargs: Any) -> None:
        """``schedules``: the job schedules a rule of this deployment may start (its team's)."""
        super().__init__(*args, **kwargs)
        field = cast(forms.TypedChoiceField, self.fields["job_schedule"])
        field.choices = [("", "(none)")] + [
            (s.pk, f"{s.name} ({s.model.name}, {s.cron or 'no cron'})")
            for s in (schedules if schedules is not None else [])]

    def clean_emails(self) -> list[str]:
        return [e.strip() for e in self.cleaned_data.get("emails", "").split(",") if e.strip()]

    @classmethod
    def initial_from(cls, rule: AlertRule) -> dict[str, Any]:
        return {"name": rule.name, "metric": rule.metric, "comparison": rule.comparison,
                "threshold": rule.threshold, "window_minutes": rule.window_minutes,
                "webhook_url": rule.webhook_url, "emails": ", ".join(rule.emails or []),
                "retrain_webhook_url": rule.retrain_webhook_url, "enabled": rule.enabled,
                "min_samples": rule.min_samples, "job_schedule": rule.job_schedule_id}


SILENCE_CHOICES = [("1", "1 hour"), ("4", "4 hours"), ("24", "1 day"), ("168", "1 week")]


class SilenceForm(forms.Form):
    hours = forms.TypedChoiceField(choices=SILENCE_CHOICES, coerce=int, label="Silence for")


class SamplingForm(forms.Form):
    sampling_rate = forms.FloatField(
        help_text="Share of prediction records kept, 0-1 (0.1 keeps one in ten; charts and "
                  "counts are weighted back up).")


class DriftThresholdsForm(forms.Form):
    psi_threshold = forms.FloatField(label="PSI threshold",
                                     help_text="PSI counts as drift above this "
                                               "(default 0.2).")
    p_value_threshold = forms.FloatField(label="p-value threshold",
                                         help_text="A KS / chi-squared p-value counts as drift "
                                                   "below this (default 0.01). Which tests "
                                                   "decide is the platform's drift rule "
                                                   "(docs/monitoring.md).")
    task = forms.ChoiceField(choices=TaskType.choices, label="Quality metrics",
                             help_text="Which ground-truth metrics to compute.")
