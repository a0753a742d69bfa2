"""Portal forms for deployments. They only shape what the user typed into the arguments the
service verbs take (``services.create_deployment``, ``services.update_deployment``); every rule
(ranges, strategies, quotas, roles) is checked there, once, for the API and the portal alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django import forms

from compute.models import ExecutionTarget
from registry.models import ModelAlias, ModelVersion, VersionStatus
from teams.models import Team

from .models import STRATEGIES, Deployment

STRATEGY_LABELS = {"rolling": "rolling (one replica at a time)",
                   "blue_green": "blue/green (switch at once)",
                   "canary": "canary (traffic in judged steps)",
                   "linear": "linear (traffic in equal steps)",
                   "shadow": "shadow (mirror requests, answer from the old revision)"}


class SpecFields(forms.Form):
    """Replicas, resources and the rollout strategy: what a deployment asks for, shared by the
    create and the edit forms."""

    replicas = forms.IntegerField(
        initial=1, help_text="With autoscaling, the count a new deployment starts with; the "
                             "scaler moves it from then on.")
    cpu = forms.DecimalField(initial=1, max_digits=7, decimal_places=2, label="CPU per replica")
    memory_mb = forms.IntegerField(initial=1024, label="Memory per replica (MB)")
    gpus = forms.IntegerField(initial=0, required=False, label="GPUs per replica")
    strategy = forms.ChoiceField(choices=[(s, STRATEGY_LABELS.get(s, s)) for s in STRATEGIES],
                                 initial="rolling")
    canary_steps = forms.CharField(
        required=False, initial="10,50,100", label="Canary steps (% of traffic)",
        help_text="Canary only: increasing percentages, e.g. 20 (then 100) or 10,50,100.")
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
    shadow_percent = forms.IntegerField(
        required=False, initial=100, min_value=1, max_value=100,
        label="Shadow share (% of requests mirrored)",
        help_text="Shadow only: the old revision keeps answering every caller.")

    def clean_canary_steps(self) -> list[int] | None:
        raw = self.cleaned_data["canary_steps"].replace(" ", "")
        if not raw:
            return None
        try:
            steps = [int(part) for part in raw.split(",") if part]
        except ValueError:
            raise forms.ValidationError("Give whole percentages separated by commas, "
                                        "e.g. 10,50,100.") from None
        if steps and steps[-1] != 100 and all(s < 100 for s in steps):
            steps.append(100)  # "20" means 20 %, then everything
        return steps

    def resources(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"cpu": float(data["cpu"]), "memory_mb": data["memory_mb"],
                "gpus": data.get("gpus") or 0}

    def strategy_spec(self) -> dict[str, Any]:
        """The ``strategy`` object for the service verbs (which validate it)."""
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
        if data["strategy"] == "shadow" and data.get("shadow_percent") is not None:
            spec["percent"] = data["shadow_percent"]
        return spec

    def add_service_error(self, field: str | None, message: str,
                          extra: dict[str, Any] | None = None) -> None:
        """A service's refusal: at the top of the form, and next to the field it names (the
        quota's numbers next to CPU, memory or GPUs)."""
        self.add_error(None, message)
        names = {"resources": None, "strategy": "strategy", "replicas": "replicas",
                 "version": "runs", "alias": "runs", "model": "runs"}
        target = field if field in self.fields else names.get(field or "")
        if field == "resources":
            target = next((k for k in ("cpu", "memory_mb", "gpus")
                           if f"resources.{k}" in message), "cpu")
        if target in self.fields:
            self.add_error(target, message)
        for name in (extra or {}).get("resources", {}):
            key = {"cpu": "cpu", "memory_mb": "memory_mb", "gpus": "gpus"}.get(name)
            if key and key in self.fields:
                numbers = extra["resources"][name]  # type: ignore[index]
                self.add_error(key, f"Over quota: {numbers['needs']:g} more needed, "
                                    f"{numbers['free']:g} of {numbers['limit']:g} free.")


