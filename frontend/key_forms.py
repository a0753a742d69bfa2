"""Forms of the team's consumer keys page. They shape the input; ``deployments.consumer_keys``
checks it (team deployments, rate and burst bounds, expiry) and names the field it refuses."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django import forms
from django.utils import timezone

from deployments.models import ConsumerKey, Deployment


class ConsumerKeyLimitsForm(forms.Form):
    """What can change on a key: the deployments it calls and its rate limit."""

    deployments = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, help_text="The team's deployments it may call.")
    rate_per_s = forms.FloatField(required=False, min_value=0.001, label="Rate (requests/s)",
                                  help_text="Sustained requests per second; empty: no limit.")
    burst = forms.IntegerField(required=False, min_value=1, label="Burst (requests)",
                               help_text="Requests allowed at once above the rate; empty: a "
                                         "second's worth.")

    def __init__(self, *args: Any, team_deployments: list[Deployment],
                 key: ConsumerKey | None = None, **kwargs: Any) -> None:
        if key is not None:
            kwargs.setdefault("initial", {
                "deployments": [d.name for d in key.deployments.all()],
                "rate_per_s": key.rate_per_s, "burst": key.burst})
        super().__init__(*args, **kwargs)
        field = self.fields["deployments"]
        assert isinstance(field, forms.MultipleChoiceField)  # declared above
        field.choices = [(d.name, d.name) for d in team_deployments]

    def limits(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"deployments": data["deployments"], "rate_per_s": data.get("rate_per_s"),
                "burst": data.get("burst")}


class ConsumerKeyCreateForm(ConsumerKeyLimitsForm):
    name = forms.CharField(max_length=50, help_text="The calling service, e.g. search-api "
                                                    "(lowercase letters, digits, hyphens).")
    expires_at = forms.DateTimeField(
        required=False, label="Expires (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: never.")
    field_order = ["name", "deployments", "rate_per_s", "burst", "expires_at"]

    def expiry(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        return value
