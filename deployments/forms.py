from __future__ import annotations

from typing import Any, cast

from django import forms

from compute.models import ExecutionTarget
from teams.models import Team

from .models import STRATEGIES


class DeploymentCreateForm(forms.Form):
    name = forms.CharField(max_length=50, help_text="Lowercase letters, digits and hyphens; "
                                                    "part of the endpoint URL.")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    model = forms.CharField(max_length=100, help_text="Registered model name.")
    version = forms.IntegerField(required=False, help_text="Pin a version …")
    alias = forms.CharField(required=False, help_text="… or follow an alias, e.g. production.")
    replicas = forms.IntegerField(initial=1)
    cpu = forms.DecimalField(initial=1, max_digits=7, decimal_places=2, label="CPU per replica")
    memory_mb = forms.IntegerField(initial=1024, label="Memory per replica (MB)")
    strategy = forms.ChoiceField(choices=[(s, s.replace("_", "/")) for s in STRATEGIES],
                                 initial="rolling")
    canary_steps = forms.CharField(
        required=False, initial="10,50,100", label="Canary steps (% of traffic)",
        help_text="Canary only: increasing percentages ending at 100, e.g. 10,50,100.")
    canary_interval_s = forms.IntegerField(
        required=False, initial=60, min_value=0, max_value=86400,
        label="Seconds per canary step",
        help_text="Canary only: how long each step runs before its error rate and p95 are "
                  "compared with the old revision's.")

    linear_step_percent = forms.IntegerField(
        required=False, initial=25, min_value=1, max_value=99, label="Linear step (% of traffic)",
        help_text="Linear only: the share of traffic each step adds, e.g. 25 for 25, 50, 75 %.")
    linear_interval_s = forms.IntegerField(
        required=False, initial=60, min_value=0, max_value=86400,
        label="Seconds per linear step", help_text="Linear only: how long each step lasts.")

    target = forms.ModelChoiceField(
        queryset=ExecutionTarget.objects.none(), to_field_name="name", required=False,
        label="Execution target", empty_label="(the default target)",
        help_text="Where it runs: one Docker host, a Swarm or a Kubernetes namespace.")

    def __init__(self, *args, teams=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        team = cast(forms.ModelChoiceField, self.fields["team"])
        team.queryset = teams if teams is not None else Team.objects.none()
        target = cast(forms.ModelChoiceField, self.fields["target"])
        target.queryset = ExecutionTarget.objects.enabled().order_by("name")

    def clean_canary_steps(self) -> list[int] | None:
        raw = self.cleaned_data["canary_steps"].replace(" ", "")
        if not raw:
            return None
        try:
            return [int(part) for part in raw.split(",") if part]
        except ValueError:
            raise forms.ValidationError("Give whole percentages separated by commas, "
                                        "e.g. 10,50,100.") from None

    def strategy_spec(self) -> dict[str, Any]:
        """The ``strategy`` object for ``services.create_deployment`` (which validates it)."""
        data = self.cleaned_data
        spec: dict[str, Any] = {"type": data["strategy"]}
        if data["strategy"] == "canary":
            if data.get("canary_steps"):
                spec["steps"] = data["canary_steps"]
            if data.get("canary_interval_s") is not None:
                spec["interval_s"] = data["canary_interval_s"]
        if data["strategy"] == "linear":
            if data.get("linear_step_percent") is not None:
                spec["step_percent"] = data["linear_step_percent"]
            if data.get("linear_interval_s") is not None:
                spec["interval_s"] = data["linear_interval_s"]
        return spec