METRIC_LABELS = [("concurrency", "requests in flight per replica"),
                 ("rps", "requests per second per replica"),
                 ("cpu", "CPU % per replica (100 = one core)")]


class AutoscalingForm(forms.Form):
    """The "Autoscaling" fieldset of the create and edit forms (prefix ``autoscaling``), off
    by default. It only shapes the ``autoscaling`` object: ``Autoscaling.parse`` (in the
    service verbs) checks it, for the API, the CLI and the portal alike."""

    enabled = forms.BooleanField(
        required=False, label="Autoscale the replica count",
        help_text="The platform adds replicas under load and removes them when it passes, "
                  "within the bounds below and the team's quota. Changing this never makes a "
                  "new revision.")
    min_replicas = forms.IntegerField(required=False, initial=1, min_value=1,
                                      label="Fewest replicas")
    max_replicas = forms.IntegerField(required=False, initial=4, min_value=1,
                                      label="Most replicas")
    metric = forms.ChoiceField(choices=METRIC_LABELS, initial="concurrency", required=False,
                               label="Scale on")
    target = forms.FloatField(
        required=False, min_value=0, label="Target per replica",
        help_text="Blank: 4 requests in flight, 50 requests/s or 70 % CPU.")
    scale_down_delay_s = forms.IntegerField(
        required=False, initial=300, min_value=0, label="Scale-down delay (s)",
        help_text="Fewer replicas only once the load has stayed lower this long.")
    idle_to_zero_after_s = forms.IntegerField(
        required=False, min_value=1, label="Scale to zero after (s without a request)",
        help_text="Blank: never. Idle, it runs no replica and holds none of the quota; the next "
                  "request wakes it (the gateway holds it while a replica starts).")

    def __init__(self, *args: Any, deployment: Deployment | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "autoscaling")
        if deployment is not None:
            kwargs.setdefault("auto_id", "edit_%s")
            if deployment.autoscaling:
                a = deployment.autoscaling
                kwargs["initial"] = {"enabled": True, **{k: a.get(k) for k in (
                    "min_replicas", "max_replicas", "metric", "target", "scale_down_delay_s",
                    "idle_to_zero_after_s")}}
        super().__init__(*args, **kwargs)

    def spec(self) -> dict[str, Any] | None:
        """The ``autoscaling`` object (None: a fixed count); blanks take the defaults."""
        data = self.cleaned_data
        if not data.get("enabled"):
            return None
        out: dict[str, Any] = {"metric": data.get("metric") or "concurrency"}
        for key in ("min_replicas", "max_replicas", "target", "scale_down_delay_s",
                    "idle_to_zero_after_s"):
            if data.get(key) is not None:
                out[key] = data[key]
        return out

    def add_service_error(self, message: str) -> None:
        """``Autoscaling.parse``'s refusal ("autoscaling.max_replicas must …"): on top of the
        fieldset and next to the field it names."""
        self.add_error(None, message)
        named = next((k for k in self.fields if f"autoscaling.{k}" in message), None)
        if named and named != "enabled":
            self.add_error(named, message)


class DeploymentCreateForm(SpecFields):
    name = forms.CharField(max_length=50, help_text="Lowercase letters, digits and hyphens; "
                                                    "part of the endpoint URL.")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    model = forms.CharField(max_length=100, help_text="Registered model name.")
    version = forms.IntegerField(required=False, help_text="Pin a version …")
    alias = forms.CharField(required=False, help_text="… or follow an alias, e.g. production.")
    target = forms.ModelChoiceField(
        queryset=ExecutionTarget.objects.none(), to_field_name="name", required=False,
        label="Execution target", empty_label="(the default target)",
        help_text="Where it runs: one Docker host, a Swarm or a Kubernetes namespace.")

    field_order = ["name", "team", "model", "version", "alias", "replicas", "cpu", "memory_mb",
                   "gpus", "strategy"]

    def __init__(self, *args: Any, teams: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        team = cast(forms.ModelChoiceField, self.fields["team"])
        team.queryset = teams if teams is not None else Team.objects.none()
        target = cast(forms.ModelChoiceField, self.fields["target"])
        target.queryset = ExecutionTarget.objects.enabled().order_by("name")


def runs_choices(d: Deployment) -> list[tuple[str, str]]:
    """What a deployment of ``d.model`` can run: its ready versions, newest first, and its
    aliases (following one rolls out wherever it moves)."""
    versions = ModelVersion.objects.filter(model=d.model_id, status=VersionStatus.READY) \
        .order_by("-version").values_list("version", flat=True)[:200]
    aliases = ModelAlias.objects.filter(model=d.model_id).select_related("version") \
        .order_by("name")
    return ([(f"alias:{a.name}", f"follow alias {a.name} (now v{a.version.version})")
             for a in aliases]
            + [(f"version:{n}", f"version {n}") for n in versions])


def runs_value(d: Deployment) -> str:
    if d.alias:
        return f"alias:{d.alias}"
    return f"version:{d.version.version}" if d.version else ""


class DeploymentEditForm(SpecFields):
    """Change a deployment: what runs, how many replicas, their resources and the strategy the
    change rolls out with (``services.update_deployment``, as the API's PATCH)."""

    runs = forms.ChoiceField(label="Version or alias to run",
                             help_text="A pinned version stays; an alias rolls out wherever it "
                                       "moves.")

    field_order = ["runs", "replicas", "cpu", "memory_mb", "gpus", "strategy"]

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "edit_%s")
        kwargs["initial"] = initial_of(deployment)
        super().__init__(*args, **kwargs)
        runs = cast(forms.ChoiceField, self.fields["runs"])
        runs.choices = runs_choices(deployment)

    def spec_args(self) -> dict[str, Any]:
        """Keyword arguments for ``services.update_deployment``."""
        kind, _, value = self.cleaned_data["runs"].partition(":")
        what = {"version": int(value), "alias": None} if kind == "version" \
            else {"version": None, "alias": value}
        return {**what, "replicas": self.cleaned_data["replicas"],
                "resources": self.resources(), "strategy": self.strategy_spec()}


def initial_of(d: Deployment) -> dict[str, Any]:
    """The edit form as the deployment is now."""
    strategy = d.strategy or {}
    initial: dict[str, Any] = {
        "runs": runs_value(d), "replicas": d.replicas, "cpu": Decimal(d.cpu),
        "memory_mb": d.memory_mb, "gpus": d.gpus, "strategy": d.strategy_type}
    if strategy.get("steps"):
        initial["canary_steps"] = ",".join(str(s) for s in strategy["steps"])
    if d.strategy_type == "canary" and strategy.get("interval_s") is not None:
        initial["canary_interval_s"] = int(strategy["interval_s"])
    if d.strategy_type == "linear":
        initial["linear_step_percent"] = strategy.get("step_percent", 25)
        initial["linear_interval_s"] = int(strategy.get("interval_s", 60))
    if d.strategy_type == "shadow":
        initial["shadow_percent"] = strategy.get("percent", 100)
    return initial


class DeployVersionForm(forms.Form):
    """Deploy one version to an existing deployment with a chosen strategy."""

    strategy = forms.ChoiceField(choices=[(s, STRATEGY_LABELS.get(s, s)) for s in STRATEGIES],
                                 initial="canary")
    canary_percent = forms.IntegerField(
        required=False, initial=10, min_value=1, max_value=99, label="Canary share (%)",
        help_text="Canary only: the new version gets this share of traffic for the first step, "
                  "then 100 %.")
    canary_interval_s = forms.IntegerField(
        required=False, initial=60, min_value=0, max_value=86400,
        label="Seconds before the canary is judged")

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", deployment.name)
        super().__init__(*args, **kwargs)

    def strategy_spec(self) -> dict[str, Any]:
        data = self.cleaned_data
        spec: dict[str, Any] = {"type": data["strategy"]}
        if data["strategy"] == "canary":
            spec["steps"] = [data.get("canary_percent") or 10, 100]
            if data.get("canary_interval_s") is not None:
                spec["interval_s"] = data["canary_interval_s"]
        return spec
